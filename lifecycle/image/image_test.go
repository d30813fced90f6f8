package image_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/image"
)

// offsite records every request bound for a host other than loopback.
// TestMain points the proxy variables at it before any HTTP client exists
// (net/http reads them once per process); Go never proxies loopback, so the
// test registry is reached directly and anything else lands here, refused.
var offsite = &proxyRecorder{}

func TestMain(m *testing.M) {
	srv := httptest.NewServer(offsite)
	for _, k := range []string{"NO_PROXY", "no_proxy", "http_proxy", "https_proxy", "COSIGN_REPOSITORY"} {
		os.Unsetenv(k)
	}
	os.Setenv("HTTP_PROXY", srv.URL)
	os.Setenv("HTTPS_PROXY", srv.URL)
	// An empty docker config: the machine's credentials stay out of tests.
	dockerConfig, err := os.MkdirTemp("", "image-test-docker")
	if err != nil {
		panic(err)
	}
	os.Setenv("DOCKER_CONFIG", dockerConfig)
	code := m.Run()
	srv.Close()
	os.RemoveAll(dockerConfig)
	os.Exit(code)
}

type proxyRecorder struct {
	mu    sync.Mutex
	hosts []string
}

func (p *proxyRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.hosts = append(p.hosts, r.Host)
	p.mu.Unlock()
	http.Error(w, "image tests: no network beyond loopback", http.StatusBadGateway)
}

func (p *proxyRecorder) reset() {
	p.mu.Lock()
	p.hosts = nil
	p.mu.Unlock()
}

func (p *proxyRecorder) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.hosts...)
}

// refused asserts err is a one-line refusal of kind that mentions facts.
func refused(t *testing.T, err error, kind error, facts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("verified; want a refusal (%v)", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("refused with %q; want an error matching %v", err, kind)
	}
	msg := err.Error()
	t.Logf("refused: %s", msg)
	if strings.Contains(msg, "\n") {
		t.Errorf("message spans lines: %q", msg)
	}
	for _, f := range facts {
		if !strings.Contains(msg, f) {
			t.Errorf("message %q does not mention %q", msg, f)
		}
	}
}

func TestNewVerifierRefusesUnusableKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name  string
		path  string
		facts []string
	}{
		{name: "a file that is not PEM => refused", path: write("garbage.pub", "not a key\n"), facts: []string{"garbage.pub", "not a PEM public key"}},
		{name: "a truncated PEM public key => refused", path: write("truncated.pub", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"), facts: []string{"truncated.pub"}},
		{name: "a private key => refused, asking for its public half", path: write("cosign.key", "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"), facts: []string{"cosign.key", "private key", "cosign.pub"}},
		{name: "a missing file => refused", path: filepath.Join(dir, "absent.pub"), facts: []string{"absent.pub", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := image.NewVerifier(image.Options{KeyPath: tc.path})
			refused(t, err, image.ErrKey, tc.facts...)
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts image.Options
		flag string // "" means valid
	}{
		{name: "a key and nothing else => valid", opts: image.Options{KeyPath: "cosign.pub"}},
		{name: "every option set => valid", opts: image.Options{KeyPath: "k.pub", AllowInsecureRegistry: true, SignatureRepository: "registry.example/upstream/plugin", RekorURL: "https://rekor.sigstore.dev"}},
		{name: "no key => names --key", opts: image.Options{}, flag: "--key"},
		{name: "a signature repository with a tag => names --signature-repository", opts: image.Options{KeyPath: "k.pub", SignatureRepository: "registry.example/plugin:v1"}, flag: "--signature-repository"},
		{name: "a Rekor URL without scheme => names --rekor-url", opts: image.Options{KeyPath: "k.pub", RekorURL: "rekor.sigstore.dev"}, flag: "--rekor-url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if tc.flag == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("Validate = %v; want an error naming %s", err, tc.flag)
			}
		})
	}
}
