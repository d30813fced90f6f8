//go:build integration

package vault

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// TLS files replaced on disk (by cert-manager, or a Kubernetes Secret
// volume update) are used without a restart, and a half-written rotation
// never breaks what works (issue 12, fault 6). Vault is real and serves
// TLS, requiring a client certificate; a proxy in front of it lets the test
// close every connection, as a Vault restart or a network blip does, so the
// next call needs a new handshake.
func TestRotatedTLSFilesAreUsedWithoutARestart(t *testing.T) {
	f := vaulttest.NewTLSFiles(t)
	v := vaulttest.StartPersistentTLS(t, f)
	v.EnableTransit("transit", "k")
	v.Must(v.Client.Sys().PutPolicy("kms", vaulttest.Policy("transit", "k")), "write policy")
	tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"kms"}})
	v.Must(err, "create token")
	px := vaulttest.StartProxy(t, v.Addr)

	// The plugin's own files, replaced the way a Secret volume update
	// replaces them (a new file renamed over the old).
	dir := t.TempDir()
	caPath, certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	ca1, err := os.ReadFile(f.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	// The first client certificate expires soon: only a client that picked
	// up its replacement gets through after that.
	expires := time.Now().Add(12 * time.Second)
	certA, keyA := f.IssueClientCert(t, expires)
	replaceFile(t, caPath, ca1)
	replaceFile(t, certPath, certA)
	replaceFile(t, keyPath, keyA)

	c, err := New(Config{Addresses: []string{px.Addr}, CAFile: caPath, ServerName: f.ServerName, ClientCert: certPath, ClientKey: keyPath})
	if err != nil {
		t.Fatal(err)
	}
	problems := captureTLSProblems(c)
	c.SetToken(tok.Auth.ClientToken)
	tr := c.Transit("transit", "k")
	encrypt := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := tr.Encrypt(ctx, []byte("seed"))
		return err
	}
	// recovers calls encrypt until it succeeds or 10s pass.
	recovers := func(t *testing.T, what string) {
		t.Helper()
		start := time.Now()
		var err error
		for err = encrypt(); err != nil && time.Since(start) < 10*time.Second; err = encrypt() {
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("calls still fail 10s after %s: %v", what, err)
		}
		t.Logf("calls succeed %.1fs after %s", time.Since(start).Seconds(), what)
	}
	if err := encrypt(); err != nil {
		t.Fatalf("Encrypt over TLS: %v", err)
	}

	t.Run("client certificate replaced, its key written later => the old pair serves meanwhile, the new one once the old expired", func(t *testing.T) {
		certB, keyB := f.IssueClientCert(t, time.Now().Add(24*time.Hour))
		replaceFile(t, certPath, certB) // mid-rotation: new certificate, old key
		for i := 0; i < 2; i++ {
			time.Sleep(tlsCheckInterval + 200*time.Millisecond)
			px.Reset() // the next call needs a new handshake
			if err := encrypt(); err != nil {
				t.Fatalf("call %d with a half-written client certificate: %v", i+1, err)
			}
		}
		if got := problems(); len(got) != 1 || !strings.Contains(got[0], "private key does not match public key") {
			t.Errorf("reported problems %q, want one saying the key does not match", got)
		}
		replaceFile(t, keyPath, keyB)

		time.Sleep(time.Until(expires) + time.Second)
		px.Reset()
		recovers(t, "the first client certificate expired")
	})

	t.Run("Vault's certificate from a new CA => calls succeed once the CA file holds the new CA", func(t *testing.T) {
		ca2 := f.RotateServerCA(t)
		v.ReloadTLS()
		px.Reset()
		if err := encrypt(); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("Encrypt while the CA file holds only the old CA = %v, want certificate signed by unknown authority", err)
		}
		replaceFile(t, caPath, ca2) // the old CA is no longer trusted
		recovers(t, "the CA file was replaced")
	})
}
