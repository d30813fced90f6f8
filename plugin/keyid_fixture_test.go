//go:build integration

package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

var update = flag.Bool("update", false, "regenerate testdata/keyid-fixture.json from a new transit key (review the diff: every key_id in it changes)")

const fixturePath = "testdata/keyid-fixture.json"

// keyIDFixture is a transit key as Vault backs it up, and objects the
// plugin wrapped with it, each with the key_id the plugin issued for it.
type keyIDFixture struct {
	Note   string `json:"note"`
	Vault  string `json:"vault"`
	Mount  string `json:"mount"`
	Key    string `json:"key"`
	Backup string `json:"backup"` // transit/backup/<key>; a test key, plaintext backup allowed
	// Created is each version's creation time, as a read of the key gave
	// it when the fixture was made.
	Created map[int]int64   `json:"created"`
	Objects []fixtureObject `json:"objects"`
}

type fixtureObject struct {
	Version    int       `json:"version"`
	Mode       KeyIDMode `json:"mode"` // the mode that issued KeyID
	KeyID      string    `json:"keyID"`
	Ciphertext string    `json:"ciphertext"`
	Plaintext  []byte    `json:"plaintext"` // a random test value, base64 in JSON
}

// keyIDGrammar is the key_id format kmsctl's etcd scan (lifecycle/scan)
// and the e2e suite parse, in both modes: an object whose key_id the scan
// cannot read is not counted as needing its key version.
var keyIDGrammar = regexp.MustCompile(`^vault-transit:transit/kubernetes:v[1-9][0-9]*:[0-9a-f]+$`)

