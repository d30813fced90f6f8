package cluster

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// Options describe a control plane. The zero value is one API server with
// its plugin on a fresh Vault dev server.
type Options struct {
	// APIServers is how many kube-apiservers share the one etcd, each with
	// its own plugin; 1 if zero.
	APIServers int
	// Vault is the Vault to set up and use; a fresh dev server if nil.
	Vault *vaulttest.Server
	// VaultAddrs is the plugins' -vault-address list; Vault.Addr if empty.
	VaultAddrs []string
	// TransitMount and TransitKey name the key; "transit" and "kubernetes"
	// if empty.
	TransitMount, TransitKey string
	// TokenTTL and TokenMaxTTL are the AppRole's token lifetimes; 1h and
	// 24h if zero.
	TokenTTL, TokenMaxTTL time.Duration
	// StatusRefresh is each plugin's -status-refresh-interval; 2s if zero.
	StatusRefresh time.Duration
	// ControllerManager also starts kube-controller-manager, with its default
	// controllers, against the first API server (for StorageVersionMigration).
	ControllerManager bool
	// Resources are the resources the EncryptionConfiguration encrypts with
	// the plugin (then identity); secrets if empty.
	Resources []string
	// Progress, if set, is told about each step as it starts.
	Progress func(format string, args ...any)
}

// Cluster is a running control plane: Vault, etcd, and API servers each
// with its plugin.
type Cluster struct {
	Vault        *vaulttest.Server
	VaultAddrs   []string
	TransitMount string
	TransitKey   string
	Role         vaulttest.AppRole
	Etcd         *Etcd
	PKI          *PKI
	APIServers   []*APIServer
	// ControllerManager runs when Options.ControllerManager is set; nil if not.
	ControllerManager *ControllerManager

	t    testing.TB
	opts Options
}

// Start brings up the control plane and waits until every API server is
// ready with a healthy KMS.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	CheckBinaries(t)
	if opts.ControllerManager {
		kubeControllerManagerBinary.find(t)
	}
	if opts.APIServers == 0 {
		opts.APIServers = 1
	}
	if opts.TransitMount == "" {
		opts.TransitMount = "transit"
	}
	if opts.TransitKey == "" {
		opts.TransitKey = "kubernetes"
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	if opts.TokenMaxTTL == 0 {
		opts.TokenMaxTTL = 24 * time.Hour
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	c := &Cluster{t: t, opts: opts, Vault: opts.Vault, TransitMount: opts.TransitMount, TransitKey: opts.TransitKey}
	if c.Vault == nil {
		progress("starting Vault (dev server)")
		c.Vault = vaulttest.StartDev(t)
	}
	c.VaultAddrs = opts.VaultAddrs
	if len(c.VaultAddrs) == 0 {
		c.VaultAddrs = []string{c.Vault.Addr}
	}
	progress("Vault at %s: enabling transit key %s/%s and AppRole %q", c.Vault.Addr, c.TransitMount, c.TransitKey, "kms-plugin")
	c.Vault.EnableTransit(c.TransitMount, c.TransitKey)
	c.Role = c.Vault.CreateAppRole("kms-plugin", "kms-plugin", vaulttest.Policy(c.TransitMount, c.TransitKey), opts.TokenTTL, opts.TokenMaxTTL)

	progress("starting etcd")
	c.Etcd = StartEtcd(t)
	progress("etcd at %s; generating the CA, serving, admin and service-account keys", c.Etcd.Endpoint)
	c.PKI = NewPKI(t, t.TempDir())
	for i := 1; i <= opts.APIServers; i++ {
		name := fmt.Sprintf("kube-apiserver-%d", i)
		progress("starting vault-kms-plugin and %s", name)
		a := c.AddAPIServer(name)
		progress("%s at %s, KMS plugin on %s", name, a.URL, a.Plugin.Endpoint())
	}
	for _, a := range c.APIServers {
		progress("waiting for %s to be ready", a.Name)
		a.WaitReady(2 * time.Minute)
	}
	if opts.ControllerManager {
		progress("starting kube-controller-manager against %s", c.APIServers[0].Name)
		c.ControllerManager = StartControllerManager(t, c.APIServers[0])
	}
	return c
}

// PluginConfig is the working configuration for a plugin whose secret ID
// is in secretIDPath.
func (c *Cluster) PluginConfig(secretIDPath string) PluginConfig {
	return PluginConfig{
		VaultAddrs:    c.VaultAddrs,
		TransitMount:  c.TransitMount,
		TransitKey:    c.TransitKey,
		RoleID:        c.Role.RoleID,
		SecretIDPath:  secretIDPath,
		StatusRefresh: c.opts.StatusRefresh,
	}
}

// NewPlugin prepares a plugin with a fresh secret ID of the cluster's role
// in its directory, without starting it.
func (c *Cluster) NewPlugin(name string) *Plugin {
	c.t.Helper()
	p := NewPlugin(c.t, name, PluginConfig{})
	path := filepath.Join(p.Dir, "secret-id")
	secretID := c.Vault.NewSecretID(c.Role)
	p.NeverLogs(secretID)
	if err := WriteFileAtomic(path, []byte(secretID)); err != nil {
		c.t.Fatalf("write secret-id file: %v", err)
	}
	p.Config = c.PluginConfig(path)
	return p
}

// AddAPIServer starts another plugin and an API server that uses it, on
// the cluster's etcd. It waits for /livez, not /readyz.
func (c *Cluster) AddAPIServer(name string) *APIServer {
	c.t.Helper()
	p := c.NewPlugin("vault-kms-plugin-" + name)
	p.Start()
	a := StartAPIServerWith(c.t, name, c.Etcd, c.PKI, APIServerOptions{
		Plugin:           p,
		EncryptionConfig: []byte(EncryptionConfig(p.Endpoint(), c.opts.Resources...)),
	})
	c.APIServers = append(c.APIServers, a)
	return a
}
