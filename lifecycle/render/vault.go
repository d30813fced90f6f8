package render

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

// policyMount is the transit mount as the policies name it. Policies live
// where the AppRole lives (the auth namespace); when the transit mount is
// in a namespace below it, its paths are relative to the auth namespace.
func policyMount(cfg *config.Config) string {
	v := &cfg.Vault
	mount := v.KeyMount()
	if rel := strings.TrimPrefix(v.VaultNamespace, v.AuthNamespace()); rel != "" {
		mount = strings.Trim(rel, "/") + "/" + mount
	}
	return mount
}

// PluginPolicy is the least privilege the plugin needs on its key:
// contract.VaultPolicy, byte for byte the policy the integration tests run
// the plugin with.
func PluginPolicy(cfg *config.Config) string {
	return contract.VaultPolicy(policyMount(cfg), cfg.Vault.KeyName())
}

// OperatorPolicy is what an operator needs to rotate the key and retire
// old versions, on that key alone: rotate, read its versions, and update
// its configuration (min_decryption_version). It grants no delete, export
// or backup, so the key cannot be destroyed or read out with it.
func OperatorPolicy(cfg *config.Config) string {
	r := strings.NewReplacer("{mount}", policyMount(cfg), "{key}", cfg.Vault.KeyName())
	return comment(
		r.Replace(`Key rotation on transit key "{key}" at "{mount}/", for the operator (kmsctl):`),
		"rotate it, read its versions, and raise min_decryption_version once no data is left",
		"under the old versions. No delete, export or backup: the key cannot be destroyed or",
		"read out with this policy.",
		generatedBy,
	) + r.Replace(`path "{mount}/keys/{key}/rotate" {
  capabilities = ["update"]
}
path "{mount}/keys/{key}" {
  capabilities = ["read"]
}
path "{mount}/keys/{key}/config" {
  capabilities = ["update"]
}
`)
}

