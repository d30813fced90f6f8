package vaulttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
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
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, c.keyF, "EC PRIVATE KEY", der)
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
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
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
