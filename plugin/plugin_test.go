package plugin

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

// fakeTransit is an in-memory transit for the plugin's pure logic; the
// behaviour against a real Vault is tested in integration_test.go.
type fakeTransit struct {
	mu         sync.Mutex
	version    int
	encryptErr error
	decryptErr error
	readErr    error
	hmacCalls  int
}

func (f *fakeTransit) Encrypt(_ context.Context, pt []byte) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.encryptErr != nil {
		return "", f.encryptErr
	}
	return fmt.Sprintf("vault:v%d:%s", f.version, base64.StdEncoding.EncodeToString(append(make([]byte, 28), pt...))), nil
}

func (f *fakeTransit) Decrypt(_ context.Context, ct string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.decryptErr != nil {
		return nil, f.decryptErr
	}
	_, body, _ := strings.Cut(strings.TrimPrefix(ct, "vault:v"), ":")
	b, _ := base64.StdEncoding.DecodeString(body)
	return b[28:], nil
}

func (f *fakeTransit) ReadKey(context.Context) (vault.KeyInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return vault.KeyInfo{LatestVersion: f.version, LatestCreated: fmt.Sprint(1700000000 + f.version)}, f.readErr
}

func (f *fakeTransit) HMAC(_ context.Context, v int, _ []byte) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hmacCalls++
	sum := make([]byte, 32)
	sum[0] = byte(v)
	return fmt.Sprintf("vault:v%d:%s", v, base64.StdEncoding.EncodeToString(sum)), nil
}

func (f *fakeTransit) rotate() {
	f.mu.Lock()
	f.version++
	f.mu.Unlock()
}

func newTestPlugin(t *testing.T) (*Plugin, *fakeTransit) {
	t.Helper()
	ft := &fakeTransit{version: 1}
	return New(ft, Config{Mount: "transit", Key: "k", RefreshInterval: time.Second}), ft
}

func TestStatusBeforeFirstRefreshIsNotOK(t *testing.T) {
	p, _ := newTestPlugin(t)
	st, _ := p.Status(context.Background())
	if st.Healthz == "ok" || st.Version != "v2" {
		t.Fatalf("Status before refresh = %+v, want v2 and not ok", st)
	}
}

func TestEncryptKeyIDFollowsCiphertextVersion(t *testing.T) {
	ctx := context.Background()
	p, ft := newTestPlugin(t)
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := p.Status(ctx)
	if st.Healthz != "ok" || !strings.Contains(st.KeyID, ":v1:") {
		t.Fatalf("Status = %+v", st)
	}

	// Rotated between Status and Encrypt: Encrypt must name v2, and Status
	// must follow at once so the two agree.
	ft.rotate()
	resp, err := p.Encrypt(ctx, "uid", []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(resp.Ciphertext), "vault:v2:") || !strings.Contains(resp.KeyID, ":v2:") {
		t.Fatalf("Encrypt after rotation = %q key_id %q, want v2 for both", resp.Ciphertext, resp.KeyID)
	}
	st, _ = p.Status(ctx)
	if st.KeyID != resp.KeyID {
		t.Fatalf("Status key_id %q != Encrypt key_id %q", st.KeyID, resp.KeyID)
	}
	if p.KeyVersion() != 2 {
		t.Fatalf("KeyVersion = %d, want 2", p.KeyVersion())
	}
}

func TestRefreshFingerprintsOncePerKeyVersion(t *testing.T) {
	ctx := context.Background()
	p, ft := newTestPlugin(t)
	for i := 0; i < 5; i++ {
		if err := p.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if ft.hmacCalls != 1 {
		t.Fatalf("HMAC called %d times over 5 refreshes of one version, want 1", ft.hmacCalls)
	}
	ft.rotate()
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if ft.hmacCalls != 2 {
		t.Fatalf("HMAC called %d times after a rotation, want 2", ft.hmacCalls)
	}
}

func TestOlderObservationDoesNotOverwriteNewer(t *testing.T) {
	p, _ := newTestPlugin(t)
	t0 := time.Now()
	p.observe(&snapshot{healthz: healthzOK, keyID: "v2", version: 2, observedAt: t0.Add(time.Second)})
	p.observe(&snapshot{healthz: healthzOK, keyID: "v1", version: 1, observedAt: t0})
	if got := p.status.Load().keyID; got != "v2" {
		t.Fatalf("key_id = %q after an older observation, want v2", got)
	}
}

func TestRefreshFailureKeepsKeyIDAndReportsCause(t *testing.T) {
	ctx := context.Background()
	p, ft := newTestPlugin(t)
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	before, _ := p.Status(ctx)
	ft.readErr = &vault.Error{Op: "transit read key", Addr: "http://127.0.0.1:1", Err: errors.New("connection refused")}
	if err := p.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded with Vault down")
	}
	st, _ := p.Status(ctx)
	if st.Healthz == "ok" || !strings.Contains(st.Healthz, "connection refused") {
		t.Fatalf("healthz = %q, want the cause", st.Healthz)
	}
	if st.KeyID != before.KeyID {
		t.Fatalf("key_id changed to %q while Vault was down", st.KeyID)
	}
	if p.Healthy() == nil {
		t.Fatal("Healthy() = nil while Status is not ok")
	}
}

