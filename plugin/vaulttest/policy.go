package vaulttest

import (
	"strings"

	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

// PolicyHMAC is what the plugin needs with -key-id-mode=hmac
// (contract.VaultPolicyHMAC): Policy plus "update" on <mount>/hmac/<key>.
func PolicyHMAC(mount, key string) string { return contract.VaultPolicyHMAC(mount, key) }

// HashiCorpMinimumPolicy is the minimum policy HashiCorp documents for its
// Vault KMS plugin, verbatim less the Enterprise license path: what users
// of OpenShift's KMS operator are told to grant. The plugin's default
// key_id mode must serve under it.
func HashiCorpMinimumPolicy(mount, key string) string {
	r := strings.NewReplacer("{mount}", strings.Trim(mount, "/"), "{key}", key)
	return r.Replace(`path "{mount}/encrypt/{key}" {
  capabilities = ["create", "update"]
}
path "{mount}/decrypt/{key}" {
  capabilities = ["create", "update"]
}
path "{mount}/keys/{key}" {
  capabilities = ["read"]
}
`)
}
