package plugin

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

func vaultErr(op string, code int, msgs ...string) error {
	return &vault.Error{Op: op, Addr: "http://127.0.0.1:8200", Status: code, Errors: msgs}
}

// One case per row of vaultAnswers at least, each proving the row is the
// first that matches; the messages are those Vault v1.21.0 sends (see
// TestVaultAnswersAreTheTablesRows for the real ones).
func TestVaultAnswersTable(t *testing.T) {
	other := parsedKeyID{name: "transit/other", version: 1}
	tests := []struct {
		name  string
		f     failure
		row   string
		code  codes.Code
		wantS string // in the error's text
	}{
		{name: "encrypt 403 explained as a missing key => FailedPrecondition",
			f:   failure{call: callEncrypt, err: &vault.KeyNotFoundError{Key: "transit/k", Err: vaultErr("transit encrypt", 403, "permission denied")}},
			row: "transit key missing: encrypt refused with 403 and keys/<key> answers 404", code: codes.FailedPrecondition, wantS: "encrypt: transit key transit/k not found"},
		{name: "read 404 => FailedPrecondition naming the key",
			f:   failure{call: callReadKey, err: vaultErr("transit read key", 404)},
			row: "transit key or mount missing: 404", code: codes.FailedPrecondition, wantS: "read: transit key transit/k not found"},
		{name: "decrypt 404 no handler for route => FailedPrecondition",
			f:   failure{call: callDecrypt, err: vaultErr("transit decrypt", 404, "no handler for route \"transit/decrypt/k\". route entry not found.")},
			row: "transit key or mount missing: 404", code: codes.FailedPrecondition, wantS: "not found"},
		{name: "decrypt 400 encryption key not found => FailedPrecondition",
			f:   failure{call: callDecrypt, version: 1, err: vaultErr("transit decrypt", 400, "encryption key not found")},
			row: "transit key missing: 400 encryption key not found", code: codes.FailedPrecondition, wantS: "decrypt: transit key transit/k not found"},
		{name: "hmac 400 encryption key not found => FailedPrecondition",
			f:   failure{call: callHMAC, version: 1, err: vaultErr("transit hmac", 400, "encryption key not found")},
			row: "transit key missing: 400 encryption key not found", code: codes.FailedPrecondition},
		{name: "encrypt 400 not supported for key type => FailedPrecondition",
			f:   failure{call: callEncrypt, err: vaultErr("transit encrypt", 400, "message encryption not supported for key type ed25519")},
			row: "key type cannot encrypt or decrypt: 400 not supported for key type", code: codes.FailedPrecondition, wantS: "type cannot wrap"},
		{name: "decrypt 400 disallowed by policy => FailedPrecondition",
			f:   failure{call: callDecrypt, version: 1, err: vaultErr("transit decrypt", 400, "ciphertext or signature version is disallowed by policy (too old)")},
			row: "ciphertext's key version below min_decryption_version: 400 disallowed by policy", code: codes.FailedPrecondition, wantS: "min_decryption_version"},
		{name: "decrypt 400 version is too new => FailedPrecondition",
			f:   failure{call: callDecrypt, version: 99, err: vaultErr("transit decrypt", 400, "invalid ciphertext: version is too new")},
			row: "ciphertext's key version above the latest: 400 version is too new", code: codes.FailedPrecondition, wantS: "key version 99 does not exist"},
		{name: "decrypt 400 with another key's key_id => FailedPrecondition",
			f:   failure{call: callDecrypt, version: 1, reqKey: other, ours: true, err: vaultErr("transit decrypt", 400, "cipher: message authentication failed")},
			row: "ciphertext refused and its key_id names another transit key: 400", code: codes.FailedPrecondition, wantS: "encrypted with transit key transit/other"},
		{name: "decrypt 400 too old with another key's key_id => the version row wins",
			f:   failure{call: callDecrypt, version: 1, reqKey: other, ours: true, err: vaultErr("transit decrypt", 400, "ciphertext or signature version is disallowed by policy (too old)")},
			row: "ciphertext's key version below min_decryption_version: 400 disallowed by policy", code: codes.FailedPrecondition},
		{name: "decrypt 400 authentication failed => InvalidArgument",
			f:   failure{call: callDecrypt, version: 1, err: vaultErr("transit decrypt", 400, "cipher: message authentication failed")},
			row: "ciphertext refused: 400", code: codes.InvalidArgument, wantS: "tampered"},
		{name: "decrypt 400 from an rsa key => InvalidArgument",
			f:   failure{call: callDecrypt, version: 1, err: vaultErr("transit decrypt", 400, "failed to RSA decrypt the ciphertext: crypto/rsa: decryption error")},
			row: "ciphertext refused: 400", code: codes.InvalidArgument},
		{name: "encrypt 400 of another kind => Unavailable, as before",
			f:   failure{call: callEncrypt, err: vaultErr("transit encrypt", 400, "something new")},
			row: "Vault unreachable, sealed, overloaded, or any other answer", code: codes.Unavailable},
		{name: "decrypt 403 => Unavailable naming the policy path",
			f:   failure{call: callDecrypt, version: 1, err: vaultErr("transit decrypt", 403, "permission denied")},
			row: "token or policy refused the call: 403 permission denied", code: codes.Unavailable, wantS: `"update" on transit/decrypt/k`},
		{name: "read 403 => Unavailable naming read on keys",
			f:   failure{call: callReadKey, err: vaultErr("transit read key", 403, "permission denied")},
			row: "token or policy refused the call: 403 permission denied", code: codes.Unavailable, wantS: `"read" on transit/keys/k`},
		{name: "hmac 403 => Unavailable naming the flag",
			f:   failure{call: callHMAC, version: 2, err: vaultErr("transit hmac", 403, "permission denied")},
			row: "token or policy refused the call: 403 permission denied", code: codes.Unavailable, wantS: "-key-id-mode=hmac needs"},
		{name: "403 whose re-login failed => Unavailable, the login's reason kept",
			f:   failure{call: callEncrypt, err: &vault.ReauthError{Call: vaultErr("transit encrypt", 403, "permission denied"), Login: errors.New("approle login: 400 invalid secret id")}},
			row: "token refused with 403 and logging in again failed", code: codes.Unavailable, wantS: "encrypt with transit/k: approle login: 400 invalid secret id"},
		{name: "no answer => Unavailable",
			f:   failure{call: callDecrypt, version: 1, err: &vault.Error{Op: "transit decrypt", Addr: "http://127.0.0.1:1", Err: errors.New("connection refused")}},
			row: "Vault unreachable, sealed, overloaded, or any other answer", code: codes.Unavailable, wantS: "connection refused"},
		{name: "sealed 503 => Unavailable",
			f:   failure{call: callEncrypt, err: vaultErr("transit encrypt", 503, "Vault is sealed")},
			row: "Vault unreachable, sealed, overloaded, or any other answer", code: codes.Unavailable},
		{name: "not a Vault error => Unavailable",
			f:   failure{call: callEncrypt, err: errors.New("fingerprint: malformed")},
			row: "Vault unreachable, sealed, overloaded, or any other answer", code: codes.Unavailable},
	}
	p := New(nil, Config{Mount: "transit", Key: "k"})
	covered := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.f
			f.name, f.mount, f.key = p.name, p.mount, p.key
			if got := answerFor(&f).name; got != tt.row {
				t.Fatalf("row %q, want %q", got, tt.row)
			}
			covered[tt.row] = true
			err := p.grpcError(context.Background(), tt.f)
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.wantS) {
				t.Fatalf("grpcError = %v, want %v containing %q", err, tt.code, tt.wantS)
			}
			if strings.ContainsAny(status.Convert(err).Message(), "\n\t") {
				t.Fatalf("message spans lines: %q", err)
			}
		})
	}
	for i, row := range vaultAnswers {
		if !covered[row.name] {
			t.Errorf("row %q has no case above", row.name)
		}
		last := i == len(vaultAnswers)-1
		if !last && row.checked == "" {
			t.Errorf("row %q does not say which Vault release its answer was checked against", row.name)
		}
		if last && (row.calls != nil || row.status != 0 || row.message != "" || row.match != nil) {
			t.Errorf("the last row %q must match anything", row.name)
		}
		if row.message != strings.ToLower(row.message) {
			t.Errorf("row %q: message %q must be lower case (matching ignores case)", row.name, row.message)
		}
	}
}

func TestCallerDeadlineKeepsItsCodeOnlyForUnavailable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := New(nil, Config{Mount: "transit", Key: "k"})
	if err := p.grpcError(ctx, failure{call: callDecrypt, err: vaultErr("transit decrypt", 503, "sealed")}); status.Code(err) != codes.Canceled {
		t.Errorf("Unavailable row with the caller gone = %v, want Canceled", err)
	}
	if err := p.grpcError(ctx, failure{call: callDecrypt, err: vaultErr("transit decrypt", 400, "cipher: message authentication failed")}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Vault's definite answer with the caller gone = %v, want InvalidArgument", err)
	}
}
