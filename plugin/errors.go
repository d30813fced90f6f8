package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

// call is a transit operation the plugin makes.
type call string

const (
	callEncrypt call = "encrypt"
	callDecrypt call = "decrypt"
	callReadKey call = "read"
	callHMAC    call = "hmac"
)

// transitError is a failed transit call made on the way to another result
// (a key_id, a health probe), so the table below knows which call failed.
type transitError struct {
	call    call
	version int // hmac: the key version fingerprinted
	err     error
}

func (e *transitError) Error() string { return e.err.Error() }
func (e *transitError) Unwrap() error { return e.err }

// failure is a failed transit call and what the plugin knew making it.
type failure struct {
	call    call
	version int // decrypt: the ciphertext's key version; hmac: the version
	err     error
	// Decrypt only: the request's key_id, when it has this plugin's form.
	reqKey parsedKeyID
	ours   bool

	// Set by the plugin: the key it uses.
	name, mount, key string
}

// answer is Vault's answer inside f.err, nil when Vault did not answer.
func (f *failure) answer() *vault.Error {
	var ve *vault.Error
	if errors.As(f.err, &ve) {
		return ve
	}
	return nil
}

// what names the failed call for an error's text.
func (f *failure) what() string {
	switch f.call {
	case callEncrypt:
		return "encrypt with " + f.name
	case callDecrypt:
		return "decrypt with " + f.name
	case callHMAC:
		return fmt.Sprintf("key_id of %s v%d", f.name, f.version)
	default:
		return "read transit key " + f.name
	}
}

// vaultAnswer is one row of vaultAnswers.
type vaultAnswer struct {
	// name says what the answer means; the table test is named after it.
	name string
	// calls the row applies to; none: every call.
	calls []call
	// status is Vault's HTTP status; 0 matches any answer, and none.
	status int
	// message is a substring of one of Vault's messages (any case); "": any.
	message string
	// match, if set, must hold as well: what the plugin knows beyond
	// Vault's answer.
	match func(f *failure) bool
	// checked is the Vault release the status and message were seen on
	// (integration test TestVaultAnswersAreTheTablesRows, with the binary
	// in .build/bin): re-check the rows when the supported Vault changes.
	checked string
	code    codes.Code
	// say is the error's text, one line: what failed and what to do.
	say func(f *failure) string
}

// vaultAnswers maps Vault's answers to a failed transit call to the gRPC
// status the API server gets; the first row that matches decides. It is
// the only place that reads Vault's error messages. A caller whose own
// deadline passed or who cancelled keeps that code for an Unavailable
// row (see grpcError); that is the caller's state, not Vault's answer.
var vaultAnswers = []vaultAnswer{
	{
		name:    "transit key missing: encrypt refused with 403 and keys/<key> answers 404",
		match:   func(f *failure) bool { return vault.IsKeyNotFound(f.err) },
		checked: "v1.21.0",
		// No retry helps until someone restores the key, and the text
		// names it ("transit key <mount>/<key> not found").
		code: codes.FailedPrecondition,
		say:  keyMissing,
	},
	{
		// Read keys/<key> of a missing key: 404 with no message; any call
		// under a mount that does not exist: 404 "no handler for route".
		name:    "transit key or mount missing: 404",
		status:  http.StatusNotFound,
		checked: "v1.21.0",
		code:    codes.FailedPrecondition,
		say:     keyMissing,
	},
	{
		// decrypt and hmac of a missing key (single and batch_input);
		// encrypt says it only where it cannot create the key.
		name:    "transit key missing: 400 encryption key not found",
		status:  http.StatusBadRequest,
		message: "encryption key not found",
		checked: "v1.21.0",
		code:    codes.FailedPrecondition,
		say:     keyMissing,
	},
	{
		// "message encryption not supported for key type ed25519", and
		// "message decryption ..." likewise.
		name:    "key type cannot encrypt or decrypt: 400 not supported for key type",
		calls:   []call{callEncrypt, callDecrypt},
		status:  http.StatusBadRequest,
		message: "not supported for key type",
		checked: "v1.21.0",
		code:    codes.FailedPrecondition,
		say: func(f *failure) string {
			return fmt.Sprintf("%s: the transit key's type cannot wrap DEK seeds; use an aes256-gcm96, aes128-gcm96, chacha20-poly1305 or rsa key (%v)", f.what(), f.err)
		},
	},
	{
		// "ciphertext or signature version is disallowed by policy (too old)"
		name:    "ciphertext's key version below min_decryption_version: 400 disallowed by policy",
		calls:   []call{callDecrypt},
		status:  http.StatusBadRequest,
		message: "disallowed by policy",
		checked: "v1.21.0",
		code:    codes.FailedPrecondition,
		say: func(f *failure) string {
			return fmt.Sprintf("%s: key version %d is below the key's min_decryption_version; lower it to read this object (%v)", f.what(), f.version, f.err)
		},
	},
	{
		// "invalid ciphertext: version is too new"
		name:    "ciphertext's key version above the latest: 400 version is too new",
		calls:   []call{callDecrypt},
		status:  http.StatusBadRequest,
		message: "version is too new",
		checked: "v1.21.0",
		code:    codes.FailedPrecondition,
		say: func(f *failure) string {
			return fmt.Sprintf("%s: key version %d does not exist (%v)", f.what(), f.version, f.err)
		},
	},
	{
		name:    "ciphertext refused and its key_id names another transit key: 400",
		calls:   []call{callDecrypt},
		status:  http.StatusBadRequest,
		match:   func(f *failure) bool { return f.ours && f.reqKey.name != f.name },
		checked: "v1.21.0",
		code:    codes.FailedPrecondition,
		say: func(f *failure) string {
			return fmt.Sprintf("decrypt: the object was encrypted with transit key %s but the plugin uses %s (%v)", f.reqKey.name, f.name, f.err)
		},
	},
	{
		// "cipher: message authentication failed" (aes), "chacha20poly1305:
		// message authentication failed", "failed to RSA decrypt the
		// ciphertext: crypto/rsa: decryption error", "invalid ciphertext:
		// ..." for a payload too short to be one.
		name:    "ciphertext refused: 400",
		calls:   []call{callDecrypt},
		status:  http.StatusBadRequest,
		checked: "v1.21.0",
		code:    codes.InvalidArgument,
		say: func(f *failure) string {
			return fmt.Sprintf("%s: Vault refused the ciphertext: it was tampered with or is not from this key (%v)", f.what(), f.err)
		},
	},
	{
		// The token was refused and no new one could be had: the login's
		// reason (rejected credential, locked-out role, Vault down) is the
		// one to act on, not the policy.
		name:    "token refused with 403 and logging in again failed",
		status:  http.StatusForbidden,
		match:   func(f *failure) bool { var re *vault.ReauthError; return errors.As(f.err, &re) },
		checked: "v1.21.0",
		code:    codes.Unavailable,
		say: func(f *failure) string {
			var re *vault.ReauthError
			errors.As(f.err, &re)
			return fmt.Sprintf("%s: %v (Vault refused the token: %v)", f.what(), re.Login, re.Call)
		},
	},
	{
		// "permission denied"; with "invalid token" too when the token is
		// unknown. The client has already logged in again once when a new
		// token could help, so what is left is usually the policy.
		name:    "token or policy refused the call: 403 permission denied",
		status:  http.StatusForbidden,
		checked: "v1.21.0",
		code:    codes.Unavailable,
		say:     denied,
	},
	{
		name: "Vault unreachable, sealed, overloaded, or any other answer",
		code: codes.Unavailable,
		say:  func(f *failure) string { return fmt.Sprintf("%s: %v", f.what(), f.err) },
	},
}

