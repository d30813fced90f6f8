//go:build integration

package render

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// The rendered script against a real Vault (dev server): the plugin's
// AppRole may encrypt, decrypt and read its key and nothing else
// there; the operator's policy may rotate, read and configure that key.
func TestSetupScriptWithARealVault(t *testing.T) {
	requireRoot(t)
	s := vaulttest.StartDev(t)
	bin := t.TempDir()
	if err := os.Symlink(vaulttest.Binary(t), filepath.Join(bin, "vault")); err != nil {
		t.Fatal(err)
	}
	cfg := load(t, filepath.Join("testdata", "dev", "kms.yaml"))
	cfg.Vault.VaultAddress = s.Addr
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	secretIDFile := filepath.Join(t.TempDir(), "vault-kms", "secret-id")
	env := []string{
		"PATH=" + bin + ":" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"VAULT_ADDR=" + s.Addr,
		"VAULT_TOKEN=" + s.RootToken,
		"SECRET_ID_FILE=" + secretIDFile,
	}
	out, err := runSetup(t, cfg, env...)
	if err != nil {
		t.Fatalf("vault-setup.sh: %v\n%s", err, out)
	}
	first := assertCredentials(t, cfg, secretIDFile)
	if first == "" || strings.Contains(out, first) {
		t.Fatalf("secret ID empty or printed; output:\n%s", out)
	}
	roleID := cfg.Vault.Authentication.AppRole.RoleID
	token := login(t, s, roleID, first)

	ctx := context.Background()
	mount, key := cfg.Vault.KeyMount(), cfg.Vault.KeyName()
	caps := func(tok, p string) []string {
		t.Helper()
		c, err := s.Client.Sys().CapabilitiesWithContext(ctx, tok, p)
		if err != nil {
			t.Fatalf("capabilities of %s: %v", p, err)
		}
		slices.Sort(c)
		return c
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{mount + "/encrypt/" + key, []string{"update"}},
		{mount + "/decrypt/" + key, []string{"update"}},
		{mount + "/keys/" + key, []string{"read"}},
		// The default -key-id-mode (metadata) needs no HMAC.
		{mount + "/hmac/" + key, []string{"deny"}},
		{mount + "/keys/" + key + "/rotate", []string{"deny"}},
		{mount + "/keys/" + key + "/config", []string{"deny"}},
		{mount + "/export/encryption-key/" + key, []string{"deny"}},
		{mount + "/backup/" + key, []string{"deny"}},
		{mount + "/encrypt/other", []string{"deny"}},
		{mount + "/keys/other", []string{"deny"}},
		{"sys/policies/acl/" + cfg.Vault.Authentication.AppRole.PolicyName, []string{"deny"}},
		{"auth/approle/role/" + cfg.Vault.Authentication.AppRole.RoleName + "/secret-id", []string{"deny"}},
	} {
		if got := caps(token, tc.path); !slices.Equal(got, tc.want) {
			t.Errorf("plugin token on %s: %q, want %q", tc.path, got, tc.want)
		}
	}
	// And the calls themselves work with it.
	pc := clientWithToken(t, s, token)
	if _, err := pc.Logical().Write(mount+"/encrypt/"+key, map[string]any{"plaintext": base64.StdEncoding.EncodeToString([]byte("dek seed"))}); err != nil {
		t.Errorf("encrypt with the plugin's token: %v", err)
	}
	if sec, err := pc.Logical().Read(mount + "/keys/" + key); err != nil || sec == nil || sec.Data["keys"] == nil {
		t.Errorf("read the key's versions with the plugin's token: %v, %v", sec, err)
	}

	op, err := s.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{cfg.Vault.Authentication.AppRole.OperatorPolicyName()}, NoDefaultPolicy: true, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{mount + "/keys/" + key + "/rotate", []string{"update"}},
		{mount + "/keys/" + key, []string{"read"}},
		{mount + "/keys/" + key + "/config", []string{"update"}},
		{mount + "/encrypt/" + key, []string{"deny"}},
		{mount + "/decrypt/" + key, []string{"deny"}},
		{mount + "/export/encryption-key/" + key, []string{"deny"}},
		{mount + "/keys/other/rotate", []string{"deny"}},
	} {
		if got := caps(op.Auth.ClientToken, tc.path); !slices.Equal(got, tc.want) {
			t.Errorf("operator token on %s: %q, want %q", tc.path, got, tc.want)
		}
	}

	t.Run("rerun => same key and role ID, a new secret ID, the old one destroyed", func(t *testing.T) {
		version := s.RotateKey(mount, key)
		out, err := runSetup(t, cfg, env...)
		if err != nil {
			t.Fatalf("second run: %v\n%s", err, out)
		}
		second := assertCredentials(t, cfg, secretIDFile)
		if second == first {
			t.Fatal("the secret ID was not rotated")
		}
		login(t, s, roleID, second)
		if _, err := loginErr(t, s, roleID, first); err == nil {
			t.Error("the previous secret ID still logs in")
		}
		sec, err := s.Client.Logical().Read(mount + "/keys/" + key)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(sec.Data["latest_version"]); got != strconv.Itoa(version) {
			t.Errorf("key latest_version %v after rerun, want %d: the key must be left alone", got, version)
		}
	})
}

func login(t *testing.T, s *vaulttest.Server, roleID, secretID string) string {
	t.Helper()
	tok, err := loginErr(t, s, roleID, secretID)
	if err != nil {
		t.Fatalf("AppRole login with the written credentials: %v", err)
	}
	return tok
}

func loginErr(t *testing.T, s *vaulttest.Server, roleID, secretID string) (string, error) {
	t.Helper()
	c := clientWithToken(t, s, "")
	sec, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil {
		return "", err
	}
	return sec.Auth.ClientToken, nil
}

func clientWithToken(t *testing.T, s *vaulttest.Server, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.Timeout = 10 * time.Second
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c
}
