package vault

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is an HTTP server that answers like Vault and records requests.
// Namespaces are a Vault Enterprise feature, so the real Vault in the
// integration tests cannot show them; this shows the headers we send.
type recorder struct {
	mu      sync.Mutex
	seen    []string // "path ns=<namespace> token=<yes|no>"
	wrapped bool     // some request asked for response wrapping
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	tok := "no"
	if req.Header.Get("X-Vault-Token") != "" {
		tok = "yes"
	}
	r.mu.Lock()
	r.seen = append(r.seen, req.URL.Path+" ns="+req.Header.Get("X-Vault-Namespace")+" token="+tok)
	r.wrapped = r.wrapped || req.Header.Get("X-Vault-Wrap-TTL") != ""
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasSuffix(req.URL.Path, "/login"), strings.HasSuffix(req.URL.Path, "/renew-self"):
		_ = json.NewEncoder(w).Encode(map[string]any{"auth": map[string]any{"client_token": "t", "lease_duration": 60, "renewable": true}})
	case strings.Contains(req.URL.Path, "/encrypt/"):
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"ciphertext": "vault:v1:AAAA"}})
	default:
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{}})
	}
}

func TestNamespacesGoToTheRightCalls(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	c, err := New(Config{Addresses: []string{srv.URL}, Namespace: "team-a/kms", AuthNamespace: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok, err := c.LoginAppRole(ctx, "approle", "role", "secret")
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok.Value)
	if _, err := c.Transit("transit", "k").Encrypt(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RenewSelf(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/v1/auth/approle/login ns=team-a token=no",
		"/v1/transit/encrypt/k ns=team-a/kms token=yes",
		"/v1/auth/token/renew-self ns=team-a token=yes",
	}
	if strings.Join(rec.seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(rec.seen, "\n"), strings.Join(want, "\n"))
	}
}

func TestVaultEnvironmentIsIgnored(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	env := map[string]string{
		"VAULT_TOKEN": "from-env", "VAULT_NAMESPACE": "env-ns", "VAULT_ADDR": "http://127.0.0.1:1", "VAULT_AGENT_ADDR": "http://127.0.0.1:1",
		// Each of these alone made api.NewClient fail (vault/api v1.23.0).
		"VAULT_HEADERS": "{not json", "VAULT_SKIP_VERIFY": "maybe", "VAULT_RATE_LIMIT": "garbage", "VAULT_MAX_RETRIES": "many",
		"VAULT_CLIENT_TIMEOUT": "soon", "VAULT_CACERT": "/nonexistent/ca.pem",
		// Read at request time: every answer would come back wrapped.
		"VAULT_WRAP_TTL": "5m",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	c, err := New(Config{Addresses: []string{srv.URL}})
	if err != nil {
		t.Fatalf("the environment broke the client: %v", err)
	}
	for k, v := range env {
		if got := os.Getenv(k); got != v {
			t.Fatalf("%s = %q after New, want %q: the environment was not restored", k, got, v)
		}
	}
	if _, err := c.Transit("transit", "k").Encrypt(context.Background(), []byte("x")); err != nil {
		t.Fatalf("Encrypt went elsewhere than the configured address: %v", err)
	}
	if got := rec.seen[0]; got != "/v1/transit/encrypt/k ns= token=no" {
		t.Fatalf("request = %q: environment leaked into the client", got)
	}
	if rec.wrapped {
		t.Fatal("the request asked for response wrapping: VAULT_WRAP_TTL leaked into the client")
	}
}

func TestFailoverSticksToTheNodeThatAnswered(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	c, err := New(Config{Addresses: []string{"http://127.0.0.1:1", srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.Transit("transit", "k").Encrypt(context.Background(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if c.Address() != srv.URL || len(rec.seen) != 3 {
		t.Fatalf("address %s after failover, %d requests reached the live node", c.Address(), len(rec.seen))
	}
}

func TestErrorsSayWhatAndWhere(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"errors":["cipher: message authentication failed"]}`))
	}))
	defer srv.Close()
	c, _ := New(Config{Addresses: []string{srv.URL}})
	_, err := c.Transit("transit", "k").Decrypt(context.Background(), "vault:v1:AAAA")
	if !IsBadRequest(err) || !strings.Contains(err.Error(), "transit decrypt at "+srv.URL) || !strings.Contains(err.Error(), "message authentication failed") {
		t.Fatalf("err = %v", err)
	}
}

func TestAHungNodeCostsAShareOfTheDeadlineOnce(t *testing.T) {
	// The kernel accepts connections on a listener nobody serves: a node
	// that hangs without closing anything.
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	c, err := New(Config{Addresses: []string{"http://" + hung.Addr().String(), srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	for i, limit := range []time.Duration{1200 * time.Millisecond, 200 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		start := time.Now()
		_, err := c.Transit("transit", "k").Encrypt(ctx, []byte("x"))
		took := time.Since(start)
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
		t.Logf("call %d took %v", i+1, took.Round(time.Millisecond))
		if took > limit {
			t.Fatalf("call %d took %v, want at most %v", i+1, took, limit)
		}
	}
	if c.Address() != srv.URL {
		t.Fatalf("address %s after the hung node failed, want %s", c.Address(), srv.URL)
	}
}
