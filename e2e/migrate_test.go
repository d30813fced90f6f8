package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// TestMigrate: after a rotation, kmsctl migrate --engine=direct rewrites
// every Secret under the new transit version, proves it with its own etcd
// scan, and every Secret still reads back its value.
func TestMigrate(t *testing.T) {
	t.Parallel()
	c := cluster.Start(t, cluster.Options{APIServers: 1})
	a := c.APIServers[0]
	kms := a.Plugin.KMS(t.Context())

	const n = 300
	secrets := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				name := fmt.Sprintf("migrate-%03d", i)
				value := secretValue(name)
				if err := tryCreateSecret(context.Background(), a, name, value); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				secrets[name] = value
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	version := c.Vault.RotateKey(c.TransitMount, c.TransitKey)
	rotated := time.Now()
	var newKeyID string
	if !waitFor(30*time.Second, func() bool {
		newKeyID = statusKeyID(t, kms)
		return strings.Contains(newKeyID, fmt.Sprintf(":v%d:", version))
	}) {
		t.Fatalf("plugin still reports key_id %q 30s after rotating to version %d", newKeyID, version)
	}
	if !waitFor(3*time.Minute, func() bool {
		_, _, _ = a.Readyz(context.Background())
		seen, err := a.HasSeenKeyID(context.Background(), newKeyID)
		return err == nil && seen
	}) {
		t.Fatalf("%s has not seen key_id %s within 3m of the rotation", a.Name, newKeyID)
	}
	t.Logf("%s reports the new key_id %.0fs after the rotation", a.Name, time.Since(rotated).Seconds())

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := a.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := cluster.Kmsctl(t, "migrate", "--engine=direct", "--transit-version", fmt.Sprint(version),
		"--kubeconfig", kubeconfig, "--etcd-endpoints", c.Etcd.Endpoint, "--resources", "secrets", "-o", "json")
	t.Logf("kmsctl migrate stderr:\n%s", stderr)
	if err != nil {
		t.Fatalf("kmsctl migrate: %v\nstdout:\n%s", err, stdout)
	}
	var rep struct {
		Before []struct{ Total, Stale int }
		After  []struct{ Total, Stale int }
		Result struct {
			Total, Rewritten, Conflicts, NotFound int
			Failed                                []any
			PerSecond                             float64 `json:"objectsPerSecond"`
		}
		RemainingCount int
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("kmsctl migrate -o json: %v\n%s", err, stdout)
	}
	t.Logf("kmsctl migrate --engine=direct: %d of %d stale Secrets rewritten at %.0f objects/s", rep.Result.Rewritten, rep.Result.Total, rep.Result.PerSecond)
	if len(rep.Before) != 1 || rep.Before[0].Stale < n || rep.Result.Rewritten+rep.Result.Conflicts+rep.Result.NotFound != rep.Result.Total ||
		len(rep.Result.Failed) != 0 || rep.RemainingCount != 0 || rep.After[0].Stale != 0 {
		t.Errorf("migrate report: %s", stdout)
	}

	// Our own scan agrees: no Secret under an older transit version.
	r, err := scan.Scan(context.Background(), scan.NewEtcdReader(c.Etcd.Client), []string{"secrets"}, scan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range r.Resources[0].Groups {
		if g.Class != scan.ClassKMSv2 || g.TransitVersion != version {
			t.Errorf("after migrate, %d secrets stored as %s transit version %d (want kms-v2 v%d): %v", g.Count, g.Class, g.TransitVersion, version, g.Objects)
		}
	}
	assertReads(t, a, secrets)
}
