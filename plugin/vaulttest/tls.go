package vaulttest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// TLSFiles are PEM files for a Vault listener that requires client
// certificates. The server certificate names only ServerName (no IP SANs),
// so a client dialling 127.0.0.1 must send and verify that name (-tls-sni).
type TLSFiles struct {
	Dir                       string
	CAFile                    string
	ServerName                string
	ServerCertFile, ServerKey string
	ClientCertFile, ClientKey string
	// NoClientAuth makes the listener serve clients without a certificate
	// (set before starting Vault), as most Vault deployments do.
	NoClientAuth bool

	caKey  *ecdsa.PrivateKey // signs client certificates (IssueClientCert)
	caCert *x509.Certificate
}

// NewTLSFiles makes a CA, a server certificate for ServerName and a client
// certificate, all signed by the CA, in a temporary directory.
func NewTLSFiles(t testing.TB) *TLSFiles {
	t.Helper()
	dir := t.TempDir()
	f := &TLSFiles{
		Dir: dir, CAFile: filepath.Join(dir, "ca.pem"), ServerName: "vault.test.internal",
		ServerCertFile: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client-key.pem"),
	}
	caKey, caCert := newCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "vaulttest CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	writePEM(t, f.CAFile, "CERTIFICATE", caCert.Raw)
	f.caKey, f.caCert = caKey, caCert
	for _, c := range []struct {
		tmpl           *x509.Certificate
		certFile, keyF string
	}{
		{&x509.Certificate{Subject: pkix.Name{CommonName: f.ServerName}, DNSNames: []string{f.ServerName},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, f.ServerCertFile, f.ServerKey},
		{&x509.Certificate{Subject: pkix.Name{CommonName: "vault-kms-plugin"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, f.ClientCertFile, f.ClientKey},
	} {
		key, cert := newCert(t, c.tmpl, caCert, caKey)
		writePEM(t, c.certFile, "CERTIFICATE", cert.Raw)
		if err := os.WriteFile(c.keyF, keyPEM(t, key), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func newCert(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func keyPEM(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// IssueClientCert makes a new client certificate signed by f's CA (which
// the listener trusts for clients), valid until notAfter, and returns the
// certificate and key as PEM, for the test to write where and how it likes.
func (f *TLSFiles) IssueClientCert(t testing.TB, notAfter time.Time) (certPEM, keyPEMBytes []byte) {
	t.Helper()
	key, cert := newCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "vault-kms-plugin"}, NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, f.caCert, f.caKey)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), keyPEM(t, key)
}

// RotateServerCA makes a new CA and a server certificate for ServerName
// signed by it, writes them over ServerCertFile and ServerKey, and adds the
// new CA to CAFile (so this package's own clients trust both; clients are
// still verified against the first CA). It returns the new CA as PEM. A
// running Vault serves the new certificate after Server.ReloadTLS.
func (f *TLSFiles) RotateServerCA(t testing.TB) []byte {
	t.Helper()
	caKey, caCert := newCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "vaulttest CA " + randomHex(4)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	key, cert := newCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: f.ServerName}, DNSNames: []string{f.ServerName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, caCert, caKey)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})
	for _, w := range []struct {
		path string
		data []byte
	}{
		{f.ServerKey, keyPEM(t, key)},
		{f.ServerCertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})},
	} {
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bundle, err := os.ReadFile(f.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.CAFile, append(bundle, caPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	return caPEM
}

// ReloadTLS makes Vault re-read its listener certificate (SIGHUP), waits
// until it serves the one now in ServerCertFile, and rebuilds this
// package's clients of it from the files. Connections open before keep
// the certificate they were made with.
func (s *Server) ReloadTLS() {
	s.t.Helper()
	if s.tls == nil {
		s.t.Fatal("vaulttest: ReloadTLS on a server without TLS")
	}
	want, err := tls.LoadX509KeyPair(s.tls.ServerCertFile, s.tls.ServerKey)
	s.Must(err, "read the new server certificate")
	s.Must(s.cmd.Process.Signal(syscall.SIGHUP), "SIGHUP vault")
	s.httpc = s.tls.httpClient(s.t)
	s.Client = s.newClient()
	u, err := url.Parse(s.Addr)
	s.Must(err, "parse address")
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Only the server's certificate matters here: not verified.
		conn, err := tls.Dial("tcp", u.Host, &tls.Config{ServerName: s.tls.ServerName, InsecureSkipVerify: true}) //nolint:gosec // comparing raw bytes below
		if err == nil {
			served := conn.ConnectionState().PeerCertificates
			conn.Close()
			if len(served) > 0 && bytes.Equal(served[0].Raw, want.Certificate[0]) {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("vault does not serve the new certificate 30s after SIGHUP (last dial: %v):\n%s", err, s.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StartPersistentTLS is StartPersistent with a TLS listener that requires a
// client certificate signed by f's CA.
func StartPersistentTLS(t testing.TB, f *TLSFiles) *Server {
	t.Helper()
	s := startRaftNode(t, Binary(t), "node1", f)
	s.initialise()
	s.unseal()
	return s
}

func (f *TLSFiles) httpClient(t testing.TB) *http.Client {
	t.Helper()
	ca, err := os.ReadFile(f.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(f.ClientCertFile, f.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, ServerName: f.ServerName, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
	}}}
}

func (f *TLSFiles) apiTLSConfig() *api.TLSConfig {
	return &api.TLSConfig{CACert: f.CAFile, TLSServerName: f.ServerName, ClientCert: f.ClientCertFile, ClientKey: f.ClientKey}
}
