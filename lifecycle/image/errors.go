package image

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// The reasons NewVerifier and Verify refuse. Each refusal matches one of
// them with errors.Is, and its message is one line that names the image (or
// the key), says what is wrong and what to do. Only usage errors caught
// before any I/O (invalid Options, a malformed image reference) match none.
var (
	// ErrKey means a key verification needs is unusable: the --key file is
	// missing or not a PEM public key, or (with --rekor-url) Rekor's public
	// key cannot be found.
	ErrKey = errors.New("unusable public key")
	// ErrRegistry means the registry could not be reached or refused a request
	// (network, TLS, credentials, timeout).
	ErrRegistry = errors.New("registry unavailable")
	// ErrNotFound means the registry has no such tag or digest.
	ErrNotFound = errors.New("image not found")
	// ErrNoSignature means neither a .sig tag nor a Sigstore bundle exists
	// for the image's digest. A tag moved to an unsigned image after signing ends
	// here: its signatures belong to the digest it used to name.
	ErrNoSignature = errors.New("no signature")
	// ErrUntrusted means signatures exist for the digest but none verifies:
	// another key signed, the signed payload names another digest, the
	// bundle is an attestation rather than a signature, or (with
	// --rekor-url) it has no transparency-log entry.
	ErrUntrusted = errors.New("no signature verifies with the key")
	// ErrFlagInterface means an image in the reference does not declare the
	// flag interface kmsctl render passes, or declares another.
	ErrFlagInterface = errors.New("flag interface mismatch")
)

// refusal is an error with a one-line message written for the operator,
// matching a sentinel above and wrapping the library error behind it, if
// any, so callers can still inspect it.
type refusal struct {
	kind  error
	msg   string
	cause error
}

func (e *refusal) Error() string { return e.msg }

func (e *refusal) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

func refuse(kind error, cause error, msg string) error {
	return &refusal{kind: kind, msg: oneLine(msg), cause: cause}
}

// oneLine folds a message onto one line: library errors (cosign joins the
// reasons of several failed signatures with newlines) would otherwise break
// the one-line contract of kmsctl's errors.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// short cuts a library error to a readable length for a one-line message.
func short(err error) string {
	const max = 300
	s := oneLine(err.Error())
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}
