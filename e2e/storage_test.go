package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
)

// Scenario 1.
func TestSecretStoredEncrypted(t *testing.T) {
	t.Parallel()
	c := cluster.Start(t, cluster.Options{})
	a := c.APIServers[0]
	kms := a.Plugin.KMS(t.Context())

	value := secretValue("db-password")
	if err := tryCreateSecret(context.Background(), a, "db-password", value); err != nil {
		t.Fatal(err)
	}

	stored := assertStoredEncrypted(t, c, "db-password", value)
	t.Logf("etcd value starts %q", stored.Raw[:len(cluster.StoragePrefix)+12])
	if want := statusKeyID(t, kms); stored.Object.KeyID != want {
		t.Errorf("stored key_id %q, plugin Status reports %q", stored.Object.KeyID, want)
	}

	got, err := readSecret(context.Background(), a, "db-password")
	if err != nil {
		t.Fatal(err)
	}
	if got != value {
		t.Fatalf("read %q, wrote %q", got, value)
	}
}

// Scenario 2.
func TestAPIServerRestart(t *testing.T) {
	t.Parallel()
	c := cluster.Start(t, cluster.Options{})
	a := c.APIServers[0]
	secrets := createSecrets(t, a, "before-restart", 20)
	for name, value := range secrets {
		assertStoredEncrypted(t, c, name, value)
	}

	decrypts := func() float64 {
		return pluginMetric(t, a.Plugin, "vault_kms_plugin_requests_total", map[string]string{"method": "Decrypt", "code": "OK"})
	}
	before := decrypts()
	a.Restart()
	a.WaitReady(2 * time.Minute)

	assertReads(t, a, secrets)
	// The restarted API server had no DEKs cached: it must have asked the
	// plugin to decrypt the stored DEK source.
	if after := decrypts(); after <= before {
		t.Errorf("plugin answered %v Decrypts after the restart, %v before: the reads did not go through the plugin", after, before)
	}
}

// Scenario 9.
func TestThreeAPIServers(t *testing.T) {
	t.Parallel()
	c := cluster.Start(t, cluster.Options{APIServers: 3})

	written := make([]map[string]string, len(c.APIServers))
	for i, a := range c.APIServers {
		written[i] = createSecrets(t, a, a.Name, 5)
	}

	// Each API server wraps its own DEK source with its own plugin: a read
	// through another server has to decrypt it with that server's plugin.
	sources := map[string]string{}
	for i, a := range c.APIServers {
		for name, value := range written[i] {
			stored := assertStoredEncrypted(t, c, name, value)
			src := string(stored.Object.EncryptedDEKSource)
			if other, ok := sources[src]; ok && other != a.Name {
				t.Errorf("%s and %s stored objects under the same encrypted DEK source", other, a.Name)
			}
			sources[src] = a.Name
		}
	}

	for _, reader := range c.APIServers {
		for i, writer := range c.APIServers {
			if reader == writer {
				continue
			}
			if errs := checkReads(reader, written[i]); len(errs) > 0 {
				for _, err := range errs {
					t.Errorf("written through %s: %v", writer.Name, err)
				}
			}
		}
	}
}
