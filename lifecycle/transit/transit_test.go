package transit

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testToken = "s.secret-token-value"

// fakeVault answers GET /v1/transit/keys/k with a key and POST .../config
// with status, and records the token and headers it saw.
func fakeVault(t *testing.T, configStatus int) (*httptest.Server, *http.Header) {
	t.Helper()
	var seen http.Header
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/transit/keys/k":
			if r.Header.Get("X-Vault-Wrap-TTL") != "" {
				w.Write([]byte(`{"wrap_info":{"token":"wrapped"}}`))
				return
			}
			w.Write([]byte(`{"data":{"latest_version":3,"min_decryption_version":2,"min_encryption_version":0,"min_available_version":0,"keys":{"1":1,"2":2,"3":3}}}`))
		case r.URL.Path == "/v1/transit/keys/k/config":
			w.WriteHeader(configStatus)
			if configStatus == http.StatusForbidden {
				w.Write([]byte(`{"errors":["1 error occurred:\n\t* permission denied\n\n"]}`))
			}
		default:
			http.NotFound(w, r)
		}
	})
	s := httptest.NewTLSServer(h)
	t.Cleanup(s.Close)
	return s, &seen
}

func caFile(t *testing.T, s *httptest.Server) string {
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// hostileEnv sets every VAULT_* variable that would change what the client
// does if it were honoured.
func hostileEnv(t *testing.T) {
	for k, v := range map[string]string{
		"VAULT_SKIP_VERIFY":     "true",
		"VAULT_ADDR":            "https://127.0.0.1:1",
		"VAULT_TOKEN":           "s.from-the-environment",
		"VAULT_NAMESPACE":       "elsewhere",
		"VAULT_HEADERS":         `{"X-Injected":"yes"}`,
		"VAULT_WRAP_TTL":        "5m",
		"VAULT_TLS_SERVER_NAME": "wrong.example",
		"VAULT_MAX_RETRIES":     "9",
	} {
		t.Setenv(k, v)
	}
}

func TestClient(t *testing.T) {
	t.Run("VAULT_* in the environment => ignored: the Config's CA, address, token and no namespace, headers or wrapping", func(t *testing.T) {
		s, seen := fakeVault(t, http.StatusNoContent)
		hostileEnv(t)
		c, err := New(Config{Address: s.URL, KeyPath: "transit/keys/k", Token: testToken, CAFile: caFile(t, s)})
		if err != nil {
			t.Fatal(err)
		}
		k, err := c.ReadKey(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if k.Name != "transit/k" || k.Latest != 3 || k.MinDecryption != 2 || len(k.Versions) != 3 || k.Versions[2] != 3 || k.Created[3] != 3 {
			t.Errorf("key %+v", k)
		}
		if id, ok := c.MetadataKeyID(k, 3); !ok || id != "vault-transit:transit/k:v3:3" {
			t.Errorf("MetadataKeyID(v3) = %q, %v; want the plugin's metadata key_id", id, ok)
		}
		if _, ok := c.MetadataKeyID(k, 4); ok {
			t.Error("MetadataKeyID of a version Vault did not report => ok")
		}
		if got := seen.Get("X-Vault-Token"); got != testToken {
			t.Errorf("token sent %q", got)
		}
		for _, h := range []string{"X-Vault-Namespace", "X-Injected", "X-Vault-Wrap-TTL"} {
			if seen.Get(h) != "" {
				t.Errorf("header %s sent: %q", h, seen.Get(h))
			}
		}
		if err := c.SetMinDecryptionVersion(context.Background(), 3); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("VAULT_SKIP_VERIFY=true and no CA for the server => TLS still verified, the read fails", func(t *testing.T) {
		s, _ := fakeVault(t, http.StatusNoContent)
		hostileEnv(t)
		c, err := New(Config{Address: s.URL, KeyPath: "transit/keys/k", Token: testToken})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ReadKey(context.Background())
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want a certificate error", err)
		}
	})

	t.Run("403 on config => one line naming the capability and the operator policy, no token", func(t *testing.T) {
		s, _ := fakeVault(t, http.StatusForbidden)
		c, err := New(Config{Address: s.URL, KeyPath: "transit/keys/k", Token: testToken, CAFile: caFile(t, s)})
		if err != nil {
			t.Fatal(err)
		}
		err = c.SetMinDecryptionVersion(context.Background(), 3)
		if err == nil {
			t.Fatal("no error")
		}
		msg := err.Error()
		for _, want := range []string{"set min_decryption_version 3 on transit/keys/k", "permission denied (403)", "update on transit/keys/k/config", "vault-operator-policy.hcl"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error lacks %q: %s", want, msg)
			}
		}
		if strings.Contains(msg, "\n") || strings.Contains(msg, testToken) {
			t.Errorf("error is not one line or carries the token: %q", msg)
		}
	})
}

func TestConfigChecks(t *testing.T) {
	for _, tt := range []struct{ name, addr, keyPath, want string }{
		{name: "http to a remote host => refused", addr: "http://vault.example:8200", keyPath: "transit/keys/k", want: "plain http is allowed only to a loopback"},
		{name: "a path in the address => refused", addr: "https://vault.example/v1", keyPath: "transit/keys/k", want: "only scheme, host and port"},
		{name: "key path without /keys/ => refused", addr: "https://vault.example", keyPath: "transit/k", want: "not <mount>/keys/<name>"},
		{name: "key path with a trailing slash => refused", addr: "https://vault.example", keyPath: "transit/keys/k/", want: "not <mount>/keys/<name>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Address: tt.addr, KeyPath: tt.keyPath, Token: testToken})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("nested mount => split at the last /keys/", func(t *testing.T) {
		m, n, err := SplitKeyPath("team/keys/transit/keys/prod")
		if err != nil || m != "team/keys/transit" || n != "prod" {
			t.Fatalf("%q %q %v", m, n, err)
		}
	})
}

// Vault v1.21.0 gives symmetric keys' creation times as unix seconds and
// rsa keys' as an object with an RFC 3339 creation_time; both must give
// the second the plugin puts in its key_id.
func TestCreationTime(t *testing.T) {
	tests := []struct {
		in   any
		want int64
		err  bool
	}{
		{in: json.Number("1795459705"), want: 1795459705},
		{in: map[string]any{"creation_time": "2026-11-23T19:28:25.123456789Z", "name": "rsa-2048"}, want: 1795462105},
		{in: map[string]any{"name": "no time"}, err: true},
		{in: "1795459705", err: true},
	}
	for _, tt := range tests {
		got, err := creationTime(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("creationTime(%v) = %d, %v; want %d (error %v)", tt.in, got, err, tt.want, tt.err)
		}
	}
}
