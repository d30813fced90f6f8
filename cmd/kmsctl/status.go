package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// statusOptions are the flags of `kmsctl status`.
type statusOptions struct {
	scanOptions
	configPath string
	output     string
	timeout    time.Duration
}

// StatusReport is `kmsctl status -o json`. Fields are only ever added: the
// API servers, StorageVersionMigrations, plugin Status and transit key
// sections will join Scan here.
type StatusReport struct {
	// Scan is what etcd holds for each encrypted resource.
	Scan scan.Report `json:"scan"`
}

func newStatusCmd() *cobra.Command {
	o := &statusOptions{}
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

Not shown yet (a later kmsctl release): each API server's key_id and loaded
EncryptionConfiguration, StorageVersionMigrations, each plugin's Status, the
transit key's versions and min_decryption_version, and the verdict per
version. -o json keeps its shape when they are added.`,
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
	fs.StringVar(&o.configPath, "config", "", "take the resources from encryption.resources of this kms.yaml instead of --resources")
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
	return nil
}

// Run scans etcd and prints the report.
func (o *statusOptions) Run(ctx context.Context, stdout io.Writer) error {
	var cfg *config.Config
	if o.configPath != "" {
		c, err := config.Load(o.configPath)
		if err != nil {
			return err
		}
		cfg = c
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
	if o.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(status)
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
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