// fixturePlugin connects a plugin in mode to v's transit key, with a token
// holding exactly the policy that mode needs.
func fixturePlugin(t *testing.T, v *vaulttest.Server, mount, key string, mode KeyIDMode) *Plugin {
	t.Helper()
	policy := vaulttest.Policy(mount, key)
	if mode == KeyIDHMAC {
		policy = vaulttest.PolicyHMAC(mount, key)
	}
	name := "kms-" + string(mode)
	v.Must(v.Client.Sys().PutPolicy(name, policy), "write policy")
	tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{name}})
	v.Must(err, "create token")
	c, err := vault.New(vault.Config{Addresses: []string{v.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok.Auth.ClientToken)
	return New(c.Transit(mount, key), Config{Mount: mount, Key: key, RefreshInterval: time.Second, KeyIDMode: mode})
}

// The key_ids the plugin issues never change for a key version: not across
// restarts, not from one node to another, not with a new plugin release.
// A transit key restored from the committed backup into a new Vault stands
// for all three. Every object in the fixture must still decrypt in both
// modes, whichever mode issued its key_id, and each version's key_id in
// each mode must be the one recorded.
func TestKeyIDFixture(t *testing.T) {
	if *update {
		generateKeyIDFixture(t)
	}
	raw, err := os.ReadFile(fixturePath)
	if err != nil {
		t.Fatalf("%v (go test -tags integration ./plugin -run TestKeyIDFixture -update creates it)", err)
	}
	var fx keyIDFixture
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatalf("%s: %v", fixturePath, err)
	}
	latest := 0
	seen := map[int64]bool{}
	for v, c := range fx.Created {
		latest = max(latest, v)
		seen[c] = true
	}
	// Distinct creation times, so a key_id built from the wrong version's
	// record cannot pass unnoticed.
	if latest < 2 || len(seen) != len(fx.Created) {
		t.Fatalf("fixture has versions %v: want at least 2, created in different seconds", fx.Created)
	}
	recorded := map[KeyIDMode]map[int]string{KeyIDMetadata: {}, KeyIDHMAC: {}}
	for _, o := range fx.Objects {
		recorded[o.Mode][o.Version] = o.KeyID
		if !keyIDGrammar.MatchString(o.KeyID) {
			t.Errorf("recorded key_id %q does not match %s", o.KeyID, keyIDGrammar)
		}
	}
	for mode, ids := range recorded {
		if len(ids) != latest {
			t.Fatalf("fixture records %d %s key_ids, want one per version (%d)", len(ids), mode, latest)
		}
	}

	v := vaulttest.StartDev(t)
	v.Must(v.Client.Sys().Mount(fx.Mount, &api.MountInput{Type: "transit"}), "enable transit")
	_, err = v.Client.Logical().Write(fx.Mount+"/restore/"+fx.Key, map[string]any{"backup": fx.Backup})
	v.Must(err, "restore the fixture's key")
	ctx := context.Background()

	for _, mode := range []KeyIDMode{KeyIDMetadata, KeyIDHMAC} {
		t.Run(string(mode)+" mode", func(t *testing.T) {
			p := fixturePlugin(t, v, fx.Mount, fx.Key, mode)
			if err := p.Refresh(ctx); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if st, _ := p.Status(ctx); st.Healthz != healthzOK || st.KeyID != recorded[mode][latest] {
				t.Fatalf("Status = %+v, want ok and the recorded key_id %q", st, recorded[mode][latest])
			}

			t.Run("every stored object => decrypts, whichever mode issued its key_id", func(t *testing.T) {
				for _, o := range fx.Objects {
					pt, err := p.Decrypt(ctx, "uid", &service.DecryptRequest{Ciphertext: []byte(o.Ciphertext), KeyID: o.KeyID})
					if err != nil || !bytes.Equal(pt, o.Plaintext) {
						t.Errorf("v%d object with %s key_id %q: %v (plaintext matches: %v)", o.Version, o.Mode, o.KeyID, err, bytes.Equal(pt, o.Plaintext))
					}
				}
			})
			t.Run("a key_id of either form naming another version => InvalidArgument", func(t *testing.T) {
				for _, o := range fx.Objects {
					wrong := recorded[o.Mode][o.Version%latest+1]
					_, err := p.Decrypt(ctx, "uid", &service.DecryptRequest{Ciphertext: []byte(o.Ciphertext), KeyID: wrong})
					if status.Code(err) != codes.InvalidArgument {
						t.Errorf("v%d object with key_id %q: %v, want InvalidArgument", o.Version, wrong, err)
					}
				}
			})
			t.Run("each version's key_id => the recorded one", func(t *testing.T) {
				info, err := p.transit.ReadKey(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for version, want := range recorded[mode] {
					if got, err := p.keyIDOf(ctx, version, info); err != nil || got != want {
						t.Errorf("key_id of v%d = %q, %v; recorded %q", version, got, err, want)
					}
				}
			})
			t.Run("Encrypt => the recorded key_id of the latest version", func(t *testing.T) {
				resp, err := p.Encrypt(ctx, "uid", []byte("seed"))
				if err != nil || resp.KeyID != recorded[mode][latest] {
					t.Fatalf("Encrypt = %+v, %v; want key_id %q", resp, err, recorded[mode][latest])
				}
			})
		})
	}
}

// generateKeyIDFixture makes a new exportable transit key with three
// versions, created a second apart, has the plugin wrap a random value
// under each version in each mode, and writes the key's backup and the
// objects to fixturePath.
func generateKeyIDFixture(t *testing.T) {
	const mount, key = "transit", "kubernetes"
	v := vaulttest.StartDev(t)
	seal, err := v.Client.Sys().SealStatus()
	v.Must(err, "read Vault's version")
	v.Must(v.Client.Sys().Mount(mount, &api.MountInput{Type: "transit"}), "enable transit")
	_, err = v.Client.Logical().Write(mount+"/keys/"+key, map[string]any{
		"type": "aes256-gcm96", "exportable": true, "allow_plaintext_backup": true,
	})
	v.Must(err, "create key")
	fx := keyIDFixture{
		Note:  "Generated by `go test -tags integration ./plugin -run TestKeyIDFixture -update`; never edit by hand. A test-only transit key and objects the plugin wrapped with it, with the key_id it issued for each in each -key-id-mode. TestKeyIDFixture checks that today's plugin still decrypts them and issues the same key_ids.",
		Vault: "v" + seal.Version,
		Mount: mount,
		Key:   key,
	}
	ctx := context.Background()
	plugins := map[KeyIDMode]*Plugin{}
	for _, mode := range []KeyIDMode{KeyIDMetadata, KeyIDHMAC} {
		plugins[mode] = fixturePlugin(t, v, mount, key, mode)
	}
	for version := 1; version <= 3; version++ {
		if version > 1 {
			time.Sleep(1100 * time.Millisecond) // a new creation second
			if got := v.RotateKey(mount, key); got != version {
				t.Fatalf("rotated to version %d, want %d", got, version)
			}
		}
		for _, mode := range []KeyIDMode{KeyIDMetadata, KeyIDHMAC} {
			seed := make([]byte, 32)
			if _, err := rand.Read(seed); err != nil {
				t.Fatal(err)
			}
			resp, err := plugins[mode].Encrypt(ctx, "fixture", seed)
			if err != nil {
				t.Fatalf("Encrypt under v%d in %s mode: %v", version, mode, err)
			}
			if !strings.HasPrefix(string(resp.Ciphertext), fmt.Sprintf("vault:v%d:", version)) {
				t.Fatalf("Encrypt under v%d gave %.12q", version, resp.Ciphertext)
			}
			fx.Objects = append(fx.Objects, fixtureObject{Version: version, Mode: mode, KeyID: resp.KeyID, Ciphertext: string(resp.Ciphertext), Plaintext: seed})
		}
	}
	info, err := plugins[KeyIDMetadata].transit.ReadKey(ctx)
	v.Must(err, "read key")
	fx.Created = info.Created
	sec, err := v.Client.Logical().Read(mount + "/backup/" + key)
	v.Must(err, "back up key")
	fx.Backup, _ = sec.Data["backup"].(string)
	if fx.Backup == "" {
		t.Fatal("Vault returned no backup")
	}
	out, err := json.MarshalIndent(fx, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fixturePath, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", fixturePath)
}
