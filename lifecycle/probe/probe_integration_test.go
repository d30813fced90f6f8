//go:build integration

package probe

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// startPlugin runs the real plugin ($PLUGIN_BIN, built by `make plugin`)
// on a socket with a token of policy and returns the socket's path.
func startPlugin(t *testing.T, v *vaulttest.Server, policy string) string {
	t.Helper()
	bin := os.Getenv("PLUGIN_BIN")
	if bin == "" {
		t.Fatal("PLUGIN_BIN is not set: run `make plugin` and set it to .build/bin/vault-kms-plugin (make unit does)")
	}
	v.Must(v.Client.Sys().PutPolicy(policy, map[string]string{
		"full":       vaulttest.Policy("transit", "kubernetes"),
		"no-decrypt": `path "transit/encrypt/kubernetes" { capabilities = ["update"] }` + "\n" + `path "transit/keys/kubernetes" { capabilities = ["read"] }`,
	}[policy]), "write policy")
	tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{policy}})
	v.Must(err, "create token")
	dir := t.TempDir()
	tokenPath := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenPath, []byte(tok.Auth.ClientToken), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "kms.sock")
	cmd := exec.Command(bin, "-listen-address=unix://"+sock, "-vault-address="+v.Addr,
		"-vault-key-path=transit/keys/kubernetes", "-vault-token-path="+tokenPath, "-status-refresh-interval=500ms")
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("plugin log:\n%s", log.String())
		}
	})
	return sock
}

func TestPluginProbeAgainstTheRealPlugin(t *testing.T) {
	v := vaulttest.StartDev(t)
	v.EnableTransit("transit", "kubernetes")
	ctx := context.Background()

	t.Run("healthy plugin => Status and preflight ok", func(t *testing.T) {
		sock := startPlugin(t, v, "full")
		var h = Plugin(ctx, sock)
		for deadline := time.Now().Add(20 * time.Second); !(h.StatusOK && h.PreflightOK) && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			h = Plugin(ctx, sock)
		}
		if !h.StatusOK || !h.PreflightOK || h.Err != "" {
			t.Fatalf("probe = %+v, want Status and preflight ok", h)
		}
	})
	t.Run("policy without decrypt => not ok, and says decrypt", func(t *testing.T) {
		sock := startPlugin(t, v, "no-decrypt")
		time.Sleep(2 * time.Second) // a few Status refreshes
		h := Plugin(ctx, sock)
		if h.StatusOK && h.PreflightOK {
			t.Fatalf("probe = %+v, want a failure", h)
		}
		if !strings.Contains(h.Err, "decrypt") {
			t.Fatalf("probe error %q does not name decrypt", h.Err)
		}
	})
	t.Run("no socket => not ok, names the socket", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "none.sock")
		h := Plugin(ctx, missing)
		if h.StatusOK || !strings.Contains(h.Err, missing) {
			t.Fatalf("probe = %+v, want a failure naming %s", h, missing)
		}
	})
}
