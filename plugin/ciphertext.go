package plugin

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
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
const keyIDPrefix = contract.KeyIDPrefix

// maxKeyName bounds mount+key so key_id stays far below the contract's
// 1024 bytes.
const maxKeyName = 512

// A key_id names one version of one transit key for the API server. Both
// forms read
//
//	vault-transit:<mount>/<key>:v<N>:<tag>
//
// and differ in the tag, chosen by Config.KeyIDMode:
//
//   - metadata (the default): the version's creation time in unix seconds,
//     in decimal, as "read" on <mount>/keys/<key> reports it, for example
//     vault-transit:transit/kubernetes:v3:1795459163. Every node reads the
//     same record, so every node and every restart derives the same key_id,
//     with nothing beyond HashiCorp's minimum policy. A key deleted and
//     re-created under the same name gets new key_ids, unless it is
//     re-created within the same second as the version it replaces.
//   - hmac: the first 10 bytes of the transit HMAC of a fixed label under
//     version N, in hex, for example
//     vault-transit:transit/kubernetes:v3:3f1c0a9be27d5c4410aa. It depends
//     on the key material itself, so no two keys ever share a key_id, at the
//     price of "update" on <mount>/hmac/<key>.
//
// Both tags use only the characters 0-9a-f, and the HMAC tag is always 20
// of them while the creation time has 10 until the year 2286, so the forms
// never collide. Staying within 0-9a-f matters beyond this package: kmsctl's
// etcd scan (lifecycle/scan) and the e2e suite parse key_ids as
// vault-transit:<mount>/<key>:v<N>:<hex>, and an object whose key_id the
// scan cannot read is not counted as needing its key version.

// hmacKeyID is the hmac form of the key_id of version of mount/key.
func hmacKeyID(mount, key string, version int, fingerprint []byte) string {
	return formatKeyID(mount, key, version, hex.EncodeToString(fingerprint))
}

// metadataKeyID is the metadata form of the key_id of version of mount/key,
// created at the given unix second.
func metadataKeyID(mount, key string, version int, created int64) string {
	return contract.MetadataKeyID(mount, key, version, created)
}

func formatKeyID(mount, key string, version int, tag string) string {
	return contract.KeyID(mount, key, version, tag)
}

// parsedKeyID is the part of a key_id this plugin relies on.
type parsedKeyID struct {
	name    string // "<mount>/<key>"
	version int
}

// parseKeyID parses a key_id of either form; ok is false for key_ids of any
// other format (for example written by another plugin before a migration).
// It accepts both forms whatever the plugin's mode, so the consistency
// check in Decrypt covers every key_id the plugin has ever issued.
func parseKeyID(id string) (parsedKeyID, bool) {
	rest, ok := strings.CutPrefix(id, keyIDPrefix)
	if !ok {
		return parsedKeyID{}, false
	}
	// Parse from the right: mount and key names may contain ':'.
	i := strings.LastIndexByte(rest, ':')
	if i < 0 || !isKeyIDTag(rest[i+1:]) {
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

// isKeyIDTag reports whether tag is a fingerprint in hex (whole bytes, as
// every plugin version has written it) or a creation time in decimal.
func isKeyIDTag(tag string) bool {
	if tag == "" {
		return false
	}
	if _, err := hex.DecodeString(tag); err == nil {
		return true
	}
	for _, c := range tag {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
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
