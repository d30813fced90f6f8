package vault

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// tlsCheckInterval is how often, at most, the TLS files are looked at for a
// change: a stat of each per interval, on the path of a call.
const tlsCheckInterval = 2 * time.Second

// tlsFiles are the files the client's TLS configuration comes from. Empty
// paths are not used: no CA file means the system's roots.
type tlsFiles struct {
	caFile, certFile, keyFile string
	serverName                string
}

// paths are the files that are set.
func (f tlsFiles) paths() []string {
	var out []string
	for _, p := range []string{f.caFile, f.certFile, f.keyFile} {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// fingerprint changes when any of the files does: inode, size and mtime,
// as plugin/auth watches the secret-id file. It follows symlinks, as
// Kubernetes Secret and ConfigMap volume updates swap them.
func (f tlsFiles) fingerprint() string {
	var b strings.Builder
	for _, p := range f.paths() {
		fi, err := os.Stat(p)
		if err != nil {
			b.WriteString("missing;")
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fmt.Fprintf(&b, "%d:%d:%d;", ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}

// load reads the files and returns the TLS configuration they make. Its
// errors name files, never their contents.
func (f tlsFiles) load() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.serverName}
	if f.caFile != "" {
		data, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		if cfg.RootCAs, err = parseCABundle(data); err != nil {
			return nil, fmt.Errorf("CA file %s: %w", f.caFile, err)
		}
	}
	if (f.certFile == "") != (f.keyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate and its key file")
	}
	if f.certFile != "" {
		certPEM, err := os.ReadFile(f.certFile)
		if err != nil {
			return nil, fmt.Errorf("read client certificate: %w", err)
		}
		keyPEM, err := os.ReadFile(f.keyFile)
		if err != nil {
			return nil, fmt.Errorf("read client key: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s with key %s: %w", f.certFile, f.keyFile, err)
		}
		// Sent whichever CAs the server says it accepts, as vault/api does:
		// Vault's cert auth may trust CAs its listener does not list.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return cfg, nil
}

// parseCABundle parses PEM certificates. Unlike x509.CertPool's
// AppendCertsFromPEM, which keeps whatever parsed before a cut, it refuses
// a bundle that ends in the middle of a block: a file caught half-written
// must not replace a whole one. A certificate Go cannot parse is skipped,
// as AppendCertsFromPEM does (system bundles hold a few).
func parseCABundle(data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		pool.AddCert(cert)
		n++
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, errors.New("a PEM block is cut short (file being written?)")
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

// reloadingTransport is an http.RoundTripper that follows the TLS files:
// at most every tlsCheckInterval, on the path of a call, it looks at their
// fingerprint, and when it changed, builds a new transport from them and
// sends later calls through it. A change that does not load (a certificate
// beside the old key mid-rotation, a CA file being written) is reported
// once and the last good transport stays in use; the files are read again
// at each check until they load (a permission fixed, say), and reported
// again only if they change. Calls in flight finish on the transport they
// started on, whose connections are closed once idle.
type reloadingTransport struct {
	files  tlsFiles
	build  func(*tls.Config) *http.Transport
	every  time.Duration
	report func(err error) // a change that cannot be used

	cur       atomic.Pointer[http.Transport]
	nextCheck atomic.Int64 // Unix nanoseconds

	mu     sync.Mutex // one check at a time
	seen   string     // fingerprint of the files last read
	broken bool       // they did not load
}

func newReloadingTransport(files tlsFiles, build func(*tls.Config) *http.Transport) (*reloadingTransport, error) {
	seen := files.fingerprint()
	cfg, err := files.load()
	if err != nil {
		return nil, err
	}
	r := &reloadingTransport{files: files, build: build, every: tlsCheckInterval, seen: seen}
	r.report = func(err error) {
		klog.ErrorS(err, "TLS files for Vault changed but cannot be used: keeping the previous ones until they change again")
	}
	r.cur.Store(build(cfg))
	r.nextCheck.Store(time.Now().Add(r.every).UnixNano())
	return r, nil
}

// RoundTrip implements http.RoundTripper.
func (r *reloadingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.check(time.Now())
	return r.cur.Load().RoundTrip(req)
}

// CloseIdleConnections closes the current transport's idle connections, as
// http.Client.CloseIdleConnections expects.
func (r *reloadingTransport) CloseIdleConnections() {
	r.cur.Load().CloseIdleConnections()
}

// check reloads the files if they changed, when a check is due. Calls that
// find a check under way go on with the current transport.
func (r *reloadingTransport) check(now time.Time) {
	if now.UnixNano() < r.nextCheck.Load() || !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	r.nextCheck.Store(now.Add(r.every).UnixNano())
	fp := r.files.fingerprint()
	changed := fp != r.seen
	if !changed && !r.broken {
		return
	}
	r.seen = fp
	cfg, err := r.files.load()
	if err != nil {
		if changed || !r.broken {
			r.report(err) // once per change, not per check
		}
		r.broken = true
		return
	}
	r.broken = false
	old := r.cur.Swap(r.build(cfg))
	old.CloseIdleConnections() // and, from now on, each one that turns idle
	// HTTP/2 connections busy right now are not idle yet; close them once
	// every call that may still use them has ended.
	time.AfterFunc(maxCallDuration, old.CloseIdleConnections)
	klog.InfoS("Reloaded TLS files for Vault", "files", r.files.paths())
}
