package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// tlsFront serves Vault over HTTPS with a certificate from ca, as a
// production Vault would be reached.
func tlsFront(t *testing.T, vaultAddr string, ca *cluster.CA) string {
	t.Helper()
	target, err := url.Parse(vaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	kp := ca.IssueServing(t, "vault-tls")
	cert, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	// The bad-CA case makes the plugin reject this certificate; that is
	// the point, not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// Scenario 10.
func TestBadConfiguration(t *testing.T) {
	t.Parallel()
	c := cluster.Start(t, cluster.Options{})
	a := c.APIServers[0]
	p := a.Plugin
	good := p.Config

	dir := t.TempDir()
	vaultCA := cluster.NewCA(t, dir, "vault-ca")
	otherCA := cluster.NewCA(t, dir, "other-ca")
	tlsAddr := tlsFront(t, c.Vault.Addr, vaultCA)
	goodTLS := good
	goodTLS.VaultAddrs, goodTLS.CAFile = []string{tlsAddr}, vaultCA.CertPath

	other := c.Vault.CreateAppRole("other", "other", vaulttest.Policy(c.TransitMount, "other-key"), time.Hour, time.Hour)
	unreachable := fmt.Sprintf("http://127.0.0.1:%d", vaulttest.FreePort(t))

	stored := createSecrets(t, a, "stored", 5)

	cases := []struct {
		name string
		bad  func(cfg cluster.PluginConfig) cluster.PluginConfig
		// says: what the plugin's log line must contain, all on one line.
		says  []string
		fixed cluster.PluginConfig
	}{
		{
			name: "wrong transit key",
			bad: func(cfg cluster.PluginConfig) cluster.PluginConfig {
				cfg.TransitKey = "no-such-key"
				return cfg
			},
			says:  []string{"transit/no-such-key", "403", "permission denied"},
			fixed: good,
		},
		{
			name: "wrong role",
			bad: func(cfg cluster.PluginConfig) cluster.PluginConfig {
				cfg.RoleID = other.RoleID
				return cfg
			},
			says:  []string{"approle login", "400", "invalid"},
			fixed: good,
		},
		{
			name: "unreachable Vault",
			bad: func(cfg cluster.PluginConfig) cluster.PluginConfig {
				cfg.VaultAddrs = []string{unreachable}
				return cfg
			},
			says:  []string{unreachable, "connection refused"},
			fixed: good,
		},
		{
			name: "bad CA",
			bad: func(cfg cluster.PluginConfig) cluster.PluginConfig {
				cfg.VaultAddrs, cfg.CAFile = []string{tlsAddr}, otherCA.CertPath
				return cfg
			},
			says:  []string{tlsAddr, "certificate signed by unknown authority"},
			fixed: goodTLS,
		},
	}
	kmsClient := p.KMS(t.Context())
	apiPID := a.Proc.PID()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			step := time.Now()
			lap := func(what string) { t.Logf("%5.1fs %s", time.Since(step).Seconds(), what); step = time.Now() }
			offset := len(p.Proc.Log())
			p.Restart(tc.bad(good))

			line, ok := waitLogLine(p.Proc, offset, 20*time.Second, tc.says...)
			if !ok {
				t.Errorf("the plugin did not log one line containing all of %q within 20s; it logged:\n%s", tc.says, p.Proc.Log()[offset:])
			} else {
				t.Logf("plugin says: %s", line)
				if !strings.HasPrefix(line, "E") {
					t.Errorf("the line is not logged as an error: %s", line)
				}
			}
			if err := p.Ready(); err == nil {
				t.Errorf("the plugin's /readyz says ready with a bad configuration")
			} else {
				t.Logf("plugin /readyz: %v", err)
			}
			// The API server asks the plugin's Status at most every 20s
			// while /readyz is polled.
			body, ok := a.WaitKMS(false, 60*time.Second)
			if !ok {
				t.Fatalf("the API server's /readyz does not show the KMS failing within 60s:\n%s", body)
			}
			if code, _, _ := a.Readyz(context.Background()); code == http.StatusOK {
				t.Errorf("the API server's /readyz answers 200 with the KMS failing")
			}
			lap("API server reports the KMS failing")

			// The API server keeps writing with its current DEK for a
			// while; what it writes now must be readable after the fix.
			name := "during-" + strings.ToLower(strings.ReplaceAll(tc.name, " ", "-"))
			value := secretValue(name)
			if err := tryCreateSecret(context.Background(), a, name, value); err != nil {
				t.Logf("write while misconfigured failed: %v", err)
			} else {
				stored[name] = value
			}

			// Fix the configuration; the API server recovers by itself.
			p.Restart(tc.fixed)
			if body, ok := a.WaitKMS(true, 60*time.Second); !ok {
				t.Fatalf("the API server's /readyz does not show the KMS healthy within 60s of the fix:\n%s", body)
			}
			lap("API server reports the KMS healthy after the fix")
			if a.Proc.PID() != apiPID {
				t.Fatalf("the API server restarted")
			}
			// The fixed plugin decrypts every stored DEK source.
			for name, value := range stored {
				assertPluginDecrypts(t, kmsClient, assertStoredEncrypted(t, c, name, value))
			}
			assertReads(t, a, stored)
			name = "after-" + strings.ToLower(strings.ReplaceAll(tc.name, " ", "-"))
			value = secretValue(name)
			if err := tryCreateSecret(context.Background(), a, name, value); err != nil {
				t.Fatal(err)
			}
			assertStoredEncrypted(t, c, name, value)
			stored[name] = value
		})
	}

	// Nothing stored became unreadable: an API server with a cold DEK
	// cache reads every Secret written before, during and after.
	a.Restart()
	a.WaitReady(2 * time.Minute)
	assertReads(t, a, stored)
}
