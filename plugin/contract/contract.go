// Package contract holds what the sidecar and kmsctl must agree on without
// sharing code: the flag interface the image declares and the lifecycle
// renders, the label that carries its version, and the Vault policy the
// sidecar needs. It imports only the standard library, so both binaries can
// link it without pulling each other's dependencies.
package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// FlagInterfaceLabel is the OCI image label (config Labels) that declares
// which argument list the image's entrypoint accepts. kmsctl verify-image
// refuses an image whose label differs from FlagInterfaceVersion, so a
// plugin expecting other flags never starts with the rendered arguments.
const FlagInterfaceLabel = "io.github.vaultkms.kms-plugin.flag-interface"

// FlagInterfaceVersion names the flag set below. Bump it when a flag that
// kmsctl render passes is renamed, removed, or changes meaning.
const FlagInterfaceVersion = "v1"

// RenderedFlags are the flags kmsctl render may pass to the plugin: exactly
// the set OpenShift's KMS plugin lifecycle passes to a Vault KMS sidecar
// (openshift/library-go pkg/operator/encryption/kms/pluginlifecycle/vault.go),
// so one image serves both. Every version of the plugin that declares
// FlagInterfaceVersion accepts all of them.
var RenderedFlags = []string{
	"listen-address",
	"vault-address",
	"vault-key-path",
	"approle-role-id",
	"approle-secret-id-path",
	"tls-ca-file",
	"tls-sni",
	"vault-namespace",
	"vault-auth-namespace",
	"metrics-port",
}

// PrepareFlags are the flags of the plugin's one-shot preparation mode,
// which kmsctl render runs as a root init container with only CAP_CHOWN: it
// creates the hostPath socket directory (kubelet makes it root 0755) and
// hands it to the plugin's non-root user, then exits. Part of
// FlagInterfaceVersion like RenderedFlags.
var PrepareFlags = []string{
	"prepare-socket-dir",       // absolute directory to create (mode 0750)
	"prepare-socket-dir-owner", // UID:GID to own it
}

// VaultPolicy is the least privilege the sidecar needs on transit key key
// at mount in its default key_id mode (-key-id-mode=metadata): encrypt,
// decrypt, and read the key's metadata (never key material). Token renewal
// and lookup are in Vault's default policy. kmsctl renders exactly this,
// and the integration tests run the plugin with exactly this, so what
// users deploy is what was proven sufficient.
//
// It is HashiCorp's documented minimum policy for its Vault KMS plugin
// less "create" on encrypt and decrypt: the sidecar never needs it, and
// with it an encrypt to a deleted key would silently create a new key
// under the old name instead of failing. The plugin runs under
// HashiCorp's policy too (an integration test says so).
func VaultPolicy(mount, key string) string {
	return policy(mount, key, false)
}

// VaultPolicyHMAC is VaultPolicy plus what -key-id-mode=hmac needs:
// "update" on <mount>/hmac/<key>, to fingerprint each key version with the
// transit HMAC of a fixed label.
func VaultPolicyHMAC(mount, key string) string {
	return policy(mount, key, true)
}

func policy(mount, key string, hmac bool) string {
	r := strings.NewReplacer("{mount}", strings.Trim(mount, "/"), "{key}", key)
	p := `# Least privilege for vault-kms-plugin on transit key "{key}" at "{mount}/".
# Encrypt and decrypt DEK seeds.
path "{mount}/encrypt/{key}" {
  capabilities = ["update"]
}
path "{mount}/decrypt/{key}" {
  capabilities = ["update"]
}
# Read the key's metadata for Status and the key_id (versions and their
# creation times; never key material).
path "{mount}/keys/{key}" {
  capabilities = ["read"]
}
`
	if hmac {
		p += `# -key-id-mode=hmac: HMAC a fixed label to fingerprint each key version in
# the key_id.
path "{mount}/hmac/{key}" {
  capabilities = ["update"]
}
`
	}
	return r.Replace(p)
}

// KeyIDPrefix starts every key_id the plugin issues.
const KeyIDPrefix = "vault-transit:"

// KeyID is the key_id the plugin reports for version of transit key key at
// mount, with tag naming that version's key material:
//
//	vault-transit:<mount>/<key>:v<N>:<tag>
//
// Both binaries compute it: the plugin to report it, kmsctl to find it in
// each API server's metrics (which carry only its hash) after a rotation.
func KeyID(mount, key string, version int, tag string) string {
	return fmt.Sprintf("%s%s/%s:v%d:%s", KeyIDPrefix, strings.Trim(mount, "/"), key, version, tag)
}

// MetadataKeyID is the key_id of the plugin's default -key-id-mode=metadata:
// the tag is the version's creation time in unix seconds, which reading the
// key gives on every node alike.
func MetadataKeyID(mount, key string, version int, created int64) string {
	return KeyID(mount, key, version, strconv.FormatInt(created, 10))
}

// CreationTime reads one entry of the "keys" map of a transit key read: a
// version's creation time, in unix seconds, which the metadata key_id
// carries. Vault v1.21.0 sends two shapes: for aes*-gcm96,
// chacha20-poly1305 and aes*-cbc the time in unix seconds; for rsa, ecdsa,
// ed25519 and the post-quantum types an object whose "creation_time" is RFC
// 3339 with nanoseconds. Both are reduced to unix seconds: for asymmetric
// keys Vault stores the two records from one clock reading, so the integer
// of the first shape equals the second truncated, and a key_id derived
// from it does not change if a Vault upgrade moves a type from one shape to
// the other. The plugin and kmsctl both call this, so the key_id kmsctl
// expects is the one the plugin reports.
func CreationTime(raw json.RawMessage) (int64, error) {
	var secs int64
	if err := json.Unmarshal(raw, &secs); err == nil {
		if secs <= 0 {
			return 0, fmt.Errorf("creation time %d is not a time", secs)
		}
		return secs, nil
	}
	var obj struct {
		CreationTime *time.Time `json:"creation_time"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.CreationTime == nil {
		return 0, errors.New("no creation time (neither unix seconds nor an object with creation_time)")
	}
	if secs = obj.CreationTime.Unix(); secs <= 0 {
		return 0, fmt.Errorf("creation time %s is not a time", obj.CreationTime.Format(time.RFC3339))
	}
	return secs, nil
}