// shellQuote quotes s for a POSIX shell: in single quotes, each single
// quote inside closed, escaped and reopened.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// setupScript is vault-setup.sh. Every value from kms.yaml goes through
// shellQuote; the policies are quoted heredocs, so nothing in them expands.
var setupScript = template.Must(template.New("vault-setup.sh").Funcs(template.FuncMap{"q": shellQuote}).Parse(`#!/usr/bin/env bash
# Vault setup for vault-kms-plugin, KMS provider {{.Provider}}:
#  - transit key {{.Key}} at {{.Mount}}/ (created when missing),
#  - the plugin's least-privilege policy {{.Policy}} and the operator's key
#    rotation policy {{.OperatorPolicy}},
#  - the AppRole role {{.Role}} with the role ID from kms.yaml,
#  - on this node, the role ID and a new secret ID in {{.CredentialsDir}}:
#    the directory 0750 root:{{.GID}}, each file 0400 {{.UID}}:{{.GID}}, so the
#    plugin (user {{.UID}}) reads them through a read-only mount and nothing
#    else but root can.
# {{.GeneratedBy}}
#
# Run it as root on each control-plane node, with VAULT_TOKEN set to a token
# that may manage mounts, policies and auth methods. VAULT_ADDR defaults to
# the first Vault address in kms.yaml, VAULT_CACERT to its CA bundle when
# that file exists. Running it again is safe and rotates the node's secret
# ID: the plugin re-reads the file when it changes, and the previous secret
# ID is then destroyed. The secret ID is never on a command line or in the
# output. SECRET_ID_FILE overrides where it is written (for tests); the pods
# read {{.SecretIDPath}}.
set -euo pipefail

MOUNT={{q .Mount}}
POLICY_MOUNT={{q .PolicyMount}}
KEY={{q .Key}}
POLICY={{q .Policy}}
OPERATOR_POLICY={{q .OperatorPolicy}}
ROLE={{q .Role}}
ROLE_ID={{q .RoleID}}
PLUGIN_UID={{.UID}}
PLUGIN_GID={{.GID}}
SECRET_ID_FILE=${SECRET_ID_FILE:-{{q .SecretIDPath}}}
CRED_DIR=$(dirname "$SECRET_ID_FILE")
ROLE_ID_FILE="$CRED_DIR/role-id"

export VAULT_ADDR=${VAULT_ADDR:-{{q .Address}}}
{{- if .CACert}}
if [ -z "${VAULT_CACERT:-}" ] && [ -f {{q .CACert}} ]; then
  export VAULT_CACERT={{q .CACert}}
fi
{{- end}}
{{- if .ServerName}}
export VAULT_TLS_SERVER_NAME=${VAULT_TLS_SERVER_NAME:-{{q .ServerName}}}
{{- end}}
# The namespaces come from kms.yaml, per command below.
unset VAULT_NAMESPACE

if [ "$(id -u)" -ne 0 ]; then
  echo "vault-setup.sh: run as root: it writes credential files owned by $PLUGIN_UID:$PLUGIN_GID" >&2
  exit 1
fi
command -v vault >/dev/null || { echo "vault-setup.sh: the vault CLI is not in PATH" >&2; exit 1; }

# in_transit runs the vault CLI where the transit mount is, in_auth where the
# AppRole and the policies are.
{{- if .TransitNamespace}}
in_transit() { VAULT_NAMESPACE={{q .TransitNamespace}} vault "$@"; }
{{- else}}
in_transit() { vault "$@"; }
{{- end}}
{{- if .AuthNamespace}}
in_auth() { VAULT_NAMESPACE={{q .AuthNamespace}} vault "$@"; }
{{- else}}
in_auth() { vault "$@"; }
{{- end}}

# 0. A policy or role that serves another transit key is left alone: its
# key's plugins run on them, and rewriting them would take that key out of
# the policy and change the role ID the plugins log in with. A new key (a
# new KMS provider, beside the current one while it rolls out) gets a role
# and policy of its own. Checked before anything is written.
existing=$(in_auth policy read "$POLICY" 2>/dev/null || true)
if [ -n "$existing" ] && ! grep -qF "path \"$POLICY_MOUNT/encrypt/$KEY\"" <<<"$existing"; then
  echo "vault-setup.sh: Vault policy $POLICY already exists for another transit key (it does not grant $POLICY_MOUNT/encrypt/$KEY), and the plugins of that key depend on it; nothing changed. Give this key a role and policy of its own: set vault.authentication.appRole.roleName (and a new roleID) in kms.yaml, run kmsctl render again, then this script." >&2
  exit 1
fi
existing=$(in_auth read -field=role_id "auth/{{.AppRoleMount}}/role/$ROLE/role-id" 2>/dev/null || true)
if [ -n "$existing" ] && [ "$existing" != "$ROLE_ID" ]; then
  echo "vault-setup.sh: AppRole role $ROLE already exists with another role ID, which the plugins running now log in with; nothing changed. For a new key, set vault.authentication.appRole.roleName (and its roleID) in kms.yaml, run kmsctl render again, then this script; to change this role's role ID, first roll every node to a kms.yaml with the new one under another roleName." >&2
  exit 1
fi
unset existing

# 1. The transit engine and the key, each created only when missing.
mounts=$(in_transit secrets list -format=json)
if ! grep -qF "\"$MOUNT/\"" <<<"$mounts"; then
  in_transit secrets enable -path="$MOUNT" transit
fi
if ! in_transit read "$MOUNT/keys/$KEY" >/dev/null 2>&1; then
  in_transit write "$MOUNT/keys/$KEY" type=aes256-gcm96 >/dev/null
fi

# 2. The policies (also rendered as vault-policy.hcl and
# vault-operator-policy.hcl).
in_auth policy write "$POLICY" - >/dev/null <<'POLICY'
{{.PluginPolicy}}POLICY
in_auth policy write "$OPERATOR_POLICY" - >/dev/null <<'POLICY'
{{.OperatorPolicyText}}POLICY

# 3. The AppRole role. Tokens live an hour and at most a day; the plugin
# renews them and logs in again by itself. In production, also bind secret
# IDs and tokens to the control-plane CIDRs (secret_id_bound_cidrs,
# token_bound_cidrs).
auths=$(in_auth auth list -format=json)
if ! grep -qF '"{{.AppRoleMount}}/"' <<<"$auths"; then
  in_auth auth enable -path={{q .AppRoleMount}} approle
fi
in_auth write "auth/{{.AppRoleMount}}/role/$ROLE" token_policies="$POLICY" token_ttl=1h token_max_ttl=24h >/dev/null
in_auth write "auth/{{.AppRoleMount}}/role/$ROLE/role-id" role_id="$ROLE_ID" >/dev/null

# 4. The node's credentials directory: root's, entered by the plugin's group only.
mkdir -p "$CRED_DIR"
chown 0:"$PLUGIN_GID" "$CRED_DIR"
chmod 0750 "$CRED_DIR"

# 5. The files: each written to a private temporary file in the same
# directory, handed to the plugin's user, then renamed over the old one, so
# the plugin never reads a partial file.
umask 077
tmp_role=$(mktemp "$CRED_DIR/.role-id.XXXXXX")
tmp_secret=$(mktemp "$CRED_DIR/.secret-id.XXXXXX")
old_secret=
trap 'rm -f "$tmp_role" "$tmp_secret" ${old_secret:+"$old_secret"}' EXIT

printf '%s' "$ROLE_ID" >"$tmp_role"
chown "$PLUGIN_UID:$PLUGIN_GID" "$tmp_role"
chmod 0400 "$tmp_role"
mv -f "$tmp_role" "$ROLE_ID_FILE"

in_auth write -f -field=secret_id "auth/{{.AppRoleMount}}/role/$ROLE/secret-id" >"$tmp_secret"
chown "$PLUGIN_UID:$PLUGIN_GID" "$tmp_secret"
chmod 0400 "$tmp_secret"
if [ -s "$SECRET_ID_FILE" ]; then
  old_secret=$(mktemp "$CRED_DIR/.old-secret-id.XXXXXX")
  cat "$SECRET_ID_FILE" >"$old_secret"
fi
mv -f "$tmp_secret" "$SECRET_ID_FILE"

# 6. The previous secret ID, destroyed now that the new one is in place (the
# vault CLI reads secret_id=@file from the file, so it is not on a command
# line). The plugin holds a token and logs in with the new file.
if [ -n "$old_secret" ]; then
  if ! in_auth write "auth/{{.AppRoleMount}}/role/$ROLE/secret-id/destroy" secret_id=@"$old_secret" >/dev/null 2>&1; then
    echo "vault-setup.sh: could not destroy the previous secret ID; it stays valid until it expires" >&2
  fi
fi

echo "transit key $MOUNT/keys/$KEY, policies $POLICY and $OPERATOR_POLICY, AppRole role $ROLE"
echo "role ID in $ROLE_ID_FILE, secret ID in $SECRET_ID_FILE (0400 $PLUGIN_UID:$PLUGIN_GID, directory 0750 root:$PLUGIN_GID)"
`))

