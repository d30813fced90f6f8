//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/rotation"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan/etcdtest"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan/scantest"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// TestRetireCommand runs retire against a real dev Vault and a real etcd
// holding values under transit versions 1, 2 and 3.
func TestRetireCommand(t *testing.T) {
	v := vaulttest.StartDev(t)
	v.EnableTransit("transit", "kubernetes")
	v.RotateKey("transit", "kubernetes")
	if latest := v.RotateKey("transit", "kubernetes"); latest != 3 {
		t.Fatalf("latest_version %d after two rotations", latest)
	}
	e := etcdtest.Start(t)
	ctx := context.Background()
	put := func(key string, version int) {
		t.Helper()
		if _, err := e.Client.Put(ctx, key, string(scantest.Value(scantest.TransitKey, version))); err != nil {
			t.Fatal(err)
		}
	}
	var ops []clientv3.Op
	for i := range 5 {
		ops = append(ops, clientv3.OpPut("/registry/secrets/ns/new-"+string(rune('a'+i)), string(scantest.Value(scantest.TransitKey, 3))))
	}
	if _, err := e.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
	put("/registry/secrets/ns/mid", 2)
	put("/registry/secrets/ns/old", 1)
	put("/registry/configmaps/ns/cm", 3)

	// Every output and error is kept, to check that no token is in any.
	var transcript strings.Builder
	env := map[string]string{"VAULT_TOKEN": v.RootToken}
	base := []string{"--vault-address", v.Addr, "--vault-key-path", "transit/keys/kubernetes",
		"--etcd-endpoints", e.Endpoint, "--resources", "secrets,configmaps"}
	retire := func(t *testing.T, env map[string]string, extra ...string) (string, error) {
		t.Helper()
		out, err := runRetire(t, env, append(append([]string{}, base...), extra...)...)
		transcript.WriteString(out)
		if err != nil {
			transcript.WriteString(err.Error())
		}
		return out, err
	}
	minDecryption := func(t *testing.T) int {
		t.Helper()
		sec, err := v.Client.Logical().Read("transit/keys/kubernetes")
		if err != nil {
			t.Fatal(err)
		}
		n, _ := sec.Data["min_decryption_version"].(json.Number).Int64()
		return int(n)
	}
	mustContain := func(t *testing.T, out string, wants ...string) {
		t.Helper()
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}

	t.Run("a v1 object remains, no --to => unchanged at 1", func(t *testing.T) {
		out, err := retire(t, env)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "latest_version 3, min_decryption_version 1", "unchanged: min_decryption_version is already 1")
		if got := minDecryption(t); got != 1 {
			t.Errorf("Vault min_decryption_version %d, want 1", got)
		}
	})

	t.Run("a v1 object remains, --to 2 => refused, listing it, Vault unchanged", func(t *testing.T) {
		out, err := retire(t, env, "--to", "2")
		if err == nil || !strings.Contains(err.Error(), "retire refused: 1 objects are still stored under transit key versions below 2") {
			t.Fatalf("err = %v\n%s", err, out)
		}
		if !hasLine(out, []string{"secrets", "ns/old", "v1", "kms-v2", "under", "transit/kubernetes", "version", "1"}) {
			t.Errorf("no line for ns/old:\n%s", out)
		}
		mustContain(t, out, "(1 listed of 1)", "kmsctl migrate")
		if got := minDecryption(t); got != 1 {
			t.Errorf("Vault min_decryption_version %d, want 1", got)
		}
	})

	put("/registry/secrets/ns/old", 3) // migrated

	t.Run("--to 3 while a v2 object remains => refused, Vault unchanged", func(t *testing.T) {
		out, err := retire(t, env, "--to", "3")
		if err == nil || !strings.Contains(err.Error(), "below 3") {
			t.Fatalf("err = %v\n%s", err, out)
		}
		if !hasLine(out, []string{"secrets", "ns/mid", "v2", "kms-v2", "under", "transit/kubernetes", "version", "2"}) {
			t.Errorf("no line for ns/mid:\n%s", out)
		}
		if got := minDecryption(t); got != 1 {
			t.Errorf("Vault min_decryption_version %d, want 1", got)
		}
	})

	t.Run("v1 migrated => raised to 2, the oldest needed, with the backup warning", func(t *testing.T) {
		out, err := retire(t, env)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "min_decryption_version 1 -> 2 (read back from Vault: 2)", "retired v1:", "WARNING: etcd backups taken before the migration still hold objects under transit key versions v1")
		if got := minDecryption(t); got != 2 {
			t.Errorf("Vault min_decryption_version %d, want 2", got)
		}
	})

	put("/registry/secrets/ns/mid", 3)

	t.Run("--dry-run => the decision as json, Vault unchanged", func(t *testing.T) {
		out, err := retire(t, env, "--dry-run", "-o", "json")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var got RetireReport
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("decode: %v\n%s", err, out)
		}
		if !got.DryRun || got.Applied || got.Decision.Outcome != rotation.Raise || got.Decision.To != 3 || got.Before.MinDecryption != 2 || got.ScanRevision == 0 {
			t.Errorf("report %+v", got)
		}
		mustContain(t, out, `"outcome": "raise"`, `"minDecryptionVersion": 2`, `"key": "transit/kubernetes"`)
		if got := minDecryption(t); got != 2 {
			t.Errorf("Vault min_decryption_version %d, want 2", got)
		}
	})

	t.Run("a token without config capability => one 403 line naming the policy, Vault unchanged", func(t *testing.T) {
		if err := v.Client.Sys().PutPolicy("read-only-key", `path "transit/keys/kubernetes" { capabilities = ["read"] }`); err != nil {
			t.Fatal(err)
		}
		sec, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"read-only-key"}, NoDefaultPolicy: true})
		if err != nil {
			t.Fatal(err)
		}
		limited := sec.Auth.ClientToken
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(limited+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := retire(t, nil, "--vault-token-path", tokenFile)
		if err == nil {
			t.Fatalf("no error\n%s", out)
		}
		msg := err.Error()
		for _, want := range []string{"set min_decryption_version 3 on transit/keys/kubernetes", "permission denied (403)", "update on transit/keys/kubernetes/config", "vault-operator-policy.hcl"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error lacks %q: %s", want, msg)
			}
		}
		if strings.Contains(msg, "\n") || strings.Contains(msg, limited) || strings.Contains(out, limited) {
			t.Errorf("error not one line or carries the token: %q", msg)
		}
		if got := minDecryption(t); got != 2 {
			t.Errorf("Vault min_decryption_version %d, want 2", got)
		}
	})

	t.Run("nothing below 3 => raised to 3", func(t *testing.T) {
		out, err := retire(t, env)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "min_decryption_version 2 -> 3 (read back from Vault: 3)", "retired v2:")
		if got := minDecryption(t); got != 3 {
			t.Errorf("Vault min_decryption_version %d, want 3", got)
		}
	})

	t.Run("--undo --to 2 without etcd flags => lowered to 2, no scan", func(t *testing.T) {
		out, err := runRetire(t, env, "--vault-address", v.Addr, "--vault-key-path", "transit/keys/kubernetes", "--undo", "--to", "2")
		transcript.WriteString(out)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "--undo: no etcd scan needed", "min_decryption_version 3 -> 2 (read back from Vault: 2)")
		if got := minDecryption(t); got != 2 {
			t.Errorf("Vault min_decryption_version %d, want 2", got)
		}
	})

	t.Run("--undo => lowered to 1, every version decrypts again", func(t *testing.T) {
		out, err := retire(t, env, "--undo")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "min_decryption_version 2 -> 1 (read back from Vault: 1)", "Vault decrypts with v1 again")
		if got := minDecryption(t); got != 1 {
			t.Errorf("Vault min_decryption_version %d, want 1", got)
		}
	})

	t.Run("--undo --to 2 above the current => refused", func(t *testing.T) {
		_, err := retire(t, env, "--undo", "--to", "2")
		if err == nil || !strings.Contains(err.Error(), "--undo only lowers it") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("--config => Vault address, key path and resources from kms.yaml", func(t *testing.T) {
		data, err := os.ReadFile(exampleConfig)
		if err != nil {
			t.Fatal(err)
		}
		for old, repl := range map[string]string{
			"https://vault-1.example.com:8200,https://vault-2.example.com:8200,https://vault-3.example.com:8200": v.Addr,
			"    caBundlePath: /etc/kubernetes/vault-kms/vault-ca.pem\n":                                         "",
			"    - secrets\n": "    - secrets\n    - configmaps\n",
		} {
			if !bytes.Contains(data, []byte(old)) {
				t.Fatalf("%s lacks %q", exampleConfig, old)
			}
			data = bytes.Replace(data, []byte(old), []byte(repl), 1)
		}
		cfg := filepath.Join(t.TempDir(), "kms.yaml")
		if err := os.WriteFile(cfg, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := runRetire(t, env, "--config", cfg, "--etcd-endpoints", e.Endpoint, "--dry-run")
		transcript.WriteString(out)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "transit key transit/kubernetes at "+v.Addr, "of secrets, configmaps", "would set min_decryption_version 1 -> 3")
	})

	t.Run("VAULT_* in the environment => ignored", func(t *testing.T) {
		for k, val := range map[string]string{"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "s.bogus", "VAULT_NAMESPACE": "nowhere",
			"VAULT_WRAP_TTL": "5m", "VAULT_HEADERS": `{"X-Injected":"yes"}`, "VAULT_SKIP_VERIFY": "true"} {
			t.Setenv(k, val)
		}
		out, err := retire(t, env, "--dry-run")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "would set min_decryption_version 1 -> 3 (dry run: nothing changed)")
	})

	if strings.Contains(transcript.String(), v.RootToken) {
		t.Errorf("the root token appears in the output:\n%s", transcript.String())
	}
}
