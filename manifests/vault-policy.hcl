# Least privilege for vault-kms-plugin on transit key "kubernetes" at "transit/".
# Encrypt and decrypt DEK seeds.
path "transit/encrypt/kubernetes" {
  capabilities = ["update"]
}
path "transit/decrypt/kubernetes" {
  capabilities = ["update"]
}
# Read the key's metadata for Status and the key_id (versions and their
# creation times; never key material).
path "transit/keys/kubernetes" {
  capabilities = ["read"]
}
