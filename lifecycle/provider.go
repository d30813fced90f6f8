package lifecycle

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/url"
	"slices"
	"strings"
)

// maxKeyNameInProvider bounds the key-name part of a provider name so the
// whole name, "vault-" + key + "-" + 8 hex digits, fits in 63 bytes: it is
// also a label value and part of the pod name.
const maxKeyNameInProvider = 63 - len("vault-") - len("-") - 8

// ProviderName is the EncryptionConfiguration provider name of one Vault
// transit key: "vault-<key name>-<8 hex digits>". The API server writes it
// into every value it stores ("k8s:enc:kms:v2:<name>:"), so it must never
// change for a key, and two different keys must never share it: the digits
// are the start of the SHA-256 of the key's identity (the Vault cluster's
// addresses, the namespace and the key path), the key name only makes it
// readable.
//
// The addresses are normalised (scheme and host lower case, default port
// made explicit, trailing slash dropped), deduplicated and sorted, so
// listing the same Vault nodes in another order or spelling gives the same
// name. The key name is reduced to lower-case letters, digits and dashes,
// which is what pod names and label values accept; the hash still covers
// the key path as written, so two keys that reduce alike stay apart.
func ProviderName(addresses []string, namespace, keyPath string) string {
	norm := make([]string, 0, len(addresses))
	for _, a := range addresses {
		norm = append(norm, normalizeAddress(a))
	}
	slices.Sort(norm)
	norm = slices.Compact(norm)
	sum := sha256.Sum256([]byte(strings.Join(norm, ",") + "|" + namespace + "|" + keyPath))

	key := keyPath
	if i := strings.LastIndex(keyPath, "/keys/"); i >= 0 {
		key = keyPath[i+len("/keys/"):]
	}
	return "vault-" + sanitizeKeyName(key) + "-" + hex.EncodeToString(sum[:])[:8]
}

// normalizeAddress spells a Vault address one way. An address that does not
// parse is only trimmed and lower-cased: validation refuses it anyway, and
// the name must still be a pure function of its input.
func normalizeAddress(a string) string {
	a = strings.TrimSpace(a)
	u, err := url.Parse(a)
	if err != nil || u.Host == "" {
		return strings.ToLower(a)
	}
	scheme := strings.ToLower(u.Scheme)
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host + strings.TrimSuffix(u.EscapedPath(), "/")
}

// sanitizeKeyName maps a transit key name to [a-z0-9-], without leading,
// trailing or repeated dashes, at most maxKeyNameInProvider bytes.
func sanitizeKeyName(key string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(key) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	s := b.String()
	if len(s) > maxKeyNameInProvider {
		s = s[:maxKeyNameInProvider]
	}
	s = strings.Trim(s, "-")
	if s == "" {
		return "key"
	}
	return s
}
