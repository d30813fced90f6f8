package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority made for one test.
type CA struct {
	CertPEM  []byte
	CertPath string
	cert     *x509.Certificate
	key      crypto.Signer
	dir      string
}

// NewCA creates a CA and writes its certificate to dir/<name>.crt.
func NewCA(t testing.TB, dir, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("create CA %s: %v", name, err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{CertPEM: pemBlock("CERTIFICATE", der), cert: cert, key: key, dir: dir}
	ca.CertPath = writeFile(t, dir, name+".crt", ca.CertPEM)
	return ca
}

// KeyPair is a certificate and its private key, in memory and on disk.
type KeyPair struct {
	CertPEM, KeyPEM   []byte
	CertPath, KeyPath string
}

// IssueServing issues a server certificate for 127.0.0.1, ::1, localhost and
// the in-cluster names of the kubernetes Service.
func (ca *CA) IssueServing(t testing.TB, name string) KeyPair {
	t.Helper()
	return ca.issue(t, name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.96.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// IssueClient issues a client certificate; kube-apiserver takes cn as the
// user name and orgs as its groups.
func (ca *CA) IssueClient(t testing.TB, name, cn string, orgs ...string) KeyPair {
	t.Helper()
	return ca.issue(t, name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: orgs},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func (ca *CA) issue(t testing.TB, name string, tmpl *x509.Certificate) KeyPair {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatalf("issue certificate %s: %v", name, err)
	}
	kp := KeyPair{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: marshalKey(t, key)}
	kp.CertPath = writeFile(t, ca.dir, name+".crt", kp.CertPEM)
	kp.KeyPath = writeFile(t, ca.dir, name+".key", kp.KeyPEM)
	return kp
}

// PKI is what kube-apiserver needs: a CA that signs its serving certificate
// and the admin's client certificate, and a service-account signing key.
type PKI struct {
	CA        *CA
	Serving   KeyPair
	Admin     KeyPair // CN e2e-admin, group system:masters
	SAKeyPath string  // service-account signing key (private)
	SAPubPath string  // service-account verification key (public)
}

// NewPKI creates all of it under dir.
func NewPKI(t testing.TB, dir string) *PKI {
	t.Helper()
	ca := NewCA(t, dir, "ca")
	p := &PKI{
		CA:      ca,
		Serving: ca.IssueServing(t, "apiserver"),
		Admin:   ca.IssueClient(t, "admin", "e2e-admin", "system:masters"),
	}
	sa := newKey(t)
	pub, err := x509.MarshalPKIXPublicKey(sa.Public())
	if err != nil {
		t.Fatal(err)
	}
	p.SAKeyPath = writeFile(t, dir, "sa.key", marshalKey(t, sa))
	p.SAPubPath = writeFile(t, dir, "sa.pub", pemBlock("PUBLIC KEY", pub))
	return p
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func marshalKey(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PRIVATE KEY", der)
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// WriteFileAtomic replaces path with data the way a secret rotation should:
// write a temporary file beside it, sync, rename over it.
func WriteFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
