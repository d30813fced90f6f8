package scan

import (
	"bytes"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	kmsv2api "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
)

// Class is what kind of value kube-apiserver stored, as far as the prefix
// and the KMSv2 envelope tell without decrypting.
type Class string

// The classes, one per transformer prefix of k8s.io/apiserver's
// EncryptionConfiguration, plus identity and malformed.
const (
	// ClassKMSv2 is "k8s:enc:kms:v2:<provider>:" + an EncryptedObject.
	ClassKMSv2 Class = "kms-v2"
	// ClassKMSv1 is "k8s:enc:kms:v1:<provider>:" (the deprecated KMS v1).
	ClassKMSv1 Class = "kms-v1"
	// ClassAESCBC, ClassAESGCM and ClassSecretbox are the local-key providers.
	ClassAESCBC    Class = "aescbc"
	ClassAESGCM    Class = "aesgcm"
	ClassSecretbox Class = "secretbox"
	// ClassIdentity is a value stored without encryption.
	ClassIdentity Class = "identity"
	// ClassMalformed starts with an encryption prefix but what follows
	// cannot be decoded; no provider can read it as it is.
	ClassMalformed Class = "malformed"
)

// classRank orders classes in reports: ours first, unreadable last.
var classRank = map[Class]int{
	ClassKMSv2: 0, ClassKMSv1: 1, ClassAESCBC: 2, ClassAESGCM: 3,
	ClassSecretbox: 4, ClassIdentity: 5, ClassMalformed: 6,
}

// encryptionPrefixes are k8s.io/apiserver's transformer prefixes
// (pkg/server/options/encryptionconfig: "<prefix><provider name>:").
var encryptionPrefixes = []struct {
	prefix string
	class  Class
}{
	{"k8s:enc:kms:v2:", ClassKMSv2},
	{"k8s:enc:kms:v1:", ClassKMSv1},
	{"k8s:enc:aescbc:v1:", ClassAESCBC},
	{"k8s:enc:aesgcm:v1:", ClassAESGCM},
	{"k8s:enc:secretbox:v1:", ClassSecretbox},
}

// Reasons a value is ClassMalformed. They are a fixed vocabulary, so reports
// can group by them.
const (
	ReasonNoProviderName    = "no provider name after the prefix"
	ReasonUndecodable       = "EncryptedObject does not decode"
	ReasonNoKeyID           = "EncryptedObject has no key_id"
	ReasonNoEncryptedDEK    = "EncryptedObject has no encrypted DEK source"
	ReasonNoEncryptedData   = "EncryptedObject has no encrypted data"
	ReasonUnknownDEKSrcType = "EncryptedObject has an unknown DEK source type"
)

// Stored is what Classify tells about one stored value.
type Stored struct {
	Class Class
	// Provider is the EncryptionConfiguration provider name from the
	// prefix; empty for identity and when the prefix has none.
	Provider string
	// KeyID is the KMSv2 key_id (ClassKMSv2 only).
	KeyID string
	// TransitKey is "<mount>/<key>" when KeyID has this plugin's form
	// (vault-transit:<mount>/<key>:v<N>:<hex HMAC or decimal creation time>), else empty.
	TransitKey string
	// TransitVersion is N of the "vault:v<N>:" prefix of the encrypted DEK
	// source: the transit key version Vault needs to unwrap it. 0 means
	// unknown: the DEK source was not wrapped by Vault transit.
	TransitVersion int
	// DEKSourceType is the EncryptedObject's encryptedDEKSourceType name
	// (AES_GCM_KEY or HKDF_SHA256_XNONCE_AES_GCM_SEED).
	DEKSourceType string
	// Reason says why a ClassMalformed value is malformed.
	Reason string
}

