package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/apiserver"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rotation"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/transit"
)

// statusOptions are the flags of `kmsctl status`.
type statusOptions struct {
	scanOptions
	vaultOptions
	kubeconfig string
	apiservers []string
	output     string
	timeout    time.Duration
}

// StatusReport is `kmsctl status -o json`. Fields are only ever added: the
// StorageVersionMigrations and plugin Status sections will join here.
type StatusReport struct {
	// Scan is what etcd holds for each encrypted resource.
	Scan scan.Report `json:"scan"`
	// TransitKey is the key's versions with a verdict on each; absent
	// without a Vault token.
	TransitKey *TransitKeyStatus `json:"transitKey,omitempty"`
	// APIServers is what each API server of --apiservers reports.
	APIServers []APIServerStatus `json:"apiServers,omitempty"`
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

Not shown yet: StorageVersionMigrations and each plugin's Status. -o json
keeps its shape when they are added.`,
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
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig whose credentials read each API server's metrics (default: $KUBECONFIG, then ~/.kube/config)")
	fs.StringSliceVar(&o.apiservers, "apiservers", nil, "every API server's own https://host:port, to show the key_id and EncryptionConfiguration each reports")
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

// Run scans etcd, asks Vault and the API servers when asked to, and prints
// the report.
func (o *statusOptions) Run(ctx context.Context, stdout io.Writer) error {
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	resources, err := o.Resources(cfg, o.configPath)
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
	// versions maps each key version's metadata key_id hash to it.
	versions := map[string]int{}
	if o.vaultWanted() {
		tc, err := o.transitConfig(cfg)
		if err != nil {
			return err
		}
		client, err := transit.New(tc)
		if err != nil {
			return err
		}
		key, err := client.ReadKey(ctx)
		if err != nil {
			return err
		}
		state := keyState(key)
		status.TransitKey = &TransitKeyStatus{KeyState: state, Address: tc.Address, Versions: rotation.Verdicts(state, rep)}
		for _, v := range key.Versions {
			if keyID, ok := client.MetadataKeyID(key, v); ok {
				versions[apiserver.KeyIDHash(keyID)] = v
			}
		}
	}
	if len(o.apiservers) > 0 {
		kube, err := loadKubeconfig(o.kubeconfig)
		if err != nil {
			return err
		}
		for _, u := range o.apiservers {
			st := APIServerStatus{URL: u}
			obs, err := apiserver.New(kube, u)
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
			status.APIServers = append(status.APIServers, st)
		}
	}
	if o.output == "json" {
		return writeJSON(stdout, status)
	}
	return writeStatusTable(stdout, status)
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
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
