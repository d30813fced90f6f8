package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/apiserver"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate/kube"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rotation"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/transit"
)

// statusOptions are the flags of `kmsctl status`.
type statusOptions struct {
	scanOptions
	vaultOptions
	kubeconfig    string
	apiservers    []string
	pluginSockets []string
	nodesPath     string
	output        string
	timeout       time.Duration
}

// StatusReport is `kmsctl status -o json`. Fields are only ever added.
type StatusReport struct {
	// Scan is what etcd holds for each encrypted resource.
	Scan scan.Report `json:"scan"`
	// TransitKey is the key's versions with a verdict on each; absent
	// without a Vault token.
	TransitKey *TransitKeyStatus `json:"transitKey,omitempty"`
	// APIServers is what each API server of --apiservers reports.
	APIServers []APIServerStatus `json:"apiServers,omitempty"`
	// StorageVersionMigrations is what the kubeconfig's API server lists
	// for the scanned resources; absent without --kubeconfig or
	// --apiservers.
	StorageVersionMigrations *SVMSection `json:"storageVersionMigrations,omitempty"`
	// Plugins is each plugin socket's Status and preflight, from
	// --plugin-sockets and --nodes.
	Plugins []PluginStatus `json:"plugins,omitempty"`
}

// TransitKeyStatus is the transit key as Vault reports it, judged against
// the scan.
type TransitKeyStatus struct {
	rotation.KeyState
	Address  string                    `json:"address"`
	Versions []rotation.VersionVerdict `json:"versions"`
}

// APIServerStatus is one API server's view.
type APIServerStatus struct {
	URL string `json:"url"`
	// KeyIDHash is the hash of the key_id its plugin's Status returned
	// last (kube-apiserver's metrics carry only hashes); KeyVersion is the
	// transit key version it names, 0 when the transit key section is
	// absent or the key_id is not one of the key's metadata key_ids.
	KeyIDHash  string `json:"keyIDHash,omitempty"`
	KeyVersion int    `json:"keyVersion,omitempty"`
	// ConfigHash is the loaded EncryptionConfiguration's sha256.
	ConfigHash string `json:"configHash,omitempty"`
	Error      string `json:"error,omitempty"`
}

func newStatusCmd() *cobra.Command { return newStatusCmdEnv(os.Getenv) }