// Classify tells, without decrypting, how kube-apiserver stored value. It
// never fails: a value it cannot decode is ClassMalformed with a Reason, and
// a value with no encryption prefix is ClassIdentity (the API server's
// identity provider stores objects as they are).
func Classify(value []byte) Stored {
	for _, p := range encryptionPrefixes {
		rest, ok := bytes.CutPrefix(value, []byte(p.prefix))
		if !ok {
			continue
		}
		// Provider names cannot contain ':' (the API server's validation),
		// so the first ':' ends the name.
		name, body, ok := bytes.Cut(rest, []byte(":"))
		if !ok || len(name) == 0 {
			return Stored{Class: ClassMalformed, Reason: ReasonNoProviderName}
		}
		if p.class != ClassKMSv2 {
			return Stored{Class: p.class, Provider: string(name)}
		}
		return classifyKMSv2(string(name), body)
	}
	return Stored{Class: ClassIdentity}
}

// classifyKMSv2 decodes the EncryptedObject after a KMSv2 prefix and makes
// the presence and type checks the API server makes before it decrypts
// (envelope/kmsv2 ValidateEncryptedObject), so a value it would refuse for
// those reasons is malformed here too. Size limits are not checked: they
// say nothing about which key the value needs.
func classifyKMSv2(provider string, body []byte) Stored {
	malformed := func(reason string) Stored {
		return Stored{Class: ClassMalformed, Provider: provider, Reason: reason}
	}
	var obj kmsv2api.EncryptedObject
	if err := proto.Unmarshal(body, &obj); err != nil {
		return malformed(ReasonUndecodable)
	}
	switch {
	case obj.KeyID == "":
		return malformed(ReasonNoKeyID)
	case len(obj.EncryptedDEKSource) == 0:
		return malformed(ReasonNoEncryptedDEK)
	case len(obj.EncryptedData) == 0:
		return malformed(ReasonNoEncryptedData)
	}
	typ, ok := kmsv2api.EncryptedDEKSourceType_name[int32(obj.EncryptedDEKSourceType)]
	if !ok {
		return malformed(ReasonUnknownDEKSrcType)
	}
	return Stored{
		Class:          ClassKMSv2,
		Provider:       provider,
		KeyID:          obj.KeyID,
		TransitKey:     transitKeyOf(obj.KeyID),
		TransitVersion: transitVersionOf(obj.EncryptedDEKSource),
		DEKSourceType:  typ,
	}
}

// transitVersionOf returns N of a Vault transit ciphertext "vault:v<N>:...",
// or 0 if src is not one. N is a positive decimal without sign or leading
// zero, as Vault writes it.
func transitVersionOf(src []byte) int {
	rest, ok := bytes.CutPrefix(src, []byte("vault:v"))
	if !ok {
		return 0
	}
	num, _, ok := bytes.Cut(rest, []byte(":"))
	if !ok {
		return 0
	}
	return parseVersion(string(num))
}

// transitKeyOf returns "<mount>/<key>" of a key_id of this plugin's forms,
// vault-transit:<mount>/<key>:v<N>:<suffix>, where suffix is hex (the HMAC
// fingerprint of -key-id-mode=hmac) or decimal (the version's creation time
// in unix seconds, the default mode), or "" for any other key_id. It
// parses from the right because mount and key names may contain ':'. The
// sidecar's own parser lives in plugin/; the lifecycle shares no code with
// it, only the format.
func transitKeyOf(keyID string) string {
	rest, ok := strings.CutPrefix(keyID, "vault-transit:")
	if !ok {
		return ""
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 || i+1 == len(rest) || !isHex(rest[i+1:]) {
		return ""
	}
	rest = rest[:i]
	j := strings.LastIndexByte(rest, ':')
	if j <= 0 || !strings.HasPrefix(rest[j+1:], "v") || parseVersion(rest[j+2:]) == 0 {
		return ""
	}
	return rest[:j]
}

// parseVersion parses a positive decimal without sign or leading zero, at
// most 9 digits; 0 means it is not one.
func parseVersion(s string) int {
	if s == "" || len(s) > 9 || s[0] == '0' {
		return 0
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
	}
	n, _ := strconv.Atoi(s)
	return n
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
