package plugin

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Limits from the KMSv2 contract and Vault transit.
const (
	// MaxCiphertext is the largest ciphertext the API server accepts.
	MaxCiphertext = 1024
	// maxPlaintext keeps Vault's ciphertext for it (base64 of nonce, data
	// and tag, plus the "vault:vN:" prefix) under MaxCiphertext. The API
	// server sends 32-byte DEK seeds.
	maxPlaintext = 512
	// minSealed is the shortest sealed payload transit produces: a 12-byte
	// nonce and a 16-byte tag around an empty message.
	minSealed = 28
)

// errCiphertext marks a ciphertext that is malformed before Vault sees it.
var errCiphertext = errors.New("invalid ciphertext")

// parseCiphertext checks that b is a Vault transit ciphertext
// ("vault:v<N>:<base64>") that fits the KMSv2 contract, and returns N.
func parseCiphertext(b []byte) (int, error) {
	switch {
	case len(b) == 0:
		return 0, fmt.Errorf("%w: ciphertext is empty", errCiphertext)
	case len(b) > MaxCiphertext:
		return 0, fmt.Errorf("%w: ciphertext is %d bytes, more than the %d KMSv2 allows", errCiphertext, len(b), MaxCiphertext)
	}
	s := string(b)
	rest, ok := strings.CutPrefix(s, "vault:v")
	if !ok {
		return 0, fmt.Errorf("%w: not a Vault transit ciphertext (no \"vault:v\" prefix)", errCiphertext)
	}
	num, body, ok := strings.Cut(rest, ":")
	if !ok {
		return 0, fmt.Errorf("%w: no \":\" after the key version", errCiphertext)
	}
	version, err := parseVersion(num)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errCiphertext, err)
	}
	sealed, err := base64.StdEncoding.Strict().DecodeString(body)
	if err != nil {
		return 0, fmt.Errorf("%w: payload is not base64", errCiphertext)
	}
	if len(sealed) < minSealed {
		return 0, fmt.Errorf("%w: payload is %d bytes, shorter than any transit ciphertext (truncated?)", errCiphertext, len(sealed))
	}
	return version, nil
}

// parseVersion parses a transit key version: a positive decimal without
// leading zeros or sign, as Vault writes it.
func parseVersion(s string) (int, error) {
	if s == "" || len(s) > 9 || s[0] == '0' {
		return 0, fmt.Errorf("key version %q is not a positive number", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("key version %q is not a positive number", s)
		}
	}
	return strconv.Atoi(s)
}

// keyIDPrefix starts every key_id this plugin issues.
const keyIDPrefix = "vault-transit:"

// maxKeyName bounds mount+key so key_id stays far below the contract's
// 1024 bytes.
const maxKeyName = 512

// keyID names one version of one transit key for the API server. It reads
//
//	vault-transit:<mount>/<key>:v<N>:<fingerprint>
//
// where fingerprint is the start of the transit HMAC of a fixed label under
// version N. The HMAC depends on the version's key material, so a key that
// is deleted and re-created under the same name gets new key_ids, and it
// reveals nothing about the key.
func keyID(mount, key string, version int, fingerprint []byte) string {
	return fmt.Sprintf("%s%s/%s:v%d:%s", keyIDPrefix, strings.Trim(mount, "/"), key, version, hex.EncodeToString(fingerprint))
}

// parsedKeyID is the part of a key_id this plugin relies on.
type parsedKeyID struct {
	name    string // "<mount>/<key>"
	version int
}

// parseKeyID parses a key_id issued by keyID; ok is false for key_ids of any
// other format (for example written by another plugin before a migration).
func parseKeyID(id string) (parsedKeyID, bool) {
	rest, ok := strings.CutPrefix(id, keyIDPrefix)
	if !ok {
		return parsedKeyID{}, false
	}
	// Parse from the right: mount and key names may contain ':'.
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return parsedKeyID{}, false
	}
	if _, err := hex.DecodeString(rest[i+1:]); err != nil || i+1 == len(rest) {
		return parsedKeyID{}, false
	}
	rest = rest[:i]
	j := strings.LastIndexByte(rest, ':')
	if j < 0 || !strings.HasPrefix(rest[j+1:], "v") {
		return parsedKeyID{}, false
	}
	v, err := parseVersion(rest[j+2:])
	if err != nil {
		return parsedKeyID{}, false
	}
	return parsedKeyID{name: rest[:j], version: v}, true
}

// fingerprintLabel is the fixed input whose HMAC fingerprints a key version.
var fingerprintLabel = []byte("vault-kms-plugin key_id fingerprint v1")

// fingerprintLen bytes of the HMAC go into the key_id: 80 bits make an
// accidental collision between two key versions negligible.
const fingerprintLen = 10

// fingerprintFromHMAC extracts the fingerprint from Vault's "vault:vN:<b64>".
func fingerprintFromHMAC(hmac string, version int) ([]byte, error) {
	prefix := fmt.Sprintf("vault:v%d:", version)
	body, ok := strings.CutPrefix(hmac, prefix)
	if !ok {
		return nil, fmt.Errorf("Vault HMAC is not for key version %d", version)
	}
	sum, err := base64.StdEncoding.DecodeString(body)
	if err != nil || len(sum) < fingerprintLen {
		return nil, fmt.Errorf("Vault HMAC for key version %d is malformed", version)
	}
	return sum[:fingerprintLen], nil
}