// newStatusCmdEnv is newStatusCmd reading VAULT_TOKEN through getenv.
func newStatusCmdEnv(getenv func(string) string) *cobra.Command {
	o := &statusOptions{vaultOptions: vaultOptions{getenv: getenv}}
	cmd := &cobra.Command{
		Use:   "status --etcd-endpoints URL[,URL...] [--resources secrets,... | --config kms.yaml] [-o table|json]",
		Short: "Show how the encrypted resources are stored in etcd: per provider, key_id and transit key version",
		Long: `status reads etcd directly (read-only, paged, one consistent revision, only the
keys under the encrypted resources' prefixes) and, without decrypting anything,
counts each resource's objects per provider, KMSv2 key_id and Vault transit key
version (the "vault:vN:" prefix of the wrapped DEK source), plus objects stored
unencrypted, under other providers (KMS v1, aescbc, aesgcm, secretbox) and
malformed ones.

The resources are --resources, or encryption.resources of --config. Keys are
read where kube-apiserver (--etcd-prefix) stores them: secrets under
/registry/secrets/, deployments.apps under /registry/deployments/, custom
resources under /registry/<group>/<resource>/. Wildcards (*.apps) are refused:
name the resources.

With a Vault token ($VAULT_TOKEN or --vault-token-path; the operator policy
suffices) and the key (--vault-address and --vault-key-path, or --config), it
also shows the transit key's versions and min_decryption_version, with a
verdict per version: current, needed (objects under it: migrate), safe to
retire (kmsctl retire may raise min_decryption_version above it), retired,
or retired but needed. With --apiservers (each API server's own address,
the kubeconfig's credentials), it shows the key_id each one's plugin
reported last, as a key version, and the hash of the EncryptionConfiguration
it loaded.

With --kubeconfig or --apiservers, it lists every StorageVersionMigration
(storagemigration.k8s.io/v1, anyone's, not only kmsctl's) of the scanned
resources on the kubeconfig's API server: its state (Pending, Running,
Succeeded, Failed), message, age and whether kmsctl manages it. A
resource's newest migration that Succeeded while the scan still finds
objects under older transit key versions is flagged: Succeeded only means
its requests were sent, and an API server without the new key_id rewrites
nothing; run kmsctl migrate. An API server that does not serve the API is
said so.

With --plugin-sockets (socket paths) or --nodes (nodes.yaml: each node's
KMS providers, from its EncryptionConfiguration and kmsctl's static pods,
at <socketDir>/<provider>.sock), it asks each plugin for its Status
(healthz, key_id, as a key version) and makes an Encrypt then Decrypt round
trip, as kmsctl rollout does.

Errors of these sections (an API server, a plugin that does not answer) are
shown in them; only etcd, Vault and the flags' files make status fail.
-o json is stable: fields are only ever added.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			ctx := cmd.Context()
			return o.Run(ctx, cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// AddFlags registers the options' flags.
func (o *statusOptions) AddFlags(fs *pflag.FlagSet) {
	o.scanOptions.AddFlags(fs, []string{"secrets"})
	o.vaultOptions.AddFlags(fs)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig whose credentials read each API server's metrics, and whose API server lists the StorageVersionMigrations (default: $KUBECONFIG, then ~/.kube/config)")
	fs.StringSliceVar(&o.apiservers, "apiservers", nil, "every API server's own https://host:port, to show the key_id and EncryptionConfiguration each reports")
	fs.StringSliceVar(&o.pluginSockets, "plugin-sockets", nil, "plugin unix socket paths to ask for Status and an Encrypt/Decrypt round trip")
	fs.StringVar(&o.nodesPath, "nodes", "", "nodes.yaml: ask the plugin sockets of every node's KMS providers")
	fs.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up on etcd after this long")
}

// Validate checks the flags.
func (o *statusOptions) Validate() error {
	if err := o.scanOptions.Validate(o.configPath != ""); err != nil {
		return err
	}
	switch {
	case o.output != "table" && o.output != "json":
		return fmt.Errorf("-o must be table or json, not %q", o.output)
	case o.timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	for _, u := range o.apiservers {
		if err := checkAPIServerURL(u); err != nil {
			return fmt.Errorf("--apiservers: %w", err)
		}
	}
	for _, p := range o.pluginSockets {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("--plugin-sockets: %q must be a socket's absolute path", p)
		}
	}
	if o.vaultWanted() {
		return o.vaultOptions.Validate()
	}
	return nil
}

// vaultWanted is whether the transit key section is asked for: an explicit
// --vault-address, or --config with a token at hand.
func (o *statusOptions) vaultWanted() bool {
	return o.vaultAddress != "" || o.vaultKeyPath != "" ||
		(o.configPath != "" && (o.tokenPath != "" || o.getenv("VAULT_TOKEN") != ""))
}

// Run scans etcd, asks Vault, the API servers and the plugins when asked
// to, and prints the report.
func (o *statusOptions) Run(ctx context.Context, stdout io.Writer) error {
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	resources, err := o.Resources(cfg, o.configPath)
	if err != nil {
		return err
	}
	// Before the scan, so that a wrong nodes.yaml fails at once.
	plugins, err := o.pluginTargets()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	rep, err := o.Scan(ctx, resources, 0)
	if err != nil {
		return err
	}
	status := StatusReport{Scan: rep}
	var keys keyIDs
	if o.vaultWanted() {
		if status.TransitKey, keys, err = o.transitKey(ctx, cfg, rep); err != nil {
			return err
		}
	}
	if o.kubeconfig != "" || len(o.apiservers) > 0 {
		kubeCfg, err := loadKubeconfig(o.kubeconfig)
		if err != nil {
			return err
		}
		var key *rotation.KeyState
		if status.TransitKey != nil {
			key = &status.TransitKey.KeyState
		}
		status.StorageVersionMigrations = svmSection(ctx, kubeCfg, rep, key, keys.latestCreated)
		status.APIServers = o.apiServerRows(ctx, kubeCfg, keys.byHash)
	}
	for _, t := range plugins {
		status.Plugins = append(status.Plugins, askPlugin(ctx, t, keys.byKeyID))
	}
	if o.output == "json" {
		return writeJSON(stdout, status)
	}
	return writeStatusTable(stdout, status)
}

// keyIDs name the transit key's versions as the API servers and plugins
// report them; zero without the transit key section.
type keyIDs struct {
	// byHash maps each version's metadata key_id hash (what API servers'
	// metrics carry) to the version; byKeyID the key_id itself.
	byHash, byKeyID map[string]int
	// latestCreated is when the latest version was created; zero if unknown.
	latestCreated time.Time
}

// transitKey reads the transit key and judges each version against rep.
func (o *statusOptions) transitKey(ctx context.Context, cfg *config.Config, rep scan.Report) (*TransitKeyStatus, keyIDs, error) {
	keys := keyIDs{byHash: map[string]int{}, byKeyID: map[string]int{}}
	tc, err := o.transitConfig(cfg)
	if err != nil {
		return nil, keys, err
	}
	client, err := transit.New(tc)
	if err != nil {
		return nil, keys, err
	}
	key, err := client.ReadKey(ctx)
	if err != nil {
		return nil, keys, err
	}
	state := keyState(key)
	for _, v := range key.Versions {
		if keyID, ok := client.MetadataKeyID(key, v); ok {
			keys.byHash[apiserver.KeyIDHash(keyID)] = v
			keys.byKeyID[keyID] = v
		}
	}
	if c, ok := key.Created[key.Latest]; ok {
		keys.latestCreated = time.Unix(c, 0)
	}
	return &TransitKeyStatus{KeyState: state, Address: tc.Address, Versions: rotation.Verdicts(state, rep)}, keys, nil
}

// apiServerRows asks each of --apiservers what it has loaded; versions maps
// key_id hashes to transit key versions.
func (o *statusOptions) apiServerRows(ctx context.Context, kubeCfg *rest.Config, versions map[string]int) []APIServerStatus {
	var out []APIServerStatus
	for _, u := range o.apiservers {
		st := APIServerStatus{URL: u}
		obs, err := apiserver.New(kubeCfg, u)
		if err == nil {
			var seen apiserver.Observation
			if seen, err = obs.Observe(ctx); err == nil {
				st.KeyIDHash, st.ConfigHash = seen.CurrentKeyID(), seen.ConfigHash
				st.KeyVersion = versions[st.KeyIDHash]
			}
		}
		if err != nil {
			st.Error = err.Error()
		}
		out = append(out, st)
	}
	return out
}

// writeStatusTable prints the scan as two tables: the split of each
// resource, then one line per way of storage.
func writeStatusTable(w io.Writer, s StatusReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "etcd scan at revision %d, prefix %s\n\n", s.Scan.Revision, s.Scan.EtcdPrefix)
	fmt.Fprintln(tw, "RESOURCE\tTOTAL\tKMSV2\tOTHER PROVIDERS\tUNENCRYPTED\tMALFORMED")
	for _, r := range s.Scan.Resources {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\n", r.Resource, r.Total, r.KMSv2, r.OtherProviders, r.Unencrypted, r.Malformed)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "RESOURCE\tCLASS\tPROVIDER\tTRANSIT KEY\tVERSION\tKEY_ID\tCOUNT\tFIRST OBJECTS")
	for _, r := range s.Scan.Resources {
		for _, g := range r.Groups {
			version, transitKey, keyID := "-", dash(g.TransitKey), dash(g.KeyID)
			if g.Class == scan.ClassKMSv2 {
				version = "unknown"
				if g.TransitVersion > 0 {
					version = "v" + strconv.Itoa(g.TransitVersion)
				}
			}
			if g.Class == scan.ClassMalformed {
				keyID = g.Reason
			}
			first := "-"
			if len(g.Objects) > 0 {
				first = g.Objects[0]
				if g.Count > 1 {
					first += ", ..."
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Resource, g.Class, dash(g.Provider), transitKey, version, keyID, g.Count, first)
		}
	}
	if k := s.TransitKey; k != nil {
		fmt.Fprintf(tw, "\ntransit key %s at %s: latest_version %d, min_decryption_version %d\n\n", k.Name, k.Address, k.Latest, k.MinDecryption)
		fmt.Fprintln(tw, "VERSION\tOBJECTS\tDECRYPTABLE\tVERDICT\tWHY")
		for _, v := range k.Versions {
			fmt.Fprintf(tw, "v%d\t%d\t%t\t%s\t%s\n", v.Version, v.Objects, v.Decryptable, v.Verdict, v.Reason)
		}
	}
	if len(s.APIServers) > 0 {
		fmt.Fprintln(tw, "\nAPI SERVER\tKEY VERSION\tKEY_ID HASH\tENCRYPTION CONFIG\tERROR")
		for _, a := range s.APIServers {
			version := "-"
			if a.KeyVersion > 0 {
				version = "v" + strconv.Itoa(a.KeyVersion)
			} else if a.KeyIDHash != "" {
				version = "unknown"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.URL, version, dash(a.KeyIDHash), dash(a.ConfigHash), dash(a.Error))
		}
	}
	if m := s.StorageVersionMigrations; m != nil {
		writeSVMTable(tw, m, time.Now())
	}
	if len(s.Plugins) > 0 {
		writePluginsTable(tw, s.Plugins)
	}
	return tw.Flush()
}

// writeSVMTable prints the StorageVersionMigrations section; ages are
// relative to now.
func writeSVMTable(tw io.Writer, m *SVMSection, now time.Time) {
	switch {
	case m.Error != "":
		fmt.Fprintf(tw, "\nStorageVersionMigrations on %s: %s\n", m.Server, m.Error)
		return
	case !m.Served:
		fmt.Fprintf(tw, "\nStorageVersionMigrations: %s does not serve %s (Kubernetes 1.37 or later does)\n", m.Server, kube.SVMGroupVersion)
		return
	case len(m.Migrations) == 0:
		fmt.Fprintf(tw, "\nStorageVersionMigrations on %s: none of the scanned resources\n", m.Server)
		return
	}
	fmt.Fprintf(tw, "\nStorageVersionMigrations on %s:\n", m.Server)
	fmt.Fprintln(tw, "MIGRATION\tRESOURCE\tSTATE\tAGE\tKMSCTL\tMESSAGE\tWARNING")
	for _, v := range m.Migrations {
		managed := "no"
		if v.ManagedByKmsctl {
			managed = "yes"
		}
		age := now.Sub(v.Created).Truncate(time.Second).String()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Resource, v.State, age, managed, dash(v.Message), dash(v.Warning))
	}
}

// writePluginsTable prints the plugins section.
func writePluginsTable(tw io.Writer, plugins []PluginStatus) {
	fmt.Fprintln(tw, "\nNODE\tPLUGIN SOCKET\tHEALTHZ\tKEY VERSION\tKEY_ID\tPREFLIGHT\tERROR")
	for _, p := range plugins {
		version := "-"
		if p.KeyVersion > 0 {
			version = "v" + strconv.Itoa(p.KeyVersion)
		} else if p.KeyID != "" {
			version = "unknown"
		}
		preflight := "failed"
		switch {
		case p.PreflightOK:
			preflight = "ok"
		case p.Healthz == "":
			preflight = "-" // Status did not answer: not tried
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(p.Node), dash(p.Socket), dash(p.Healthz), version, dash(p.KeyID), preflight, dash(p.Error))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