// SetupScript renders vault-setup.sh for cfg.
func SetupScript(cfg *config.Config) ([]byte, error) {
	v := &cfg.Vault
	ar := &v.Authentication.AppRole
	if len(v.Addresses()) == 0 {
		return nil, fmt.Errorf("vault.vaultAddress is empty")
	}
	data := map[string]any{
		"Provider":           cfg.ProviderName(),
		"GeneratedBy":        generatedBy,
		"Mount":              v.KeyMount(),
		"PolicyMount":        policyMount(cfg),
		"Key":                v.KeyName(),
		"Policy":             ar.PolicyName,
		"OperatorPolicy":     ar.OperatorPolicyName(),
		"Role":               ar.RoleName,
		"RoleID":             ar.RoleID,
		"AppRoleMount":       config.AppRoleMount,
		"UID":                cfg.Node.PluginUID,
		"GID":                cfg.Node.PluginGID,
		"SecretIDPath":       ar.SecretIDPath,
		"CredentialsDir":     ar.CredentialsDir(),
		"Address":            v.Addresses()[0],
		"CACert":             v.TLS.CABundlePath,
		"ServerName":         v.TLS.ServerName,
		"TransitNamespace":   v.VaultNamespace,
		"AuthNamespace":      v.AuthNamespace(),
		"PluginPolicy":       PluginPolicy(cfg),
		"OperatorPolicyText": OperatorPolicy(cfg),
	}
	var b bytes.Buffer
	if err := setupScript.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("execute template: %w", err)
	}
	return b.Bytes(), nil
}
