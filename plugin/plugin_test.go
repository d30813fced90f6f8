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
	hmacErr    error
	hmacCalls  int
	readCalls  int
	keyType    string // "" is aes256-gcm96
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

// created is the fake's creation time of a key version.
func created(v int) int64 { return 1795459100 + int64(v) }

func (f *fakeTransit) ReadKey(context.Context) (vault.KeyInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readCalls++
	if f.readErr != nil {
		return vault.KeyInfo{}, f.readErr
	}
	info := vault.KeyInfo{LatestVersion: f.version, Type: "aes256-gcm96", SupportsEncryption: true, SupportsDecryption: true, Created: map[int]int64{}}
	if f.keyType != "" {
		info.Type, info.SupportsEncryption, info.SupportsDecryption = f.keyType, false, false
	}
	for v := 1; v <= f.version; v++ {
		info.Created[v] = created(v)
	}
	return info, nil
}

func (f *fakeTransit) HMAC(_ context.Context, v int, _ []byte) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hmacCalls++
	if f.hmacErr != nil {
		return "", f.hmacErr
	}
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
	return newTestPluginMode(t, "")
}

func newTestPluginMode(t *testing.T, mode KeyIDMode) (*Plugin, *fakeTransit) {
	t.Helper()
	ft := &fakeTransit{version: 1}
	return New(ft, Config{Mount: "transit", Key: "k", RefreshInterval: time.Second, KeyIDMode: mode}), ft
}

func TestStatusBeforeFirstRefreshIsNotOK(t *testing.T) {
	p, _ := newTestPlugin(t)
	st, _ := p.Status(context.Background())
	if st.Healthz == "ok" || st.Version != "v2" {
		t.Fatalf("Status before refresh = %+v, want v2 and not ok", st)
	}
}

func TestEncryptKeyIDFollowsCiphertextVersion(t *testing.T) {
	for _, tc := range []struct {
		mode   KeyIDMode
		v1, v2 string
	}{
		{mode: KeyIDMetadata, v1: "vault-transit:transit/k:v1:1795459101", v2: "vault-transit:transit/k:v2:1795459102"},
		{mode: KeyIDHMAC, v1: "vault-transit:transit/k:v1:01000000000000000000", v2: "vault-transit:transit/k:v2:02000000000000000000"},
	} {
		t.Run(string(tc.mode)+" mode => Encrypt and Status name the version that encrypted", func(t *testing.T) {
			ctx := context.Background()
			p, ft := newTestPluginMode(t, tc.mode)
			if err := p.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			st, _ := p.Status(ctx)
			if st.Healthz != "ok" || st.KeyID != tc.v1 {
				t.Fatalf("Status = %+v, want ok and key_id %q", st, tc.v1)
			}

			// Rotated between Status and Encrypt: Encrypt must name v2, and
			// Status must follow at once so the two agree.
			ft.rotate()
			resp, err := p.Encrypt(ctx, "uid", []byte("seed"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(resp.Ciphertext), "vault:v2:") || resp.KeyID != tc.v2 {
				t.Fatalf("Encrypt after rotation = %q key_id %q, want v2 and %q", resp.Ciphertext, resp.KeyID, tc.v2)
			}
			st, _ = p.Status(ctx)
			if st.KeyID != resp.KeyID {
				t.Fatalf("Status key_id %q != Encrypt key_id %q", st.KeyID, resp.KeyID)
			}
			if p.KeyVersion() != 2 {
				t.Fatalf("KeyVersion = %d, want 2", p.KeyVersion())
			}
		})
	}
}

func TestMetadataModeNeverCallsHMAC(t *testing.T) {
	ctx := context.Background()
	p, ft := newTestPlugin(t)
	ft.hmacErr = &vault.Error{Status: 403, Errors: []string{"permission denied"}}
	for i := 0; i < 3; i++ {
		if err := p.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Encrypt(ctx, "uid", []byte("seed")); err != nil {
			t.Fatal(err)
		}
	}
	if ft.hmacCalls != 0 {
		t.Fatalf("HMAC called %d times in metadata mode", ft.hmacCalls)
	}
}

func TestRefreshFingerprintsOncePerKeyVersion(t *testing.T) {
	ctx := context.Background()
	p, ft := newTestPluginMode(t, KeyIDHMAC)
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
		{name: "transit key missing, batch decrypt's 400 => FailedPrecondition", ciphertext: good,
			decryptErr: &vault.Error{Status: 400, Errors: []string{"encryption key not found"}}, want: codes.FailedPrecondition},
		{name: "key type cannot decrypt => FailedPrecondition", ciphertext: good,
			decryptErr: &vault.Error{Status: 400, Errors: []string{"message decryption not supported for key type ed25519"}}, want: codes.FailedPrecondition},
		{name: "hmac-form key_id of this version => Vault decides", ciphertext: good, keyID: "vault-transit:transit/k:v1:00112233445566778899", want: codes.OK},
		{name: "metadata-form key_id of this version => Vault decides", ciphertext: good, keyID: "vault-transit:transit/k:v1:1795459101", want: codes.OK},
		{name: "metadata-form key_id of another version => InvalidArgument", ciphertext: good, keyID: "vault-transit:transit/k:v2:1795459102", want: codes.InvalidArgument},
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

func TestRefreshRoundTripReportsTheFailingOperation(t *testing.T) {
	denied := &vault.Error{Op: "transit decrypt", Addr: "http://127.0.0.1:8200", Status: 403, Errors: []string{"permission denied"}}
	tests := []struct {
		name string
		set  func(ft *fakeTransit, err error)
		err  *vault.Error
		want string
	}{
		{name: "decrypt refused => healthz names decrypt, its policy path and Vault's answer",
			set:  func(ft *fakeTransit, err error) { ft.decryptErr = err },
			err:  denied,
			want: `decrypt with transit/k: the token's policy must grant "update" on transit/decrypt/k: transit decrypt at http://127.0.0.1:8200: Vault answered 403: permission denied`},
		{name: "encrypt refused => healthz names encrypt, its policy path and Vault's answer",
			set:  func(ft *fakeTransit, err error) { ft.encryptErr = err },
			err:  &vault.Error{Op: "transit encrypt", Addr: "http://127.0.0.1:8200", Status: 403, Errors: []string{"permission denied"}},
			want: `encrypt with transit/k: the token's policy must grant "update" on transit/encrypt/k: transit encrypt at http://127.0.0.1:8200: Vault answered 403: permission denied`},
		{name: "Vault 500 on encrypt => healthz names encrypt and Vault's answer",
			set:  func(ft *fakeTransit, err error) { ft.encryptErr = err },
			err:  &vault.Error{Op: "transit encrypt", Addr: "http://127.0.0.1:8200", Status: 500, Errors: []string{"internal error"}},
			want: `encrypt with transit/k: transit encrypt at http://127.0.0.1:8200: Vault answered 500: internal error`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			p, ft := newTestPlugin(t)
			if err := p.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			before, _ := p.Status(ctx)
			ft.mu.Lock()
			tt.set(ft, tt.err)
			ft.mu.Unlock()
			if err := p.Refresh(ctx); err == nil {
				t.Fatal("Refresh succeeded with the round trip failing")
			}
			st, _ := p.Status(ctx)
			if st.Healthz != tt.want {
				t.Fatalf("healthz = %q\nwant      %q", st.Healthz, tt.want)
			}
			if st.KeyID != before.KeyID {
				t.Fatalf("key_id changed to %q", st.KeyID)
			}
			ft.mu.Lock()
			tt.set(ft, nil)
			ft.mu.Unlock()
			if err := p.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			if st, _ := p.Status(ctx); st.Healthz != "ok" {
				t.Fatalf("healthz = %q after the policy came back, want ok", st.Healthz)
			}
		})
	}
}

func TestEncryptDoesNotHideAFailedRoundTrip(t *testing.T) {
	ctx := context.Background()
	p, ft := newTestPlugin(t)
	ft.decryptErr = &vault.Error{Status: 403, Errors: []string{"permission denied"}}
	if err := p.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded without decrypt")
	}
	if _, err := p.Encrypt(ctx, "uid", []byte("seed")); err != nil {
		t.Fatal(err)
	}
	if st, _ := p.Status(ctx); st.Healthz == "ok" || !strings.Contains(st.Healthz, "decrypt") {
		t.Fatalf("healthz = %q after an Encrypt, want still the decrypt failure", st.Healthz)
	}
}

