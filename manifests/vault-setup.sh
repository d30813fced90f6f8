#!/usr/bin/env bash
# Prepare Vault for vault-kms-plugin: a transit key, the least-privilege
# policy, and an AppRole whose secret ID is written to a file for the node.
# Run with VAULT_ADDR and a VAULT_TOKEN that may manage mounts, policies and
# auth methods. The secret ID never appears on a command line or in output.
#
#   SECRET_ID_FILE=/etc/kubernetes/vault-kms/secret-id ./vault-setup.sh
set -euo pipefail
MOUNT=${MOUNT:-transit}
KEY=${KEY:-kubernetes}
ROLE=${ROLE:-kms-plugin}
SECRET_ID_FILE=${SECRET_ID_FILE:?set SECRET_ID_FILE to where the node reads the secret ID}
HERE=$(cd "$(dirname "$0")" && pwd)

vault secrets list -format=json | grep -q "\"${MOUNT}/\"" || vault secrets enable -path="$MOUNT" transit
vault read "${MOUNT}/keys/${KEY}" >/dev/null 2>&1 || vault write -f "${MOUNT}/keys/${KEY}" type=aes256-gcm96
sed -e "s|transit/|${MOUNT}/|g" -e "s|kubernetes|${KEY}|g" "$HERE/vault-policy.hcl" | vault policy write "$ROLE" -
vault auth list -format=json | grep -q '"approle/"' || vault auth enable approle
# Tokens live an hour and at most a day; the plugin renews and logs in again
# by itself. Bind the secret ID to your control-plane CIDRs in production
# (secret_id_bound_cidrs, token_bound_cidrs).
vault write "auth/approle/role/${ROLE}" token_policies="$ROLE" token_ttl=1h token_max_ttl=24h
vault read -field=role_id "auth/approle/role/${ROLE}/role-id" > "${SECRET_ID_FILE%/*}/role-id"
umask 077
vault write -f -field=secret_id "auth/approle/role/${ROLE}/secret-id" > "${SECRET_ID_FILE}.tmp"
mv "${SECRET_ID_FILE}.tmp" "$SECRET_ID_FILE"
echo "role ID in ${SECRET_ID_FILE%/*}/role-id, secret ID in ${SECRET_ID_FILE} (mode 0600)"
