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

	// A new key is a new KMS provider, rolled out beside the running one:
	// its setup must not take the running plugins' key out of their policy
	// or change the role ID they log in with.
	t.Run("a second key on the same role => refused, nothing changed; with a role of its own => both keys served", func(t *testing.T) {
		current := assertCredentials(t, cfg, secretIDFile)
		second := *cfg
		second.Vault.VaultKeyPath = cfg.Vault.VaultKeyPath + "-2"
		secondIDFile := filepath.Join(t.TempDir(), "vault-kms-2", "secret-id")
		env2 := append(slices.Clone(env[:len(env)-1]), "SECRET_ID_FILE="+secondIDFile)
		for _, tc := range []struct {
			name, roleID, want string
		}{
			{name: "same role, same role ID", roleID: roleID, want: "Vault policy " + cfg.Vault.Authentication.AppRole.PolicyName + " already exists for another transit key"},
			{name: "same role, another role ID", roleID: roleID + "-2", want: "Vault policy " + cfg.Vault.Authentication.AppRole.PolicyName + " already exists for another transit key"},
		} {
			second.Vault.Authentication.AppRole.RoleID = tc.roleID
			out, err := runSetup(t, &second, env2...)
			if err == nil || !strings.Contains(out, tc.want) || !strings.Contains(out, "nothing changed") {
				t.Errorf("%s: vault-setup.sh for a second key: %v\n%s\nwant a refusal saying %q", tc.name, err, out, tc.want)
			}
		}
		if sec, err := s.Client.Logical().Read(mount + "/keys/" + key + "-2"); err != nil || sec != nil {
			t.Errorf("the refused run created the second key: %v, %v", sec, err)
		}
		// The running plugin's credentials still log in and encrypt.
		pc := clientWithToken(t, s, login(t, s, roleID, current))
		if _, err := pc.Logical().Write(mount+"/encrypt/"+key, map[string]any{"plaintext": base64.StdEncoding.EncodeToString([]byte("dek seed"))}); err != nil {
			t.Errorf("encrypt with the running plugin's credentials after the refused run: %v", err)
		}

		// With a role and policy of its own, the second key is set up
		// beside the first, each token reaching its own key only.
		second.Vault.Authentication.AppRole.RoleName = "kms-plugin-2"
		second.Vault.Authentication.AppRole.PolicyName = "kms-plugin-2"
		second.Vault.Authentication.AppRole.RoleID = roleID + "-2"
		if out, err := runSetup(t, &second, env2...); err != nil {
			t.Fatalf("vault-setup.sh for a second key with a role of its own: %v\n%s", err, out)
		}
		newToken := login(t, s, roleID+"-2", assertCredentials(t, &second, secondIDFile))
		if got := caps(newToken, mount+"/encrypt/"+key+"-2"); !slices.Equal(got, []string{"update"}) {
			t.Errorf("second key's token on its key: %q", got)
		}
		if got := caps(newToken, mount+"/encrypt/"+key); !slices.Equal(got, []string{"deny"}) {
			t.Errorf("second key's token on the first key: %q, want deny", got)
		}
		if got := caps(login(t, s, roleID, current), mount+"/encrypt/"+key); !slices.Equal(got, []string{"update"}) {
			t.Errorf("first key's token on its key after the second setup: %q", got)
		}

		// The second role under a role ID another setup changed: refused.
		second.Vault.Authentication.AppRole.RoleID = roleID + "-3"
		if out, err := runSetup(t, &second, env2...); err == nil || !strings.Contains(out, "AppRole role kms-plugin-2 already exists with another role ID") {
			t.Errorf("vault-setup.sh changing an existing role's role ID: %v\n%s\nwant a refusal", err, out)
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
