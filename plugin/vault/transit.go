package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

// Transit is one transit key on one mount.
type Transit struct {
	c    *Client
	name string // "<mount>/<key>", for errors
	base string // "<mount>/"
	key  string // path-escaped key name
}

// Transit returns the operations on key under mount.
func (c *Client) Transit(mount, key string) *Transit {
	return &Transit{
		c:    c,
		name: strings.Trim(mount, "/") + "/" + key,
		base: strings.Trim(mount, "/") + "/",
		key:  url.PathEscape(key),
	}
}

// KeyNotFoundError says the transit key does not exist: it was deleted, or
// never created. The client returns it only where Vault's answer alone
// cannot say so (see explainDenied); every other answer comes back as an
// *Error, and the plugin's table of Vault's answers (plugin/errors.go)
// decides what it means.
type KeyNotFoundError struct {
	Key string // "<mount>/<key>"
	Err error  // Vault's answer
}

func (e *KeyNotFoundError) Error() string {
	return fmt.Sprintf("transit key %s not found (%v)", e.Key, e.Err)
}

func (e *KeyNotFoundError) Unwrap() error { return e.Err }

// IsKeyNotFound reports whether err says the transit key does not exist.
func IsKeyNotFound(err error) bool {
	var nf *KeyNotFoundError
	return errors.As(err, &nf)
}

// explainDenied is asked, before a re-login, why Vault refused a transit
// encrypt with 403. Encrypting to a missing key would create it, which
// needs "create", so Vault v1.21.0 answers a plugin without it 403
// "permission denied" when the key is missing; when the key's metadata
// (which the token may read) is missing too, the key is gone, not the
// token, and it says so instead of logging in again.
func (t *Transit) explainDenied(ctx context.Context, denied error) error {
	err := t.c.do(ctx, "transit read key", func(ctx context.Context, n node) error {
		resp, err := n.transit.Logical().ReadRawWithContext(ctx, t.base+"keys/"+t.key)
		return decodeBody(resp, err, &struct{}{})
	})
	if IsNotFound(err) {
		return &KeyNotFoundError{Key: t.name, Err: denied}
	}
	return nil
}

// KeyInfo is what the plugin needs to know about the transit key.
type KeyInfo struct {
	LatestVersion        int
	MinDecryptionVersion int
	Type                 string
	// SupportsEncryption and SupportsDecryption say whether the key's type
	// can wrap and unwrap at all (an ed25519 or hmac key cannot).
	SupportsEncryption, SupportsDecryption bool
	// Created is each version's creation time in unix seconds, from the
	// "keys" map; it holds only versions Vault still decrypts with
	// (min_decryption_version and up), and none for key types whose read
	// lists no versions (hmac). A deleted and re-created key has new ones.
	Created map[int]int64
}

type envelope[T any] struct {
	Data T `json:"data"`
}

// post sends body as JSON and decodes the response's "data" into out.
func post[T any](ctx context.Context, n node, path string, body any, out *T) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	resp, err := n.transit.Logical().WriteRawWithContext(ctx, path, raw)
	return decode(resp, err, out)
}

func decode[T any](resp *api.Response, err error, out *T) error {
	var env envelope[T]
	if err := decodeBody(resp, err, &env); err != nil {
		return err
	}
	*out = env.Data
	return nil
}

