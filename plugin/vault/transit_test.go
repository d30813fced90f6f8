//go:build integration

package vault

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// A missing transit key must never be taken for a token problem (a
// re-login). Where Vault's answer says so itself (404, 400 "encryption key
// not found"), the client returns it as is for the plugin's table of
// Vault's answers (plugin/errors.go); where it does not (encrypt's 403),
// the client finds out and says so.
func TestAMissingTransitKeyIsNamedAndNeverTriggersALogin(t *testing.T) {
	v := vaulttest.StartDev(t)
	v.EnableTransit("transit", "gone")
	v.Must(v.Client.Sys().PutPolicy("kms", vaulttest.Policy("transit", "gone")+vaulttest.Policy("transit", "never")), "write policy")
	tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"kms"}})
	v.Must(err, "create token")

	c, err := New(Config{Addresses: []string{v.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok.Auth.ClientToken)
	var logins atomic.Int32
	c.SetReauth(ReauthFunc(func(context.Context, uint64) error { logins.Add(1); return nil }))
	ctx := context.Background()
	ct, err := c.Transit("transit", "gone").Encrypt(ctx, []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Client.Logical().Write("transit/keys/gone/config", map[string]any{"deletion_allowed": true})
	v.Must(err, "allow deletion")
	_, err = v.Client.Logical().Delete("transit/keys/gone")
	v.Must(err, "delete key")

	calls := []struct {
		name      string
		call      func(tr *Transit) error
		explained bool // Vault answers 403: the client must say the key is missing
	}{
		{name: "encrypt", explained: true, call: func(tr *Transit) error { _, err := tr.Encrypt(ctx, []byte("seed")); return err }},
		{name: "decrypt", call: func(tr *Transit) error { _, err := tr.Decrypt(ctx, ct); return err }},
		{name: "batch encrypt", explained: true, call: func(tr *Transit) error { _, err := tr.encryptBatch(ctx, []string{"a", "b"}); return err }},
		{name: "batch decrypt", call: func(tr *Transit) error { _, err := tr.decryptBatch(ctx, []string{ct, ct}); return err }},
		{name: "read key", call: func(tr *Transit) error { _, err := tr.ReadKey(ctx); return err }},
	}
	for _, key := range []string{"gone", "never"} {
		for _, tc := range calls {
			state := map[string]string{"gone": "key deleted", "never": "key never created"}[key]
			t.Run(state+", "+tc.name+" => the key named missing or Vault's own answer, no login", func(t *testing.T) {
				before := logins.Load()
				err := tc.call(c.Transit("transit", key))
				var ve *Error
				switch {
				case tc.explained && (!IsKeyNotFound(err) || !strings.Contains(err.Error(), "transit key transit/"+key+" not found")):
					t.Fatalf("err = %v, want transit key transit/%s not found", err, key)
				case !tc.explained && (!errors.As(err, &ve) || (ve.Status != 404 && !strings.Contains(strings.Join(ve.Errors, " "), "encryption key not found"))):
					t.Fatalf("err = %v, want Vault's 404 or 400 encryption key not found", err)
				}
				if n := logins.Load() - before; n != 0 {
					t.Fatalf("%d re-logins for a missing key", n)
				}
			})
		}
	}
	// The token being the problem still triggers a re-login.
	t.Run("token revoked, encrypt => re-login", func(t *testing.T) {
		v.Must(v.Client.Auth().Token().RevokeOrphan(tok.Auth.ClientToken), "revoke token")
		before := logins.Load()
		err := calls[0].call(c.Transit("transit", "gone"))
		if IsKeyNotFound(err) || logins.Load() == before {
			t.Fatalf("err = %v after %d re-logins: a revoked token must lead to a re-login", err, logins.Load()-before)
		}
	})
}
