# Least privilege for vault-kms-plugin on transit key "kubernetes" at "transit/".
# Encrypt and decrypt DEK seeds.
path "transit/encrypt/kubernetes" {
  capabilities = ["update"]
}
path "transit/decrypt/kubernetes" {
  capabilities = ["update"]
}
# Read the key's metadata for Status (latest version; never key material).
path "transit/keys/kubernetes" {
  capabilities = ["read"]
}
# HMAC a fixed label to fingerprint each key version in the key_id.
path "transit/hmac/kubernetes" {
  capabilities = ["update"]
}