// decodeBody decodes a whole Vault response into v and always drains and
// closes the body so the connection goes back to the pool.
func decodeBody(resp *api.Response, err error, v any) error {
	if resp != nil && resp.Body != nil {
		defer func() {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	if err != nil {
		return err
	}
	if resp == nil || resp.Body == nil {
		return fmt.Errorf("empty response")
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// Encrypt wraps plaintext and returns Vault's "vault:vN:..." ciphertext.
func (t *Transit) Encrypt(ctx context.Context, plaintext []byte) (string, error) {
	var out struct {
		Ciphertext string `json:"ciphertext"`
	}
	err := t.c.doAuthedExplained(ctx, "transit encrypt", func(ctx context.Context, n node) error {
		return post(ctx, n, t.base+"encrypt/"+t.key, struct {
			Plaintext string `json:"plaintext"`
		}{base64.StdEncoding.EncodeToString(plaintext)}, &out)
	}, t.explainDenied)
	if err != nil {
		return "", err
	}
	if out.Ciphertext == "" {
		return "", fmt.Errorf("transit encrypt: Vault returned no ciphertext")
	}
	return out.Ciphertext, nil
}

// Decrypt unwraps a "vault:vN:..." ciphertext.
func (t *Transit) Decrypt(ctx context.Context, ciphertext string) ([]byte, error) {
	var out struct {
		Plaintext string `json:"plaintext"`
	}
	err := t.c.doAuthed(ctx, "transit decrypt", func(ctx context.Context, n node) error {
		return post(ctx, n, t.base+"decrypt/"+t.key, struct {
			Ciphertext string `json:"ciphertext"`
		}{ciphertext}, &out)
	})
	if err != nil {
		return nil, err
	}
	pt, err := base64.StdEncoding.DecodeString(out.Plaintext)
	if err != nil {
		return nil, fmt.Errorf("transit decrypt: Vault returned plaintext that is not base64")
	}
	return pt, nil
}

// ReadKey reads the key's metadata. It needs only "read" on the key.
func (t *Transit) ReadKey(ctx context.Context) (KeyInfo, error) {
	var out struct {
		LatestVersion        int                        `json:"latest_version"`
		MinDecryptionVersion int                        `json:"min_decryption_version"`
		Type                 string                     `json:"type"`
		SupportsEncryption   bool                       `json:"supports_encryption"`
		SupportsDecryption   bool                       `json:"supports_decryption"`
		Keys                 map[string]json.RawMessage `json:"keys"`
	}
	err := t.c.doAuthed(ctx, "transit read key", func(ctx context.Context, n node) error {
		resp, err := n.transit.Logical().ReadRawWithContext(ctx, t.base+"keys/"+t.key)
		return decode(resp, err, &out)
	})
	if err != nil {
		return KeyInfo{}, err
	}
	if out.LatestVersion < 1 {
		return KeyInfo{}, fmt.Errorf("transit read key: Vault reported latest_version %d", out.LatestVersion)
	}
	info := KeyInfo{
		LatestVersion:        out.LatestVersion,
		MinDecryptionVersion: out.MinDecryptionVersion,
		Type:                 out.Type,
		SupportsEncryption:   out.SupportsEncryption,
		SupportsDecryption:   out.SupportsDecryption,
		Created:              make(map[int]int64, len(out.Keys)),
	}
	for v, raw := range out.Keys {
		version, err := strconv.Atoi(v)
		if err != nil || version < 1 {
			return KeyInfo{}, fmt.Errorf("transit read key: Vault listed key version %q", v)
		}
		created, err := contract.CreationTime(raw)
		if err != nil {
			return KeyInfo{}, fmt.Errorf("transit read key: version %d of %s key: %w", version, out.Type, err)
		}
		info.Created[version] = created
	}
	return info, nil
}

// HMAC computes the HMAC of input under one version of the key, returning
// Vault's "vault:vN:<base64>" string.
func (t *Transit) HMAC(ctx context.Context, version int, input []byte) (string, error) {
	var out struct {
		HMAC string `json:"hmac"`
	}
	err := t.c.doAuthed(ctx, "transit hmac", func(ctx context.Context, n node) error {
		return post(ctx, n, t.base+"hmac/"+t.key, struct {
			Input      string `json:"input"`
			KeyVersion int    `json:"key_version"`
		}{base64.StdEncoding.EncodeToString(input), version}, &out)
	})
	if err != nil {
		return "", err
	}
	if out.HMAC == "" {
		return "", fmt.Errorf("transit hmac: Vault returned no hmac")
	}
	return out.HMAC, nil
}
