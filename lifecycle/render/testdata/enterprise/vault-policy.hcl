# Least privilege for vault-kms-plugin on transit key "Prod_Key.v1" at "kubernetes/teams/platform/transit/".
# Encrypt and decrypt DEK seeds.
path "kubernetes/teams/platform/transit/encrypt/Prod_Key.v1" {
  capabilities = ["update"]
}
path "kubernetes/teams/platform/transit/decrypt/Prod_Key.v1" {
  capabilities = ["update"]
}
# Read the key's metadata for Status and the key_id (versions and their
# creation times; never key material).
path "kubernetes/teams/platform/transit/keys/Prod_Key.v1" {
  capabilities = ["read"]
}
