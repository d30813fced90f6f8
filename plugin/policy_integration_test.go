//go:build integration

package plugin_test

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	kmsservice "k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// OpenShift's KMS operator runs the plugin with an argument list it owns
// (no -key-id-mode), and its users grant HashiCorp's documented minimum
// policy: with both, the plugin must serve.
func TestOpenShiftArgumentsUnderHashiCorpsMinimumPolicyServe(t *testing.T) {
	r := newRig(t, rigOptions{})
	role := r.vault.CreateAppRole("openshift", "hashicorp-minimum", vaulttest.HashiCorpMinimumPolicy(mount, key), time.Hour, 2*time.Hour)
	secretIDPath := filepath.Join(t.TempDir(), "secret-id")
	writeFileAtomic(t, secretIDPath, r.vault.NewSecretID(role))
	// contract.RenderedFlags, as OpenShift passes them to a sidecar of a
	// Vault on loopback without TLS or namespaces.
	_, client, _ := r.startPlugin([]string{
		"-vault-address=" + r.vault.Addr,
		"-vault-key-path=" + mount + "/keys/" + key,
		"-approle-role-id=" + role.RoleID,
		"-approle-secret-id-path=" + secretIDPath,
		"-metrics-port=0",
	})
	ctx := context.Background()
	var st *kmsservice.StatusResponse
	waitFor(t, 15*time.Second, "Status healthz ok", func() bool {
		s, err := client.Status(ctx)
		st = s
		return err == nil && s.Healthz == "ok"
	})
	if !regexp.MustCompile(`^vault-transit:transit/kubernetes:v1:[0-9]{10}$`).MatchString(st.KeyID) {
		t.Fatalf("Status key_id = %q, want the metadata form", st.KeyID)
	}
	// OpenShift's preflight: Status, then an Encrypt and Decrypt round trip.
	resp, err := client.Encrypt(ctx, "uid", []byte("seed"))
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if resp.KeyID != st.KeyID {
		t.Fatalf("Encrypt key_id %q, Status key_id %q: they must agree", resp.KeyID, st.KeyID)
	}
	pt, err := client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID})
	if err != nil || string(pt) != "seed" {
		t.Fatalf("Decrypt = %q, %v", pt, err)
	}
	// The same key_id from the plugin the rig runs (another node).
	if other := r.status().KeyID; other != st.KeyID {
		t.Fatalf("two plugins on one key report %q and %q", st.KeyID, other)
	}
}

// -key-id-mode=hmac under the minimum policy cannot work: Status must say
// what is missing and which flag needs it, and recover once it is granted.
func TestHMACModeWithoutTheHMACCapabilityIsUnhealthyAndSaysWhy(t *testing.T) {
	r := newRig(t, rigOptions{})
	_, client, _ := r.startPlugin(append(r.args, "-key-id-mode=hmac"))
	ctx := context.Background()
	var st *kmsservice.StatusResponse
	waitFor(t, 15*time.Second, "a failure in Status", func() bool {
		s, err := client.Status(ctx)
		st = s
		return err == nil && !strings.HasPrefix(s.Healthz, "starting")
	})
	t.Logf("healthz: %s", st.Healthz)
	for _, want := range []string{"-key-id-mode=hmac", `"update" on transit/hmac/kubernetes`, "403"} {
		if st.Healthz == "ok" || !strings.Contains(st.Healthz, want) {
			t.Errorf("healthz = %q, want a failure mentioning %s", st.Healthz, want)
		}
	}

	r.vault.Must(r.vault.Client.Sys().PutPolicy(policyName, vaulttest.PolicyHMAC(mount, key)), "grant hmac")
	waitFor(t, 15*time.Second, "Status healthz ok once hmac is granted", func() bool {
		s, err := client.Status(ctx)
		st = s
		return err == nil && s.Healthz == "ok"
	})
	if !regexp.MustCompile(`^vault-transit:transit/kubernetes:v1:[0-9a-f]{20}$`).MatchString(st.KeyID) {
		t.Fatalf("key_id in hmac mode = %q, want the hmac form", st.KeyID)
	}
	if st.KeyID == r.status().KeyID {
		t.Fatalf("hmac and metadata mode report the same key_id %q", st.KeyID)
	}
}

