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

// TestRotate: kmsctl rotate rotates the transit key, waits until both API
// servers report the plugin's key_id of the new version, then migrates
// (--engine=direct) every Secret to it, proves it with its own etcd scan,
// and every Secret still reads back its value through either API server.
func TestRotate(t *testing.T) {
	t.Parallel()
	c := cluster.Start(t, cluster.Options{APIServers: 2})
	a, b := c.APIServers[0], c.APIServers[1]

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
				if err := tryCreateSecret(context.Background(), c.APIServers[i%2], name, value); err != nil {
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

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := a.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stdout, stderr, err := cluster.KmsctlEnv(t, []string{"VAULT_TOKEN=" + c.Vault.RootToken}, "rotate",
		"--vault-address", c.Vault.Addr, "--vault-key-path", c.TransitMount+"/keys/"+c.TransitKey,
		"--apiservers", a.URL+","+b.URL, "--poll-interval", "2s",
		"--kubeconfig", kubeconfig, "--etcd-endpoints", c.Etcd.Endpoint, "--resources", "secrets", "-o", "json")
	t.Logf("kmsctl rotate (%.0fs) stderr:\n%s", time.Since(start).Seconds(), stderr)
	if err != nil {
		t.Fatalf("kmsctl rotate: %v\nstdout:\n%s", err, stdout)
	}
	version := 2
	if !strings.Contains(stderr, "rotated transit/keys/kubernetes: v1 -> v2") || !strings.Contains(stderr, "every API server reports v2") {
		t.Errorf("kmsctl rotate did not say it rotated to v2 and waited for every API server")
	}
	// What rotate waited for is true: both API servers have the plugin's
	// key_id of v2.
	for _, api := range c.APIServers {
		keyID := statusKeyID(t, api.Plugin.KMS(t.Context()))
		if !strings.Contains(keyID, ":v2:") {
			t.Fatalf("%s's plugin reports key_id %q after rotate, want v2", api.Name, keyID)
		}
		if seen, err := api.HasSeenKeyID(t.Context(), keyID); err != nil || !seen {
			t.Errorf("%s has not seen key_id %s although rotate said so (%v)", api.Name, keyID, err)
		}
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
		t.Fatalf("kmsctl rotate -o json: %v\n%s", err, stdout)
	}
	t.Logf("kmsctl rotate, migrating --engine=direct: %d of %d stale Secrets rewritten at %.0f objects/s", rep.Result.Rewritten, rep.Result.Total, rep.Result.PerSecond)
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
	assertReads(t, b, secrets)

	// kmsctl status: v1 is safe to retire, both API servers on v2.
	kmsctl := func(cmd string, args ...string) (string, string, error) {
		return cluster.KmsctlEnv(t, []string{"VAULT_TOKEN=" + c.Vault.RootToken}, append([]string{cmd,
			"--vault-address", c.Vault.Addr, "--vault-key-path", c.TransitMount + "/keys/" + c.TransitKey,
			"--etcd-endpoints", c.Etcd.Endpoint, "--resources", "secrets"}, args...)...)
	}
	status := func() statusReport {
		t.Helper()
		stdout, stderr, err := kmsctl("status", "--apiservers", a.URL+","+b.URL, "--kubeconfig", kubeconfig, "-o", "json")
		if err != nil {
			t.Fatalf("kmsctl status: %v\n%s%s", err, stdout, stderr)
		}
		var st statusReport
		if err := json.Unmarshal([]byte(stdout), &st); err != nil {
			t.Fatalf("kmsctl status -o json: %v\n%s", err, stdout)
		}
		return st
	}
	st := status()
	if v := st.verdicts(); v != "v1:safe-to-retire v2:current" {
		t.Errorf("kmsctl status verdicts after rotate: %s, want v1 safe to retire and v2 current", v)
	}
	for _, api := range st.APIServers {
		if api.KeyVersion != version || api.ConfigHash == "" || api.Error != "" {
			t.Errorf("kmsctl status says %s is on v%d (config %q, error %q), want v%d", api.URL, api.KeyVersion, api.ConfigHash, api.Error, version)
		}
	}

	// kmsctl retire raises min_decryption_version to 2, and after a restart
	// (no DEK cache) both API servers still read every Secret.
	stdout, stderr, err = kmsctl("retire")
	if err != nil {
		t.Fatalf("kmsctl retire: %v\n%s%s", err, stdout, stderr)
	}
	t.Logf("kmsctl retire:\n%s", stdout)
	if v := status().verdicts(); v != "v1:retired v2:current" {
		t.Errorf("kmsctl status verdicts after retire: %s, want v1 retired", v)
	}
	for _, api := range c.APIServers {
		api.Restart()
		api.WaitReady(2 * time.Minute)
		assertReads(t, api, secrets)
	}
}

// statusReport is the part of `kmsctl status -o json` the e2e checks.
type statusReport struct {
	TransitKey *struct {
		Versions []struct {
			Version int
			Verdict string
		}
	}
	APIServers []struct {
		URL        string
		KeyVersion int
		ConfigHash string
		Error      string
	}
}

// verdicts is "v1:<verdict> v2:<verdict> ...".
func (s statusReport) verdicts() string {
	if s.TransitKey == nil {
		return "no transit key section"
	}
	var out []string
	for _, v := range s.TransitKey.Versions {
		out = append(out, fmt.Sprintf("v%d:%s", v.Version, v.Verdict))
	}
	return strings.Join(out, " ")
}
