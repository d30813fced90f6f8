package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	kmsservice "k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
)

// Scenario 8.
func TestTransitKeyRotation(t *testing.T) {
	t.Parallel()
	c := cluster.Start(t, cluster.Options{APIServers: 3})
	kms := make([]kmsservice.Service, len(c.APIServers))
	for i, a := range c.APIServers {
		kms[i] = a.Plugin.KMS(t.Context())
	}
	oldKeyID := statusKeyID(t, kms[0])
	if !strings.Contains(oldKeyID, ":v1:") {
		t.Fatalf("key_id before rotation is %q, want version 1", oldKeyID)
	}

	old := map[string]string{}
	for _, a := range c.APIServers {
		for name, value := range createSecrets(t, a, "old-"+a.Name, 3) {
			old[name] = value
			if got := assertStoredEncrypted(t, c, name, value).Object.KeyID; got != oldKeyID {
				t.Fatalf("secret %s stored under key_id %q, want %q", name, got, oldKeyID)
			}
		}
	}

	version := c.Vault.RotateKey(c.TransitMount, c.TransitKey)
	rotated := time.Now()
	t.Logf("rotated transit key %s/%s to version %d", c.TransitMount, c.TransitKey, version)

	// Every plugin reports the new version's key_id.
	var newKeyID string
	for i, k := range kms {
		var id string
		ok := waitFor(30*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := k.Status(ctx)
			if err == nil {
				id = st.KeyID
			}
			return err == nil && st.Healthz == "ok" && strings.Contains(id, fmt.Sprintf(":v%d:", version))
		})
		if !ok {
			t.Fatalf("plugin of %s still reports key_id %q 30s after the rotation", c.APIServers[i].Name, id)
		}
		if newKeyID == "" {
			newKeyID = id
		} else if id != newKeyID {
			t.Fatalf("plugins disagree on the new key_id: %q and %q", newKeyID, id)
		}
	}
	if !keyIDPattern.MatchString(newKeyID) || newKeyID == oldKeyID {
		t.Fatalf("new key_id %q is not a new vault-transit key_id (old %q)", newKeyID, oldKeyID)
	}

	// Every API server has seen it: its metrics carry the key_id's hash.
	// The API servers poll Status on their own schedule (about every 20s
	// while /readyz is being asked, every minute otherwise).
	for _, a := range c.APIServers {
		ok := waitFor(3*time.Minute, func() bool {
			_, _, _ = a.Readyz(context.Background())
			seen, err := a.HasSeenKeyID(context.Background(), newKeyID)
			return err == nil && seen
		})
		if !ok {
			t.Fatalf("%s metrics do not show key_id hash %s within 3m of the rotation", a.Name, cluster.KeyIDHash(newKeyID))
		}
		t.Logf("%s reports the new key_id %.0fs after the rotation", a.Name, time.Since(rotated).Seconds())
	}

	// New writes carry the new key_id. The API server switches its DEK in
	// the same health check that saw the new key_id; allow it to finish.
	for _, a := range c.APIServers {
		n := 0
		ok := waitFor(30*time.Second, func() bool {
			name := fmt.Sprintf("switch-%s-%d", a.Name, n)
			n++
			value := secretValue(name)
			if err := tryCreateSecret(context.Background(), a, name, value); err != nil {
				t.Fatal(err)
			}
			return assertStoredEncrypted(t, c, name, value).Object.KeyID == newKeyID
		})
		if !ok {
			t.Fatalf("%s still writes under the old key_id 30s after reporting the new one", a.Name)
		}
		for name, value := range createSecrets(t, a, "new-"+a.Name, 3) {
			if got := assertStoredEncrypted(t, c, name, value).Object.KeyID; got != newKeyID {
				t.Errorf("secret %s written through %s after the rotation carries key_id %q, want %q", name, a.Name, got, newKeyID)
			}
		}
	}

	// Old objects still read, through every API server.
	for _, a := range c.APIServers {
		assertReads(t, a, old)
	}
	// Also with a cold DEK cache: the plugin decrypts version-1 DEK sources.
	a := c.APIServers[0]
	a.Restart()
	a.WaitReady(2 * time.Minute)
	assertReads(t, a, old)
	for name, value := range old {
		if got := assertStoredEncrypted(t, c, name, value).Object.KeyID; got != oldKeyID {
			t.Errorf("secret %s written before the rotation now carries key_id %q; it was never rewritten", name, got)
		}
	}
}
