package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// valid returns a configuration that passes validation; tests change one
// thing at a time.
func valid() *Config {
	c := Default()
	c.APIVersion, c.Kind = APIVersion, Kind
	c.Vault.KMSPluginImage = "registry.example.com/vault-kms-plugin@" + testDigest
	c.Vault.VaultAddress = "https://vault.example.com:8200"
	c.Vault.VaultKeyPath = "transit/keys/kubernetes"
	c.Vault.Authentication.AppRole.RoleID = "8f3c2a8e-5d0b-4c1e-9f6a-2b7d9e0c1a34"
	c.Vault.Authentication.AppRole.PolicyName = "kms-plugin"
	c.Revision = "1"
	return &c
}

// fields returns the fields Validate reports, or nil.
func fields(t *testing.T, c *Config) []string {
	t.Helper()
	err := c.Validate()
	if err == nil {
		return nil
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Validate returned %T (%v), want Errors", err, err)
	}
	for _, fe := range errs {
		if strings.Contains(fe.Msg, "\n") {
			t.Errorf("error for %s spans lines: %q", fe.Field, fe.Msg)
		}
	}
	return errs.Fields()
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string // invalid fields; nil: valid
	}{
		{name: "the fixture => valid", change: func(c *Config) {}},

		// apiVersion, kind
		{name: "other apiVersion => apiVersion", change: func(c *Config) { c.APIVersion = "v1" }, want: []string{"apiVersion"}},
		{name: "other kind => kind", change: func(c *Config) { c.Kind = "Pod" }, want: []string{"kind"}},

		// image
		{name: "no image => kmsPluginImage", change: func(c *Config) { c.Vault.KMSPluginImage = "" }, want: []string{"vault.kmsPluginImage"}},
		{name: "image by tag => kmsPluginImage", change: func(c *Config) { c.Vault.KMSPluginImage = "registry.example.com/vault-kms-plugin:v1.0.0" }, want: []string{"vault.kmsPluginImage"}},
		{name: "image with tag and digest => kmsPluginImage", change: func(c *Config) {
			c.Vault.KMSPluginImage = "registry.example.com/vault-kms-plugin:v1@" + testDigest
		}, want: []string{"vault.kmsPluginImage"}},
		{name: "short digest => kmsPluginImage", change: func(c *Config) { c.Vault.KMSPluginImage = "registry.example.com/p@sha256:0123" }, want: []string{"vault.kmsPluginImage"}},
		{name: "upper-case digest => kmsPluginImage", change: func(c *Config) {
			c.Vault.KMSPluginImage = "registry.example.com/p@" + strings.ToUpper(testDigest)
		}, want: []string{"vault.kmsPluginImage"}},
		{name: "sha512 digest => kmsPluginImage", change: func(c *Config) {
			c.Vault.KMSPluginImage = "registry.example.com/p@sha512:" + strings.Repeat("ab", 64)
		}, want: []string{"vault.kmsPluginImage"}},
		{name: "short name without registry => kmsPluginImage", change: func(c *Config) { c.Vault.KMSPluginImage = "hashicorp/vault-kms-plugin@" + testDigest }, want: []string{"vault.kmsPluginImage"}},
		{name: "registry without a dot (localhost:5000) => kmsPluginImage", change: func(c *Config) { c.Vault.KMSPluginImage = "localhost:5000/vault-kms-plugin@" + testDigest }, want: []string{"vault.kmsPluginImage"}},
		{name: "loopback registry with port and digest => valid", change: func(c *Config) { c.Vault.KMSPluginImage = "127.0.0.1:5000/vault-kms-plugin@" + testDigest }},

		// addresses
		{name: "no address => vaultAddress", change: func(c *Config) { c.Vault.VaultAddress = "" }, want: []string{"vault.vaultAddress"}},
		{name: "only commas => vaultAddress", change: func(c *Config) { c.Vault.VaultAddress = " , ," }, want: []string{"vault.vaultAddress"}},
		{name: "http address => vaultAddress", change: func(c *Config) { c.Vault.VaultAddress = "http://vault.example.com:8200" }, want: []string{"vault.vaultAddress"}},
		{name: "http non-loopback with the insecure flag => vaultAddress", change: func(c *Config) {
			c.Vault.VaultAddress, c.Vault.InsecureAllowHTTPLoopback = "http://vault.example.com:8200", true
		}, want: []string{"vault.vaultAddress"}},
		{name: "http loopback without the insecure flag => vaultAddress", change: func(c *Config) { c.Vault.VaultAddress = "http://127.0.0.1:8200" }, want: []string{"vault.vaultAddress"}},
		{name: "http loopback with the insecure flag => valid", change: func(c *Config) {
			c.Vault.VaultAddress, c.Vault.InsecureAllowHTTPLoopback = "http://127.0.0.1:8200", true
		}},
		{name: "http IPv6 loopback with the insecure flag => valid", change: func(c *Config) {
			c.Vault.VaultAddress, c.Vault.InsecureAllowHTTPLoopback = "http://[::1]:8200", true
		}},
		{name: "address with a path => vaultAddress", change: func(c *Config) { c.Vault.VaultAddress = "https://vault.example.com:8200/v1" }, want: []string{"vault.vaultAddress"}},
		{name: "address with a trailing slash => valid", change: func(c *Config) { c.Vault.VaultAddress = "https://vault.example.com:8200/" }},
		{name: "address with a query => vaultAddress", change: func(c *Config) { c.Vault.VaultAddress = "https://vault.example.com?x=1" }, want: []string{"vault.vaultAddress"}},
		{name: "address with a fragment => vaultAddress", change: func(c *Config) { c.Vault.VaultAddress = "https://vault.example.com#x" }, want: []string{"vault.vaultAddress"}},
		{name: "address with user info => vaultAddress", change: func(c *Config) { c.Vault.VaultAddress = "https://u:p@vault.example.com" }, want: []string{"vault.vaultAddress"}},
		{name: "host without scheme => vaultAddress", change: func(c *Config) { c.Vault.VaultAddress = "vault.example.com:8200" }, want: []string{"vault.vaultAddress"}},
		{name: "three https nodes => valid", change: func(c *Config) {
			c.Vault.VaultAddress = "https://vault-1.example.com:8200, https://vault-2.example.com:8200,https://vault-3.example.com:8200"
		}},
		{name: "one bad node among three => vaultAddress", change: func(c *Config) {
			c.Vault.VaultAddress = "https://vault-1.example.com:8200,http://vault-2.example.com:8200,https://vault-3.example.com:8200"
		}, want: []string{"vault.vaultAddress"}},
		{name: "a node listed twice => vaultAddress", change: func(c *Config) {
			c.Vault.VaultAddress = "https://vault-1.example.com:8200,https://vault-1.example.com:8200"
		}, want: []string{"vault.vaultAddress"}},

		// namespaces
		{name: "namespace => valid", change: func(c *Config) { c.Vault.VaultNamespace = "admin/team-a" }},
		{name: "namespace ending in a slash => vaultNamespace", change: func(c *Config) { c.Vault.VaultNamespace = "admin/" }, want: []string{"vault.vaultNamespace"}},
		{name: "namespace with a space => vaultNamespace", change: func(c *Config) { c.Vault.VaultNamespace = "team a" }, want: []string{"vault.vaultNamespace"}},
		{name: "reserved namespace => vaultNamespace", change: func(c *Config) { c.Vault.VaultNamespace = "sys" }, want: []string{"vault.vaultNamespace"}},
		{name: "auth namespace a parent of the namespace => valid", change: func(c *Config) {
			c.Vault.VaultNamespace, c.Vault.VaultAuthNamespace = "admin/team-a", "admin"
		}},
		{name: "auth namespace equal to the namespace => valid", change: func(c *Config) {
			c.Vault.VaultNamespace, c.Vault.VaultAuthNamespace = "admin", "admin"
		}},
		{name: "auth namespace beside the namespace => vaultAuthNamespace", change: func(c *Config) {
			c.Vault.VaultNamespace, c.Vault.VaultAuthNamespace = "admin/team-a", "admin/team-b"
		}, want: []string{"vault.vaultAuthNamespace"}},
		{name: "auth namespace sharing only a prefix => vaultAuthNamespace", change: func(c *Config) {
			c.Vault.VaultNamespace, c.Vault.VaultAuthNamespace = "admin2/team", "admin"
		}, want: []string{"vault.vaultAuthNamespace"}},
		{name: "auth namespace without a namespace => vaultAuthNamespace", change: func(c *Config) { c.Vault.VaultAuthNamespace = "admin" }, want: []string{"vault.vaultAuthNamespace"}},

		// TLS
		{name: "CA bundle and server name => valid", change: func(c *Config) {
			c.Vault.TLS = TLS{CABundlePath: "/etc/kubernetes/vault-kms/ca.pem", ServerName: "vault.internal.example.com"}
		}},
		{name: "relative CA bundle => caBundlePath", change: func(c *Config) { c.Vault.TLS.CABundlePath = "ca.pem" }, want: []string{"vault.tls.caBundlePath"}},
		{name: "server name with upper case => serverName", change: func(c *Config) { c.Vault.TLS.ServerName = "Vault.example.com" }, want: []string{"vault.tls.serverName"}},
		{name: "server name with a port => serverName", change: func(c *Config) { c.Vault.TLS.ServerName = "vault.example.com:8200" }, want: []string{"vault.tls.serverName"}},

		// authentication
		{name: "other auth type => authentication.type", change: func(c *Config) { c.Vault.Authentication.Type = "Kubernetes" }, want: []string{"vault.authentication.type"}},
		{name: "no role ID => roleID", change: func(c *Config) { c.Vault.Authentication.AppRole.RoleID = "" }, want: []string{"vault.authentication.appRole.roleID"}},
		{name: "role ID with a newline => roleID", change: func(c *Config) { c.Vault.Authentication.AppRole.RoleID = "abc\ndef" }, want: []string{"vault.authentication.appRole.roleID"}},
		{name: "role ID starting with @ => roleID", change: func(c *Config) { c.Vault.Authentication.AppRole.RoleID = "@/etc/shadow" }, want: []string{"vault.authentication.appRole.roleID"}},
		{name: "relative secret ID path => secretIDPath", change: func(c *Config) { c.Vault.Authentication.AppRole.SecretIDPath = "secret-id" }, want: []string{"vault.authentication.appRole.secretIDPath"}},
		{name: "unclean secret ID path => secretIDPath", change: func(c *Config) {
			c.Vault.Authentication.AppRole.SecretIDPath = "/etc/kubernetes/vault-kms/../secret-id"
		}, want: []string{"vault.authentication.appRole.secretIDPath"}},
		{name: "secret ID directly in /etc => secretIDPath", change: func(c *Config) { c.Vault.Authentication.AppRole.SecretIDPath = "/etc/secret-id" }, want: []string{"vault.authentication.appRole.secretIDPath"}},
		{name: "secret ID in /etc/kubernetes => secretIDPath", change: func(c *Config) {
			c.Vault.Authentication.AppRole.SecretIDPath = "/etc/kubernetes/secret-id"
		}, want: []string{"vault.authentication.appRole.secretIDPath"}},
		{name: "upper-case role name => roleName", change: func(c *Config) { c.Vault.Authentication.AppRole.RoleName = "KMS" }, want: []string{"vault.authentication.appRole.roleName"}},
		{name: "policy named root => policyName", change: func(c *Config) { c.Vault.Authentication.AppRole.PolicyName = "root" }, want: []string{"vault.authentication.appRole.policyName"}},
		{name: "no policy name => policyName", change: func(c *Config) { c.Vault.Authentication.AppRole.PolicyName = "" }, want: []string{"vault.authentication.appRole.policyName"}},

		// key path
		{name: "no key path => vaultKeyPath", change: func(c *Config) { c.Vault.VaultKeyPath = "" }, want: []string{"vault.vaultKeyPath"}},
		{name: "nested mount => valid", change: func(c *Config) { c.Vault.VaultKeyPath = "a/b/keys/k" }},
		{name: "key name with dots and dashes => valid", change: func(c *Config) { c.Vault.VaultKeyPath = "transit/keys/prod.key-2" }},
		{name: "mount and key only => vaultKeyPath", change: func(c *Config) { c.Vault.VaultKeyPath = "transit/kubernetes" }, want: []string{"vault.vaultKeyPath"}},
		{name: "leading slash => vaultKeyPath", change: func(c *Config) { c.Vault.VaultKeyPath = "/transit/keys/k" }, want: []string{"vault.vaultKeyPath"}},
		{name: "trailing slash => vaultKeyPath", change: func(c *Config) { c.Vault.VaultKeyPath = "transit/keys/k/" }, want: []string{"vault.vaultKeyPath"}},
		{name: "double slash => vaultKeyPath", change: func(c *Config) { c.Vault.VaultKeyPath = "a//transit/keys/k" }, want: []string{"vault.vaultKeyPath"}},
		{name: "dot-dot segment => vaultKeyPath", change: func(c *Config) { c.Vault.VaultKeyPath = "a/../transit/keys/k" }, want: []string{"vault.vaultKeyPath"}},
		{name: "key name ending in a dash => vaultKeyPath", change: func(c *Config) { c.Vault.VaultKeyPath = "transit/keys/k-" }, want: []string{"vault.vaultKeyPath"}},
		{name: "no mount => vaultKeyPath", change: func(c *Config) { c.Vault.VaultKeyPath = "keys/kubernetes" }, want: []string{"vault.vaultKeyPath"}},
		{name: "a space => vaultKeyPath", change: func(c *Config) { c.Vault.VaultKeyPath = "transit/keys/my key" }, want: []string{"vault.vaultKeyPath"}},
		{name: "mount and key over 512 bytes => vaultKeyPath", change: func(c *Config) {
			c.Vault.VaultKeyPath = strings.Repeat("m", 300) + "/keys/" + strings.Repeat("k", 300)
		}, want: []string{"vault.vaultKeyPath"}},

		// node
		{name: "relative socket dir => socketDir", change: func(c *Config) { c.Node.SocketDir = "run/kms" }, want: []string{"node.socketDir"}},
		{name: "socket dir /var/run => socketDir", change: func(c *Config) { c.Node.SocketDir = "/var/run" }, want: []string{"node.socketDir"}},
		{name: "socket dir is the credentials dir => socketDir", change: func(c *Config) { c.Node.SocketDir = "/etc/kubernetes/vault-kms" }, want: []string{"node.socketDir"}},
		{name: "socket path over 107 bytes => socketDir", change: func(c *Config) { c.Node.SocketDir = "/var/run/" + strings.Repeat("d", 80) }, want: []string{"node.socketDir"}},
		{name: "relative manifest dir => manifestDir", change: func(c *Config) { c.Node.ManifestDir = "manifests" }, want: []string{"node.manifestDir"}},
		{name: "root UID => pluginUID", change: func(c *Config) { c.Node.PluginUID = 0 }, want: []string{"node.pluginUID"}},
		{name: "negative UID => pluginUID", change: func(c *Config) { c.Node.PluginUID = -1 }, want: []string{"node.pluginUID"}},
		{name: "root GID => pluginGID", change: func(c *Config) { c.Node.PluginGID = 0 }, want: []string{"node.pluginGID"}},
		{name: "port 0 => metricsPort", change: func(c *Config) { c.Node.MetricsPort = 0 }, want: []string{"node.metricsPort"}},
		{name: "port 65536 => metricsPort", change: func(c *Config) { c.Node.MetricsPort = 65536 }, want: []string{"node.metricsPort"}},

		// encryption
		{name: "no resources => encryption.resources", change: func(c *Config) { c.Encryption.Resources = nil }, want: []string{"encryption.resources"}},
		{name: "several resources and groups => valid", change: func(c *Config) {
			c.Encryption.Resources = []string{"secrets", "configmaps", "deployments.apps", "*.batch"}
		}},
		{name: "every resource => valid", change: func(c *Config) { c.Encryption.Resources = []string{"*.*"} }},
		{name: "a resource listed twice => encryption.resources", change: func(c *Config) {
			c.Encryption.Resources = []string{"secrets", "configmaps", "secrets"}
		}, want: []string{"encryption.resources"}},
		{name: "a wildcard covering a listed resource => encryption.resources", change: func(c *Config) {
			c.Encryption.Resources = []string{"deployments.apps", "*.apps"}
		}, want: []string{"encryption.resources"}},
		{name: "*.* beside another => encryption.resources", change: func(c *Config) {
			c.Encryption.Resources = []string{"*.*", "secrets"}
		}, want: []string{"encryption.resources"}},
		{name: "upper case => encryption.resources[1]", change: func(c *Config) { c.Encryption.Resources = []string{"secrets", "ConfigMaps"} }, want: []string{"encryption.resources[1]"}},
		{name: "bare * => encryption.resources[0]", change: func(c *Config) { c.Encryption.Resources = []string{"*"} }, want: []string{"encryption.resources[0]"}},
		{name: "events.k8s.io => encryption.resources[0]", change: func(c *Config) { c.Encryption.Resources = []string{"events.events.k8s.io"} }, want: []string{"encryption.resources[0]"}},
		{name: "resource across groups => encryption.resources[0]", change: func(c *Config) { c.Encryption.Resources = []string{"secrets.*"} }, want: []string{"encryption.resources[0]"}},
		{name: "non-REST resource => encryption.resources[0]", change: func(c *Config) { c.Encryption.Resources = []string{"serviceipallocations"} }, want: []string{"encryption.resources[0]"}},

		// revision
		{name: "no revision => revision", change: func(c *Config) { c.Revision = "" }, want: []string{"revision"}},
		{name: "revision with a slash => revision", change: func(c *Config) { c.Revision = "a/b" }, want: []string{"revision"}},
		{name: "revision of 64 characters => revision", change: func(c *Config) { c.Revision = strings.Repeat("1", 64) }, want: []string{"revision"}},

		// several at once
		{name: "three bad fields => all three, in file order", change: func(c *Config) {
			c.Vault.VaultAddress, c.Node.PluginUID, c.Revision = "http://x", 0, ""
		}, want: []string{"vault.vaultAddress", "node.pluginUID", "revision"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(c)
			if got := fields(t, c); !slices.Equal(got, tc.want) {
				t.Fatalf("invalid fields = %q, want %q (error: %v)", got, tc.want, c.Validate())
			}
		})
	}
}

