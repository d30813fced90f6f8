//go:build integration

package vault

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// What a real Vault's read of keys/<key> gives for the key types the plugin
// may meet, with only "read" on the key.
func TestReadKeyGivesEveryVersionsCreationTime(t *testing.T) {
	v := vaulttest.StartDev(t)
	v.Must(v.Client.Sys().Mount("transit", &api.MountInput{Type: "transit"}), "enable transit")
	types := []string{"aes256-gcm96", "aes128-gcm96", "chacha20-poly1305", "rsa-2048", "ed25519", "hmac"}
	var policy string
	before := time.Now().Unix()
	for _, typ := range types {
		body := map[string]any{"type": typ}
		if typ == "hmac" {
			body["key_size"] = 32
		}
		_, err := v.Client.Logical().Write("transit/keys/"+typ, body)
		v.Must(err, "create "+typ+" key")
		_, err = v.Client.Logical().Write("transit/keys/"+typ+"/rotate", nil)
		v.Must(err, "rotate "+typ+" key")
		policy += vaulttest.Policy("transit", typ)
	}
	after := time.Now().Unix()
	v.Must(v.Client.Sys().PutPolicy("kms", policy), "write policy")
	tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"kms"}})
	v.Must(err, "create token")
	c, err := New(Config{Addresses: []string{v.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok.Auth.ClientToken)

	for _, typ := range types {
		usable := typ != "ed25519" && typ != "hmac"
		t.Run(typ, func(t *testing.T) {
			info, err := c.Transit("transit", typ).ReadKey(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if info.Type != typ || info.LatestVersion != 2 || info.SupportsEncryption != usable || info.SupportsDecryption != usable {
				t.Fatalf("ReadKey = %+v, want type %s, version 2, usable %v", info, typ, usable)
			}
			if typ == "hmac" {
				// Vault lists no versions for hmac keys; the plugin
				// refuses them as unusable before it needs one.
				return
			}
			for version := 1; version <= 2; version++ {
				if got := info.Created[version]; got < before || got > after {
					t.Errorf("version %d created at %d, want between %d and %d", version, got, before, after)
				}
			}
		})
	}
}