// A policy that lost encrypt or decrypt still lets the plugin read the
// key's metadata; Status must not stay "ok" while every call fails.
func TestLosingEncryptOrDecryptTurnsStatusNotOKWithinOneInterval(t *testing.T) {
	r := newRig(t, rigOptions{refresh: time.Second})
	full := vaulttest.Policy(mount, key)
	for _, op := range []string{"decrypt", "encrypt"} {
		t.Run("policy without "+op+" => Status names "+op+"; restored => ok", func(t *testing.T) {
			path := `path "` + mount + "/" + op + "/" + key + `" {
  capabilities = ["update"]
}
`
			if !strings.Contains(full, path) {
				t.Fatalf("the plugin's policy has no %q", path)
			}
			r.vault.Must(r.vault.Client.Sys().PutPolicy(policyName, strings.Replace(full, path, "", 1)), "drop "+op)
			dropped := time.Now()
			waitFor(t, 10*time.Second, "healthz to stop being ok", func() bool { return r.status().Healthz != "ok" })
			// One interval plus the round trip, with slack for a loaded box.
			if d := time.Since(dropped); d > r.refresh+time.Second {
				t.Errorf("reported after %s, more than one interval (%s) plus 1s", d, r.refresh)
			}
			st := r.status()
			t.Logf("healthz: %s", st.Healthz)
			want := op + " with " + mount + "/" + key + `: the token's policy must grant "update" on ` + mount + "/" + op + "/" + key
			if !strings.HasPrefix(st.Healthz, want) || !strings.Contains(st.Healthz, "403") || strings.Contains(st.Healthz, "\n") {
				t.Errorf("healthz = %q, want one line starting %q with Vault's 403", st.Healthz, want)
			}
			if code, body := r.getCode("/readyz"); code != 503 || !strings.Contains(body, op) {
				t.Errorf("/readyz = %d %q, want 503 naming %s", code, body, op)
			}

			r.vault.Must(r.vault.Client.Sys().PutPolicy(policyName, full), "restore the policy")
			r.waitHealthy(r.refresh + 5*time.Second)
		})
	}
}

// OpenShift's KMS plugin lifecycle passes exactly these ten flags
// (openshift/library-go pkg/operator/encryption/kms/pluginlifecycle/vault.go)
// to a Vault behind TLS that does not ask for a client certificate, with
// the server name to verify (-tls-sni, the address being an IP) and empty
// namespaces on Vault without Enterprise. Under HashiCorp's minimum policy
// the plugin must serve the API server's KMSv2 client.
func TestOpenShiftsExactArgumentListOverTLS(t *testing.T) {
	f := vaulttest.NewTLSFiles(t)
	f.NoClientAuth = true
	v := vaulttest.StartPersistentTLS(t, f)
	v.EnableTransit(mount, key)
	role := v.CreateAppRole("openshift", "hashicorp-minimum", vaulttest.HashiCorpMinimumPolicy(mount, key), time.Hour, 2*time.Hour)
	dir := t.TempDir()
	secretIDPath := filepath.Join(dir, "secret-id")
	writeFileAtomic(t, secretIDPath, v.NewSecretID(role))
	sock := filepath.Join(dir, "kms.sock")
	startProcess(t, pluginBin,
		"-listen-address=unix://"+sock,
		"-vault-address="+v.Addr,
		"-vault-key-path="+mount+"/keys/"+key,
		"-approle-role-id="+role.RoleID,
		"-approle-secret-id-path="+secretIDPath,
		"-tls-ca-file="+f.CAFile,
		"-tls-sni="+f.ServerName,
		"-vault-namespace=",
		"-vault-auth-namespace=",
		"-metrics-port=0",
	)
	client := connect(t, sock)
	ctx := context.Background()
	waitFor(t, 30*time.Second, "Status healthz ok", func() bool {
		s, err := client.Status(ctx)
		return err == nil && s.Healthz == "ok"
	})
	resp, err := client.Encrypt(ctx, "uid", []byte("seed"))
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	pt, err := client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID})
	if err != nil || string(pt) != "seed" {
		t.Fatalf("Decrypt = %q, %v", pt, err)
	}
}
