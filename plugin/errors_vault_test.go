//go:build integration

package plugin

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// Every row of vaultAnswers that reads Vault's answer is provoked here on
// the real Vault the row says it was checked against, with the token a
// plugin has, and must be the row that decides.
func TestVaultAnswersAreTheTablesRows(t *testing.T) {
	v := vaulttest.StartDev(t)
	seal, err := v.Client.Sys().SealStatus()
	v.Must(err, "read Vault's version")
	release := "v" + strings.SplitN(seal.Version, "+", 2)[0]

	v.Must(v.Client.Sys().Mount("transit", &api.MountInput{Type: "transit"}), "enable transit")
	for name, typ := range map[string]string{"k": "aes256-gcm96", "other": "aes256-gcm96", "gone": "aes256-gcm96", "ed": "ed25519"} {
		_, err := v.Client.Logical().Write("transit/keys/"+name, map[string]any{"type": typ})
		v.Must(err, "create key "+name)
	}
	policy := vaulttest.PolicyHMAC("transit", "k") + vaulttest.PolicyHMAC("transit", "other") +
		vaulttest.PolicyHMAC("transit", "gone") + vaulttest.PolicyHMAC("transit", "ed") +
		vaulttest.Policy("nomount", "k")
	v.Must(v.Client.Sys().PutPolicy("kms", policy), "write policy")
	v.Must(v.Client.Sys().PutPolicy("read-only", `path "transit/keys/k" { capabilities = ["read"] }`), "write policy")
	client := func(policy string) *vault.Client {
		tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{policy}})
		v.Must(err, "create token")
		c, err := vault.New(vault.Config{Addresses: []string{v.Addr}})
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(tok.Auth.ClientToken)
		return c
	}
	c, readOnly := client("kms"), client("read-only")
	ctx := context.Background()

	k := c.Transit("transit", "k")
	v1, err := k.Encrypt(ctx, []byte("seed"))
	v.Must(err, "encrypt under v1")
	fromOther, err := c.Transit("transit", "other").Encrypt(ctx, []byte("seed"))
	v.Must(err, "encrypt with the other key")
	sealed, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(v1, "vault:v1:"))
	sealed[len(sealed)/2] ^= 1
	tampered := "vault:v1:" + base64.StdEncoding.EncodeToString(sealed)
	_, err = v.Client.Logical().Write("transit/keys/gone/config", map[string]any{"deletion_allowed": true})
	v.Must(err, "allow deletion")
	_, err = v.Client.Logical().Delete("transit/keys/gone")
	v.Must(err, "delete key")

	tests := []struct {
		name string
		do   func() failure
		row  string
	}{
		{name: "encrypt with a deleted key", row: "transit key missing: encrypt refused with 403 and keys/<key> answers 404",
			do: func() failure {
				_, err := c.Transit("transit", "gone").Encrypt(ctx, []byte("seed"))
				return failure{call: callEncrypt, err: err}
			}},
		{name: "read a deleted key", row: "transit key or mount missing: 404",
			do: func() failure {
				_, err := c.Transit("transit", "gone").ReadKey(ctx)
				return failure{call: callReadKey, err: err}
			}},
		{name: "decrypt under a mount that does not exist", row: "transit key or mount missing: 404",
			do: func() failure {
				_, err := c.Transit("nomount", "k").Decrypt(ctx, v1)
				return failure{call: callDecrypt, version: 1, err: err}
			}},
		{name: "decrypt with a deleted key", row: "transit key missing: 400 encryption key not found",
			do: func() failure {
				_, err := c.Transit("transit", "gone").Decrypt(ctx, v1)
				return failure{call: callDecrypt, version: 1, err: err}
			}},
		{name: "hmac with a deleted key", row: "transit key missing: 400 encryption key not found",
			do: func() failure {
				_, err := c.Transit("transit", "gone").HMAC(ctx, 1, fingerprintLabel)
				return failure{call: callHMAC, version: 1, err: err}
			}},
		{name: "encrypt with an ed25519 key", row: "key type cannot encrypt or decrypt: 400 not supported for key type",
			do: func() failure {
				_, err := c.Transit("transit", "ed").Encrypt(ctx, []byte("seed"))
				return failure{call: callEncrypt, err: err}
			}},
		{name: "decrypt with an ed25519 key", row: "key type cannot encrypt or decrypt: 400 not supported for key type",
			do: func() failure {
				_, err := c.Transit("transit", "ed").Decrypt(ctx, v1)
				return failure{call: callDecrypt, version: 1, err: err}
			}},
		{name: "decrypt a version that does not exist", row: "ciphertext's key version above the latest: 400 version is too new",
			do: func() failure {
				_, err := k.Decrypt(ctx, strings.Replace(v1, "vault:v1:", "vault:v99:", 1))
				return failure{call: callDecrypt, version: 99, err: err}
			}},
		{name: "decrypt another key's ciphertext named by its key_id", row: "ciphertext refused and its key_id names another transit key: 400",
			do: func() failure {
				_, err := k.Decrypt(ctx, fromOther)
				return failure{call: callDecrypt, version: 1, err: err, ours: true, reqKey: parsedKeyID{name: "transit/other", version: 1}}
			}},
		{name: "decrypt a tampered ciphertext", row: "ciphertext refused: 400",
			do: func() failure {
				_, err := k.Decrypt(ctx, tampered)
				return failure{call: callDecrypt, version: 1, err: err}
			}},
		{name: "decrypt without the capability", row: "token or policy refused the call: 403 permission denied",
			do: func() failure {
				_, err := readOnly.Transit("transit", "k").Decrypt(ctx, v1)
				return failure{call: callDecrypt, version: 1, err: err}
			}},
		{name: "token revoked and the login with a destroyed secret ID rejected", row: "token refused with 403 and logging in again failed",
			do: func() failure {
				role := v.CreateAppRole("kms", "kms", policy, time.Hour, 2*time.Hour)
				secretID := v.NewSecretID(role)
				v.DestroySecretID(role, secretID)
				revoked := client("kms")
				tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"kms"}})
				v.Must(err, "create token")
				revoked.SetToken(tok.Auth.ClientToken)
				v.Must(v.Client.Auth().Token().RevokeOrphan(tok.Auth.ClientToken), "revoke token")
				revoked.SetReauth(vault.ReauthFunc(func(ctx context.Context, _ uint64) error {
					_, err := revoked.LoginAppRole(ctx, "approle", role.RoleID, secretID)
					return err
				}))
				_, err = revoked.Transit("transit", "k").Decrypt(ctx, v1)
				return failure{call: callDecrypt, version: 1, err: err}
			}},
		// Last: it retires version 1 of k.
		{name: "decrypt below min_decryption_version", row: "ciphertext's key version below min_decryption_version: 400 disallowed by policy",
			do: func() failure {
				v.RotateKey("transit", "k")
				_, err := v.Client.Logical().Write("transit/keys/k/config", map[string]any{"min_decryption_version": 2})
				v.Must(err, "raise min_decryption_version")
				_, err = k.Decrypt(ctx, v1)
				return failure{call: callDecrypt, version: 1, err: err}
			}},
	}
	p := New(k, Config{Mount: "transit", Key: "k"})
	provoked := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name+" => "+tt.row, func(t *testing.T) {
			raw := tt.do()
			if raw.err == nil {
				t.Fatal("Vault accepted the call")
			}
			// As Encrypt, Decrypt and Refresh describe a failed call.
			f := p.failureOf(raw.call, raw.err)
			f.version, f.reqKey, f.ours = raw.version, raw.reqKey, raw.ours
			a := answerFor(&f)
			t.Logf("Vault %s answered: %v", release, f.err)
			if a.name != tt.row {
				t.Fatalf("row %q, want %q", a.name, tt.row)
			}
			if a.checked != release {
				t.Fatalf("row %q says it was checked on Vault %s; this is %s: check the row and update it", a.name, a.checked, release)
			}
			provoked[a.name] = true
		})
	}
	for _, row := range vaultAnswers[:len(vaultAnswers)-1] {
		if !provoked[row.name] {
			t.Errorf("row %q was not provoked on a real Vault here", row.name)
		}
	}
}
