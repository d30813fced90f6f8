// Package config is kmsctl's configuration file, kms.yaml: what one
// control-plane deployment of the plugin needs, from which `kmsctl render`
// derives the static pod, the kube-apiserver sidecar patch, the
// EncryptionConfiguration and the Vault policies and setup script. The
// file is the one source of truth for all of them.
//
// The vault section carries the fields of OpenShift's Vault KMS API
// (config.openshift.io KMSPluginConfig.vault) with the same names and
// validation rules, so a configuration written for one is understood by the
// other. Where OpenShift refers to a Secret or ConfigMap, kms.yaml names a
// file on the node instead, because a static pod cannot read either.
//
// Parse and Load apply defaults and refuse unknown fields; Validate checks
// the values. Every error names its field by its YAML path.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"reflect"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
)

// APIVersion and Kind identify a kms.yaml document.
const (
	APIVersion = "kmsctl.vaultkms.io/v1alpha1"
	Kind       = "KMSConfig"
)

// AuthTypeAppRole is the only authentication type, as in OpenShift's API.
const AuthTypeAppRole = "AppRole"

// AppRoleMount is where the plugin logs in. OpenShift's flag set has no
// flag for the AppRole mount, so the plugin always uses its default, and
// kms.yaml does not offer another.
const AppRoleMount = "approle"

// Config is one kms.yaml.
type Config struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Vault      Vault      `json:"vault"`
	Node       Node       `json:"node"`
	Encryption Encryption `json:"encryption"`
	// Revision labels the rendered pods (kmsctl.vaultkms.io/revision); a
	// rollout compares it across nodes.
	Revision string `json:"revision"`
}

// Vault is OpenShift's VaultKMSPluginConfig, with node file paths in place
// of Secret and ConfigMap references.
type Vault struct {
	// KMSPluginImage is the plugin image, pinned by digest:
	// host[:port]/name@sha256:<64 hex>.
	KMSPluginImage string `json:"kmsPluginImage"`
	// VaultAddress is https://host[:port], or a comma-separated list of the
	// nodes of one Vault cluster that the plugin fails over across, in order
	// of preference.
	VaultAddress string `json:"vaultAddress"`
	// VaultNamespace is the Vault Enterprise namespace of the transit mount.
	VaultNamespace string `json:"vaultNamespace,omitempty"`
	// VaultAuthNamespace is the namespace of the AppRole mount; empty means
	// VaultNamespace. It must be VaultNamespace or one of its parents: a
	// token can reach only its own namespace and those below it.
	VaultAuthNamespace string         `json:"vaultAuthNamespace,omitempty"`
	TLS                TLS            `json:"tls,omitzero"`
	Authentication     Authentication `json:"authentication"`
	// VaultKeyPath is <transit mount>/keys/<key name>; the mount may be
	// nested (team/transit/keys/k).
	VaultKeyPath string `json:"vaultKeyPath"`
	// InsecureAllowHTTPLoopback allows http:// addresses whose host is a
	// loopback address, for a development Vault on the node itself.
	InsecureAllowHTTPLoopback bool `json:"insecureAllowHTTPLoopback,omitempty"`
}

// TLS is how the plugin verifies Vault.
type TLS struct {
	// CABundlePath is a PEM CA bundle on the node (default: system roots).
	// It must be readable by the plugin's user.
	CABundlePath string `json:"caBundlePath,omitempty"`
	// ServerName is the name to send and verify instead of the address's host.
	ServerName string `json:"serverName,omitempty"`
}

// Authentication is how the plugin logs in to Vault.
type Authentication struct {
	// Type is AppRole, the only method (as in OpenShift's API).
	Type    string  `json:"type"`
	AppRole AppRole `json:"appRole"`
}

// AppRole is the plugin's AppRole and where the node keeps its secret ID.
type AppRole struct {
	// RoleID is the role's ID. It is not a secret and is passed as a flag;
	// vault-setup.sh sets the role to this ID.
	RoleID string `json:"roleID"`
	// SecretIDPath is the file holding the secret ID. Its directory holds
	// the node's Vault credentials only: vault-setup.sh makes it 0750
	// root:<pluginGID>, and the pods mount it read-only.
	SecretIDPath string `json:"secretIDPath"`
	// RoleName is the AppRole role (default kms-plugin).
	RoleName string `json:"roleName"`
	// PolicyName is the plugin's Vault policy (default: RoleName). The
	// operator's rotation policy is PolicyName + "-operator".
	PolicyName string `json:"policyName"`
}

// Node is what the rendered pods need from the control-plane node.
type Node struct {
	// SocketDir holds the plugin's KMS socket, <socketDir>/<provider>.sock.
	SocketDir string `json:"socketDir"`
	// ManifestDir is kubelet's static pod directory; the rendered files say
	// to copy the pod there.
	ManifestDir string `json:"manifestDir"`
	// PluginUID and PluginGID are the non-root user and group the plugin
	// runs as and that own its socket directory and credential files.
	PluginUID int64 `json:"pluginUID"`
	PluginGID int64 `json:"pluginGID"`
	// MetricsPort is the port on 127.0.0.1 for /metrics, /livez and /readyz.
	MetricsPort int32 `json:"metricsPort"`
}

