package e2e

import (
	"context"
	"testing"
	"time"

	kmsservice "k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
)

const (
	loginsMetric = "vault_kms_plugin_vault_logins_total"
	okOutcome    = "ok"
)

func logins(t *testing.T, p *cluster.Plugin) (ok, failed float64) {
	t.Helper()
	all := pluginMetric(t, p, loginsMetric, nil)
	ok = pluginMetric(t, p, loginsMetric, map[string]string{"outcome": okOutcome})
	return ok, all - ok
}

// watchHealth polls the API server's KMS check and the plugin's Status
// until stop is closed, and returns every unhealthy observation.
func watchHealth(a *cluster.APIServer, kms kmsservice.Service, stop <-chan struct{}) <-chan []string {
	out := make(chan []string, 1)
	go func() {
		var bad []string
		for {
			select {
			case <-stop:
				out <- bad
				return
			case <-time.After(2 * time.Second):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ok, body, err := a.KMSHealthy(ctx)
			if err != nil || !ok {
				bad = append(bad, "API server /readyz: "+firstLine(body, err))
			}
			st, err := kms.Status(ctx)
			cancel()
			if err != nil || st.Healthz != "ok" {
				msg := "plugin Status: "
				if err != nil {
					msg += err.Error()
				} else {
					msg += st.Healthz
				}
				bad = append(bad, msg)
			}
		}
	}()
	return out
}

// Scenario 5.
func TestShortLivedTokens(t *testing.T) {
	t.Parallel()
	const (
		ttl      = 4 * time.Second
		maxTTL   = 10 * time.Second
		duration = 2 * time.Minute
	)
	c := cluster.Start(t, cluster.Options{TokenTTL: ttl, TokenMaxTTL: maxTTL})
	a := c.APIServers[0]
	kms := a.Plugin.KMS(t.Context())
	okBefore, _ := logins(t, a.Plugin)

	stop := make(chan struct{})
	health := watchHealth(a, kms, stop)
	l := startLoad("steady", 200*time.Millisecond, []*cluster.APIServer{a}, []kmsservice.Service{kms})
	from := time.Now()
	time.Sleep(duration)
	l.Stop()
	close(stop)
	unhealthy := <-health

	if n := l.report(t, from, time.Now()); n > 0 {
		t.Errorf("%d calls failed over %s of tokens living at most %s", n, duration, maxTTL)
	}
	for _, msg := range unhealthy {
		t.Errorf("unhealthy during the run: %s", msg)
	}
	okAfter, failed := logins(t, a.Plugin)
	t.Logf("logins during the run: %.0f ok, %.0f failed in total", okAfter-okBefore, failed)
	// Each token dies after maxTTL; the plugin must have logged in again
	// before each death.
	if want := float64(duration/maxTTL) - 1; okAfter-okBefore < want {
		t.Errorf("the plugin logged in %.0f times in %s with a max TTL of %s; want at least %.0f", okAfter-okBefore, duration, maxTTL, want)
	}
	if failed > 0 {
		t.Errorf("%.0f Vault logins failed", failed)
	}
	for name, value := range l.Written() {
		assertStoredEncrypted(t, c, name, value)
		break
	}
}

// Scenario 6.
func TestSecretIDRotatedOnDisk(t *testing.T) {
	t.Parallel()
	// Short tokens, so that logins keep happening after the rotation and
	// every one of them must use the new secret ID.
	c := cluster.Start(t, cluster.Options{TokenTTL: 5 * time.Second, TokenMaxTTL: 10 * time.Second})
	a := c.APIServers[0]
	p := a.Plugin
	kms := p.KMS(t.Context())

	stop := make(chan struct{})
	health := watchHealth(a, kms, stop)
	l := startLoad("rotation", 200*time.Millisecond, []*cluster.APIServer{a}, []kmsservice.Service{kms})
	from := time.Now()
	time.Sleep(3 * time.Second)

	oldSecretID := readFile(t, p.Config.SecretIDPath)
	newSecretID := c.Vault.NewSecretID(c.Role)
	p.NeverLogs(newSecretID)
	okBefore, _ := logins(t, p)
	offset := len(p.Proc.Log())
	if err := cluster.WriteFileAtomic(p.Config.SecretIDPath, []byte(newSecretID+"\n")); err != nil {
		t.Fatal(err)
	}
	// The plugin notices the file changed and logs in with it right away.
	line, ok := waitLogLine(p.Proc, offset, 10*time.Second, "Credential file changed")
	if !ok {
		t.Fatalf("the plugin did not notice the rotated secret-id file within 10s")
	}
	t.Logf("plugin: %s", line)
	if !waitFor(10*time.Second, func() bool { ok, _ := logins(t, p); return ok > okBefore }) {
		t.Fatalf("no successful login within 10s of rotating the secret ID")
	}

	// The old secret ID is revoked: from now on only the new one works.
	c.Vault.DestroySecretID(c.Role, oldSecretID)
	revoked := time.Now()
	okRevoked, _ := logins(t, p)
	time.Sleep(30 * time.Second)
	l.Stop()
	close(stop)
	unhealthy := <-health

	if n := l.report(t, from, time.Now()); n > 0 {
		t.Errorf("%d calls failed across the secret-ID rotation", n)
	}
	for _, msg := range unhealthy {
		t.Errorf("unhealthy during the run: %s", msg)
	}
	okEnd, failed := logins(t, p)
	t.Logf("logins since the old secret ID was destroyed %.0fs ago: %.0f", time.Since(revoked).Seconds(), okEnd-okRevoked)
	if okEnd-okRevoked < 2 {
		t.Errorf("only %.0f logins in the 30s after the old secret ID was destroyed; the tokens live 10s", okEnd-okRevoked)
	}
	if failed > 0 {
		t.Errorf("%.0f Vault logins failed", failed)
	}
}