// The messages a user reads: the field, the value, and what is wanted.
func TestValidateMessages(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{name: "http address => says https://host[:port] with no path", change: func(c *Config) { c.Vault.VaultAddress = "http://x" },
			want: `vault.vaultAddress: "http://x" must be https://host[:port] with no path (plain http is allowed only for a loopback host)`},
		{name: "tag => says a tag is refused", change: func(c *Config) { c.Vault.KMSPluginImage = "registry.example.com/p:v1" },
			want: `vault.kmsPluginImage: "registry.example.com/p:v1" must be pinned by digest (host[:port]/name@sha256:<64 lower-case hex digits>); a tag is refused`},
		{name: "root UID => names the field and the value", change: func(c *Config) { c.Node.PluginUID = 0 },
			want: `node.pluginUID: must be a non-root user ID between 1 and 2147483647, not 0`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(c)
			err := c.Validate()
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Validate() = %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	const minimal = `apiVersion: kmsctl.vaultkms.io/v1alpha1
kind: KMSConfig
vault:
  kmsPluginImage: registry.example.com/vault-kms-plugin@` + testDigest + `
  vaultAddress: https://vault.example.com:8200
  authentication:
    appRole:
      roleID: 8f3c2a8e
  vaultKeyPath: transit/keys/kubernetes
revision: "1"
`
	t.Run("minimal file => defaults filled and valid", func(t *testing.T) {
		c, err := Parse([]byte(minimal))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		ar := c.Vault.Authentication.AppRole
		if c.Node.SocketDir != "/var/run/kmsplugin" || c.Node.PluginUID != 65532 || c.Node.PluginGID != 65532 ||
			c.Node.MetricsPort != 8095 || c.Node.ManifestDir != "/etc/kubernetes/manifests" ||
			ar.SecretIDPath != "/etc/kubernetes/vault-kms/secret-id" || ar.RoleName != "kms-plugin" || ar.PolicyName != "kms-plugin" ||
			c.Vault.Authentication.Type != AuthTypeAppRole || !slices.Equal(c.Encryption.Resources, []string{"secrets"}) || c.Encryption.AllowUnencrypted {
			t.Fatalf("defaults not applied: %+v", c)
		}
	})
	t.Run("policy name unset => role name", func(t *testing.T) {
		c, err := Parse([]byte(strings.Replace(minimal, "roleID: 8f3c2a8e", "roleID: 8f3c2a8e\n      roleName: kms-a", 1)))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Vault.Authentication.AppRole.PolicyName; got != "kms-a" {
			t.Fatalf("policyName = %q, want kms-a", got)
		}
	})
	t.Run("explicit zero UID => kept, so validation refuses it", func(t *testing.T) {
		c, err := Parse([]byte(minimal + "node:\n  pluginUID: 0\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got := fields(t, c); !slices.Equal(got, []string{"node.pluginUID"}) {
			t.Fatalf("invalid fields = %q, want [node.pluginUID]", got)
		}
	})
	t.Run("explicit resources => replace the default", func(t *testing.T) {
		c, err := Parse([]byte(minimal + "encryption:\n  resources: [configmaps]\n"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.Encryption.Resources, []string{"configmaps"}) {
			t.Fatalf("resources = %q, want [configmaps]", c.Encryption.Resources)
		}
	})

	errTests := []struct {
		name      string
		doc       string
		wantField string // "" : not a field error
	}{
		{name: "unknown top-level field => names it", doc: minimal + "extra: 1\n", wantField: "extra"},
		{name: "misspelt nested field => names its path", doc: strings.Replace(minimal, "roleID:", "roleId:", 1), wantField: "vault.authentication.appRole.roleId"},
		{name: "unknown field in node => names its path", doc: minimal + "node:\n  socketDirectory: /run/kms\n", wantField: "node.socketDirectory"},
		{name: "string for a number => names the field", doc: minimal + "node:\n  metricsPort: \"8095\"\n", wantField: "node.metricsPort"},
		{name: "string for a list => names the field", doc: minimal + "encryption:\n  resources: secrets\n", wantField: "encryption.resources"},
		{name: "duplicate key => error", doc: minimal + "revision: \"2\"\n"},
		{name: "not YAML => error", doc: "vault: [\n"},
		{name: "empty document => error", doc: ""},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if strings.Contains(strings.TrimSpace(err.Error()), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			var fe *FieldError
			switch {
			case tc.wantField == "":
			case !errors.As(err, &fe):
				t.Fatalf("Parse error %v is not a FieldError, want one naming %s", err, tc.wantField)
			case fe.Field != tc.wantField:
				t.Fatalf("Parse error names %q, want %q (%v)", fe.Field, tc.wantField, err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Run("missing file => error naming it", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "kms.yaml"))
		if err == nil || !strings.Contains(err.Error(), "kms.yaml") {
			t.Fatalf("Load = %v, want an error naming kms.yaml", err)
		}
	})
	t.Run("unknown field => error naming the file and the field", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "kms.yaml")
		if err := os.WriteFile(p, []byte("apiVersion: x\nbogus: 1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "bogus" || !strings.HasPrefix(err.Error(), p+": ") {
			t.Fatalf("Load = %v, want %s: bogus: unknown field", err, p)
		}
	})
}

func TestDerived(t *testing.T) {
	c := valid()
	c.Vault.VaultKeyPath = "team/transit/keys/prod"
	c.Vault.VaultAddress = "https://a.example.com, https://b.example.com"
	if got := c.Vault.KeyMount(); got != "team/transit" {
		t.Errorf("KeyMount = %q", got)
	}
	if got := c.Vault.KeyName(); got != "prod" {
		t.Errorf("KeyName = %q", got)
	}
	if got := c.Vault.Addresses(); !slices.Equal(got, []string{"https://a.example.com", "https://b.example.com"}) {
		t.Errorf("Addresses = %q", got)
	}
	if got := c.Vault.AuthNamespace(); got != "" {
		t.Errorf("AuthNamespace = %q", got)
	}
	c.Vault.VaultNamespace = "admin/team"
	if got := c.Vault.AuthNamespace(); got != "admin/team" {
		t.Errorf("AuthNamespace without vaultAuthNamespace = %q, want the namespace", got)
	}
	ar := c.Vault.Authentication.AppRole
	if ar.CredentialsDir() != "/etc/kubernetes/vault-kms" || ar.RoleIDPath() != "/etc/kubernetes/vault-kms/role-id" || ar.OperatorPolicyName() != "kms-plugin-operator" {
		t.Errorf("credentials: dir %q, role-id %q, operator policy %q", ar.CredentialsDir(), ar.RoleIDPath(), ar.OperatorPolicyName())
	}
	if want := "unix:///var/run/kmsplugin/" + c.ProviderName() + ".sock"; c.Endpoint() != want {
		t.Errorf("Endpoint = %q, want %q", c.Endpoint(), want)
	}
}