// Encryption is what the API server encrypts with the key.
type Encryption struct {
	// Resources are EncryptionConfiguration resource names (secrets,
	// configmaps, deployments.apps, *.apps...).
	Resources []string `json:"resources"`
	// AllowUnencrypted keeps identity as the last provider, so objects
	// stored before encryption was enabled stay readable until rewritten.
	AllowUnencrypted bool `json:"allowUnencrypted,omitempty"`
}

// Default returns a Config holding every default. Parse decodes a file on
// top of it, so a field the file leaves out keeps its default and one it
// sets, even to zero, is what validation sees.
func Default() Config {
	return Config{
		Vault: Vault{
			Authentication: Authentication{
				Type: AuthTypeAppRole,
				AppRole: AppRole{
					SecretIDPath: "/etc/kubernetes/vault-kms/secret-id",
					RoleName:     "kms-plugin",
				},
			},
		},
		Node: Node{
			SocketDir:   "/var/run/kmsplugin",
			ManifestDir: "/etc/kubernetes/manifests",
			PluginUID:   65532,
			PluginGID:   65532,
			MetricsPort: 8095,
		},
		Encryption: Encryption{Resources: []string{"secrets"}},
	}
}

// Load reads and parses the kms.yaml at path. It does not validate.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes a kms.yaml document over the defaults. Unknown fields,
// duplicate keys and values of the wrong type are errors naming the field.
// It does not validate.
func Parse(data []byte) (*Config, error) {
	cfg, err := decodeStrict(data, Default(), "a "+Kind)
	if err != nil {
		return nil, err
	}
	if cfg.Vault.Authentication.AppRole.PolicyName == "" {
		cfg.Vault.Authentication.AppRole.PolicyName = cfg.Vault.Authentication.AppRole.RoleName
	}
	return cfg, nil
}

// decodeStrict decodes a YAML document over defaults, refusing unknown
// fields (named by their full path), duplicate keys and values of the wrong
// type; what names the expected document in an empty file's error.
func decodeStrict[T any](data []byte, defaults T, what string) (*T, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		// The YAML library lists problems on indented lines; one line reads
		// better after the file name.
		return nil, fmt.Errorf("parse YAML: %s", strings.Join(strings.Fields(err.Error()), " "))
	}
	var raw any
	if err := json.Unmarshal(j, &raw); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	if raw == nil {
		return nil, fmt.Errorf("empty document: expected %s", what)
	}
	if err := unknownFields(raw, reflect.TypeFor[T](), ""); err != nil {
		return nil, err
	}
	out := defaults
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, &FieldError{Field: te.Field, Msg: fmt.Sprintf("must be a %s, not a %s", jsonKind(te.Type), te.Value)}
		}
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &out, nil
}

// unknownFields reports the first key in v (decoded JSON) that type t has
// no field for, by its full path; encoding/json would name only the key.
func unknownFields(v any, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil // a type error, reported by the decoder
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for k, sub := range m {
			ft, ok := fields[k]
			if !ok {
				return &FieldError{Field: join(at, k), Msg: "unknown field"}
			}
			if err := unknownFields(sub, ft, join(at, k)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if s, ok := v.([]any); ok {
			for i, e := range s {
				if err := unknownFields(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func join(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "whole number"
	case reflect.String:
		return "string"
	case reflect.Slice:
		return "list"
	case reflect.Struct, reflect.Map:
		return "mapping"
	}
	return t.String()
}

// Addresses returns the Vault addresses, in the order given.
func (v *Vault) Addresses() []string {
	var out []string
	for _, a := range strings.Split(v.VaultAddress, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// KeyMount returns the transit mount of VaultKeyPath (before the last
// "/keys/").
func (v *Vault) KeyMount() string {
	i := strings.LastIndex(v.VaultKeyPath, "/keys/")
	if i < 0 {
		return ""
	}
	return v.VaultKeyPath[:i]
}

// KeyName returns the transit key name of VaultKeyPath.
func (v *Vault) KeyName() string {
	i := strings.LastIndex(v.VaultKeyPath, "/keys/")
	if i < 0 {
		return ""
	}
	return v.VaultKeyPath[i+len("/keys/"):]
}

// AuthNamespace returns the namespace the plugin logs in to.
func (v *Vault) AuthNamespace() string {
	if v.VaultAuthNamespace != "" {
		return v.VaultAuthNamespace
	}
	return v.VaultNamespace
}

// OperatorPolicyName is the name of the operator's key rotation policy.
func (a *AppRole) OperatorPolicyName() string { return a.PolicyName + "-operator" }

// CredentialsDir is the directory of the secret ID file, which the pods
// mount read-only.
func (a *AppRole) CredentialsDir() string { return path.Dir(a.SecretIDPath) }

// RoleIDPath is where vault-setup.sh also writes the role ID, beside the
// secret ID, for tools that read it from a file.
func (a *AppRole) RoleIDPath() string { return path.Join(a.CredentialsDir(), "role-id") }

// ProviderName is the EncryptionConfiguration provider name of the key;
// see lifecycle.ProviderName.
func (c *Config) ProviderName() string {
	return lifecycle.ProviderName(c.Vault.Addresses(), c.Vault.VaultNamespace, c.Vault.VaultKeyPath)
}

// SocketPath is the plugin's socket on the node.
func (c *Config) SocketPath() string {
	return path.Join(c.Node.SocketDir, c.ProviderName()+".sock")
}

// Endpoint is the socket as the EncryptionConfiguration and the plugin's
// -listen-address spell it.
func (c *Config) Endpoint() string { return "unix://" + c.SocketPath() }
