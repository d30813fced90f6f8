package vault

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// replaceFile writes data to a temporary file and renames it over path.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// captureTLSProblems makes c report unusable TLS file changes to the
// returned function's list instead of the log.
func captureTLSProblems(c *Client) func() []string {
	var mu sync.Mutex
	var got []string
	c.tls.report = func(err error) {
		mu.Lock()
		got = append(got, err.Error())
		mu.Unlock()
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

func TestParseCABundle(t *testing.T) {
	ca1, ca2 := pemCert(t, newTestCA(t)), pemCert(t, newTestCA(t))
	tests := []struct {
		name    string
		data    string
		certs   int
		wantErr string
	}{
		{name: "two certificates => both", data: ca1 + ca2, certs: 2},
		{name: "text between and around blocks => ignored", data: "# bundle\n" + ca1 + "rotated 2026-11-23\n" + ca2 + "\n\n", certs: 2},
		{name: "second block cut short => refused, not half a bundle", data: ca1 + ca2[:len(ca2)/2], wantErr: "cut short"},
		{name: "only a BEGIN line => refused", data: ca1 + "-----BEGIN CERTIFICATE-----\n", wantErr: "cut short"},
		{name: "empty file => refused", data: "", wantErr: "no PEM certificate"},
		{name: "a key, no certificate => refused", data: "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", wantErr: "no PEM certificate"},
		{name: "a certificate Go cannot parse beside a good one => the good one", data: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" + ca1, certs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := parseCABundle([]byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(pool.Subjects()); got != tt.certs { //nolint:staticcheck // deprecated for system pools only
				t.Fatalf("%d certificates in the pool, want %d", got, tt.certs)
			}
		})
	}
}

// Kubernetes updates a Secret volume by pointing the ..data symlink at a
// new directory; the files' own paths never change.
func TestTLSFingerprintFollowsAVolumeUpdate(t *testing.T) {
	dir := t.TempDir()
	writeVersion := func(name, content string) {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "ca.crt"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("..2026_11_23_1", "first")
	if err := os.Symlink(filepath.Join("..data", "ca.crt"), filepath.Join(dir, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	f := tlsFiles{caFile: filepath.Join(dir, "ca.crt")}
	before := f.fingerprint()
	if again := f.fingerprint(); again != before {
		t.Fatalf("fingerprint changed with no change: %q, %q", before, again)
	}
	writeVersion("..2026_11_23_2", "later") // same length: the inode tells
	if after := f.fingerprint(); after == before {
		t.Fatalf("fingerprint %q unchanged after the volume update", after)
	}
}

// A CA file caught half-written must not break anything: calls, new
// connections included, go on with the last good CA, the problem is
// reported once, and the next good file is used.
func TestAHalfWrittenCAFileKeepsTheLastGoodOne(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"data":{"ciphertext":"vault:v1:AAAA"}}`))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	caPath := filepath.Join(t.TempDir(), "ca.pem")
	good := pemCert(t, srv.Certificate())
	replaceFile(t, caPath, []byte(good))
	c, err := New(Config{Addresses: []string{srv.URL}, CAFile: caPath})
	if err != nil {
		t.Fatal(err)
	}
	c.tls.every = 0 // look at the file on every call
	c.tls.nextCheck.Store(0)
	problems := captureTLSProblems(c)
	encrypt := func() error {
		srv.CloseClientConnections() // every call makes a new connection
		_, err := c.Transit("transit", "k").Encrypt(context.Background(), []byte("x"))
		return err
	}
	if err := encrypt(); err != nil {
		t.Fatal(err)
	}
	other := pemCert(t, newTestCA(t))
	replaceFile(t, caPath, []byte(other+good[:len(good)-40])) // being written: the server's CA cut short
	for i := 0; i < 3; i++ {
		if err := encrypt(); err != nil {
			t.Fatalf("call %d with a half-written CA file: %v", i+1, err)
		}
	}
	if got := problems(); len(got) != 1 || !strings.Contains(got[0], "cut short") {
		t.Fatalf("problems reported: %q, want one saying the file is cut short", got)
	}
	replaceFile(t, caPath, []byte(other)) // whole, and without the server's CA
	if err := encrypt(); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("err = %v after the CA file dropped the server's CA: the new file was not used", err)
	}
	replaceFile(t, caPath, []byte(other+good))
	if err := encrypt(); err != nil {
		t.Fatalf("with the server's CA back in the file: %v", err)
	}
}

func newTestCA(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "test CA " + time.Now().String()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func pemCert(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}