// matches reports whether row a applies to f.
func (a *vaultAnswer) matches(f *failure) bool {
	if len(a.calls) > 0 && !slices.Contains(a.calls, f.call) {
		return false
	}
	ve := f.answer()
	if a.status != 0 && (ve == nil || ve.Status != a.status) {
		return false
	}
	if a.message != "" && (ve == nil || !slices.ContainsFunc(ve.Errors, func(m string) bool {
		return strings.Contains(strings.ToLower(m), a.message)
	})) {
		return false
	}
	return a.match == nil || a.match(f)
}

// answerFor returns the row of vaultAnswers that decides f.
func answerFor(f *failure) *vaultAnswer {
	for i := range vaultAnswers {
		if vaultAnswers[i].matches(f) {
			return &vaultAnswers[i]
		}
	}
	return &vaultAnswers[len(vaultAnswers)-1] // matches anything; the table test checks it
}

// failureOf describes err from call, letting a transitError inside it say
// which transit call really failed.
func (p *Plugin) failureOf(c call, err error) failure {
	f := failure{call: c, err: err, name: p.name, mount: p.mount, key: p.key}
	var te *transitError
	if errors.As(err, &te) {
		f.call, f.version, f.err = te.call, te.version, te.err
	}
	return f
}

// grpcError is the status the API server gets for f.
func (p *Plugin) grpcError(ctx context.Context, f failure) error {
	f.name, f.mount, f.key = p.name, p.mount, p.key
	a := answerFor(&f)
	code := a.code
	if ctxErr := ctx.Err(); ctxErr != nil && code == codes.Unavailable {
		// The caller's own deadline or cancellation keeps its code.
		code = status.FromContextError(ctxErr).Code()
	}
	return status.Error(code, a.say(&f))
}

func keyMissing(f *failure) string {
	if vault.IsKeyNotFound(f.err) {
		return fmt.Sprintf("%s: %v", f.call, f.err)
	}
	return fmt.Sprintf("%s: transit key %s not found (%v)", f.call, f.name, f.err)
}

// denied names the policy path and capability the call needs first, since
// Status truncates long texts, then Vault's answer.
func denied(f *failure) string {
	path, capability := f.mount+"/"+string(f.call)+"/"+f.key, "update"
	switch f.call {
	case callReadKey:
		path, capability = f.mount+"/keys/"+f.key, "read"
	case callHMAC:
		return fmt.Sprintf("%s: -key-id-mode=hmac needs %q on %s (grant it or use -key-id-mode=metadata): %v", f.what(), capability, path, f.err)
	}
	return fmt.Sprintf("%s: the token's policy must grant %q on %s: %v", f.what(), capability, path, f.err)
}