func TestHMACModeWithoutTheHMACCapabilityNamesItAndTheFlag(t *testing.T) {
	ctx := context.Background()
	p, ft := newTestPluginMode(t, KeyIDHMAC)
	ft.hmacErr = &vault.Error{Op: "transit hmac", Addr: "http://127.0.0.1:8200", Status: 403, Errors: []string{"permission denied"}}
	if err := p.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded without hmac")
	}
	st, _ := p.Status(ctx)
	for _, want := range []string{"-key-id-mode=hmac", `"update" on transit/hmac/k`, "-key-id-mode=metadata", "403"} {
		if !strings.Contains(st.Healthz, want) {
			t.Errorf("healthz = %q, want it to mention %s", st.Healthz, want)
		}
	}
	if _, err := p.Encrypt(ctx, "uid", []byte("seed")); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "transit/hmac/k") {
		t.Fatalf("Encrypt = %v, want Unavailable naming transit/hmac/k", err)
	}
}

func TestAKeyThatCannotEncryptIsRefusedByName(t *testing.T) {
	p, ft := newTestPlugin(t)
	ft.keyType = "ed25519"
	if err := p.Refresh(context.Background()); err == nil {
		t.Fatal("Refresh accepted an ed25519 key")
	}
	if st, _ := p.Status(context.Background()); !strings.Contains(st.Healthz, "ed25519 cannot encrypt") {
		t.Fatalf("healthz = %q, want the key type refused", st.Healthz)
	}
}

func TestUnknownKeyIDModeIsReported(t *testing.T) {
	p, _ := newTestPluginMode(t, "sha1")
	if err := p.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), `unknown key_id mode "sha1"`) {
		t.Fatalf("Refresh = %v, want the unknown mode named", err)
	}
	if _, err := ParseKeyIDMode("sha1"); err == nil {
		t.Fatal("ParseKeyIDMode accepted sha1")
	}
}