func TestErrorCodes(t *testing.T) {
	ctx := context.Background()
	good := "vault:v1:" + sealed(40)
	tests := []struct {
		name       string
		ciphertext string
		keyID      string
		decryptErr error
		want       codes.Code
	}{
		{name: "garbage ciphertext => InvalidArgument", ciphertext: "garbage", want: codes.InvalidArgument},
		{name: "oversize ciphertext => InvalidArgument", ciphertext: "vault:v1:" + strings.Repeat("A", 2000), want: codes.InvalidArgument},
		{name: "key_id version differs from ciphertext => InvalidArgument", ciphertext: good, keyID: "vault-transit:transit/k:v2:ab", want: codes.InvalidArgument},
		{name: "Vault says authentication failed => InvalidArgument", ciphertext: good,
			decryptErr: &vault.Error{Status: 400, Errors: []string{"cipher: message authentication failed"}}, want: codes.InvalidArgument},
		{name: "Vault says version too new => FailedPrecondition", ciphertext: good,
			decryptErr: &vault.Error{Status: 400, Errors: []string{"invalid ciphertext: version is too new"}}, want: codes.FailedPrecondition},
		{name: "Vault says version too old => FailedPrecondition", ciphertext: good,
			decryptErr: &vault.Error{Status: 400, Errors: []string{"ciphertext or signature version is disallowed by policy (too old)"}}, want: codes.FailedPrecondition},
		{name: "object from another transit key => FailedPrecondition", ciphertext: good, keyID: "vault-transit:transit/other:v1:ab",
			decryptErr: &vault.Error{Status: 400, Errors: []string{"cipher: message authentication failed"}}, want: codes.FailedPrecondition},
		{name: "Vault unreachable => Unavailable", ciphertext: good,
			decryptErr: &vault.Error{Err: errors.New("connection refused")}, want: codes.Unavailable},
		{name: "Vault 500 => Unavailable", ciphertext: good,
			decryptErr: &vault.Error{Status: 500, Errors: []string{"internal error"}}, want: codes.Unavailable},
		{name: "transit key missing => FailedPrecondition", ciphertext: good,
			decryptErr: &vault.KeyNotFoundError{Key: "transit/k", Err: &vault.Error{Status: 400, Errors: []string{"encryption key not found"}}}, want: codes.FailedPrecondition},
		{name: "Vault 403 => Unavailable", ciphertext: good,
			decryptErr: &vault.Error{Status: 403, Errors: []string{"permission denied"}}, want: codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ft := newTestPlugin(t)
			ft.decryptErr = tt.decryptErr
			_, err := p.Decrypt(ctx, "uid", &service.DecryptRequest{Ciphertext: []byte(tt.ciphertext), KeyID: tt.keyID})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("Decrypt code = %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

func TestEncryptRejectsBadPlaintext(t *testing.T) {
	p, _ := newTestPlugin(t)
	for _, pt := range [][]byte{nil, make([]byte, maxPlaintext+1)} {
		if _, err := p.Encrypt(context.Background(), "uid", pt); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Encrypt(%d bytes) = %v, want InvalidArgument", len(pt), err)
		}
	}
}

func TestCallerDeadlineKeepsItsCode(t *testing.T) {
	p, ft := newTestPlugin(t)
	ft.encryptErr = &vault.Error{Err: context.DeadlineExceeded}
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, err := p.Encrypt(ctx, "uid", []byte("x")); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Encrypt after deadline = %v, want DeadlineExceeded", err)
	}
}
