package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/rotation"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/transit"
)

// retireOptions are the flags of `kmsctl retire`.
type retireOptions struct {
	scanOptions
	vaultOptions
	to      int
	undo    bool
	dryRun  bool
	limit   int
	output  string
	timeout time.Duration
}

// RetireReport is `kmsctl retire -o json`: what was seen, decided and done.
// Fields are only ever added.
type RetireReport struct {
	rotation.RunResult
	// Warning is the reminder about etcd backups, when versions are retired.
	Warning string `json:"warning,omitempty"`
}

func newRetireCmd() *cobra.Command { return newRetireCmdEnv(os.Getenv) }

// newRetireCmdEnv is newRetireCmd reading VAULT_TOKEN through getenv.
func newRetireCmdEnv(getenv func(string) string) *cobra.Command {
	o := &retireOptions{vaultOptions: vaultOptions{getenv: getenv}}
	cmd := &cobra.Command{
		Use:   "retire (--config kms.yaml | --vault-address URL --vault-key-path MOUNT/keys/NAME --resources R,...) --etcd-endpoints URL[,URL...] [--to N] [--undo] [--dry-run]",
		Short: "Raise the transit key's min_decryption_version once etcd holds nothing under the older versions (--undo lowers it)",
		Long: `retire scans etcd (as kmsctl status does, without decrypting) and raises the
Vault transit key's min_decryption_version: by default as far as the scan
allows, to the oldest version any stored object still needs; --to N names it.
It refuses, changing nothing, unless every object of every scanned resource
is under version N or later, and lists what remains (resource,
namespace/name, up to --limit): rewrite those (kmsctl migrate, or any no-op
write: kubectl get -o json | kubectl replace -f -) and run retire again. After the write it reads the key back, and scans
again: if an object was written under a retired version meanwhile (an API
server still on the old key_id), it sets the old value back and refuses.

Retiring never deletes a key or a version: Vault keeps them and only refuses
to decrypt with versions below min_decryption_version. --undo lowers it again
(to --to N, default the oldest version Vault holds, normally 1); it needs no
scan, since lowering never makes stored data unreadable. etcd backups taken
before the migration still hold objects under the old versions: restoring
one needs --undo first.

Scan every resource the EncryptionConfiguration encrypts: --resources, or
encryption.resources of --config (required: there is no default). --config
also supplies vault.vaultAddress (the first address), vault.vaultKeyPath,
vault.vaultNamespace and vault.tls; flags given beside it win.

The Vault token is $VAULT_TOKEN or the file --vault-token-path, never a flag
value; it needs the operator policy (vault-operator-policy.hcl from kmsctl
render). Other VAULT_* variables are ignored: TLS is always verified.`,
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
func (o *retireOptions) AddFlags(fs *pflag.FlagSet) {
	o.scanOptions.AddFlags(fs, nil)
	o.vaultOptions.AddFlags(fs)
	fs.IntVar(&o.to, "to", 0, "the min_decryption_version to set (default: as far as the scan allows; with --undo, the oldest version Vault holds)")
	fs.BoolVar(&o.undo, "undo", false, "lower min_decryption_version instead (no scan needed)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the decision and change nothing")
	fs.IntVar(&o.limit, "limit", 20, "list at most this many remaining objects in a refusal")
	fs.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up on etcd and Vault after this long")
}

// Validate checks the flags. It reads no file.
func (o *retireOptions) Validate() error {
	configGiven := o.configPath != ""
	if !o.undo {
		if len(o.etcd.Endpoints) > 0 && !configGiven && !o.resourcesSet() {
			return errors.New("--resources or --config is required: retire must scan every resource the EncryptionConfiguration encrypts")
		}
		if err := o.scanOptions.Validate(configGiven); err != nil {
			return err
		}
	}
	switch {
	case o.to < 0:
		return errors.New("--to must be a key version, 1 or more")
	case o.limit < 1:
		return errors.New("--limit must be positive")
	case o.output != "table" && o.output != "json":
		return fmt.Errorf("-o must be table or json, not %q", o.output)
	case o.timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	return o.vaultOptions.Validate()
}

// Run scans, decides and applies; a refusal is printed, then returned as
// an error so the exit status is non-zero.
func (o *retireOptions) Run(ctx context.Context, stdout io.Writer) error {
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	tc, err := o.transitConfig(cfg)
	if err != nil {
		return err
	}
	client, err := transit.New(tc)
	if err != nil {
		return err
	}
	var resources []string
	if !o.undo {
		if resources, err = o.Resources(cfg, o.configPath); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	scanner := func(ctx context.Context) (scan.Report, error) {
		// Keep enough names per group to fill the refusal's list.
		return o.Scan(ctx, resources, o.limit)
	}
	res, err := rotation.Run(ctx, transitKey{client}, scanner, rotation.RunOptions{Undo: o.undo, To: o.to, Limit: o.limit, DryRun: o.dryRun})
	if err != nil {
		if res.Applied {
			return fmt.Errorf("%w (min_decryption_version was written: check it with `vault read %s`)", err, client.KeyPath())
		}
		return err
	}
	rep := RetireReport{RunResult: res}
	if !o.undo && res.Decision.Outcome == rotation.Raise {
		rep.Warning = backupWarning(res.Before.MinDecryption, res.Decision.To)
	}
	if o.output == "json" {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else if err := writeRetireTable(stdout, tc.Address, resources, rep); err != nil {
		return err
	}
	if res.Decision.Outcome == rotation.Refuse {
		return fmt.Errorf("retire refused: %s", res.Decision.Reason)
	}
	return nil
}

// transitKey adapts transit.Client to rotation.Key.
type transitKey struct{ c *transit.Client }

func (k transitKey) Read(ctx context.Context) (rotation.KeyState, error) {
	key, err := k.c.ReadKey(ctx)
	return keyState(key), err
}

// keyState is what rotation's decisions need of a key Vault reported.
func keyState(key transit.Key) rotation.KeyState {
	return rotation.KeyState{Name: key.Name, Latest: key.Latest, MinDecryption: key.MinDecryption,
		MinEncryption: key.MinEncryption, MinAvailable: key.MinAvailable}
}

func (k transitKey) SetMinDecryptionVersion(ctx context.Context, v int) error {
	return k.c.SetMinDecryptionVersion(ctx, v)
}

// backupWarning reminds that backups still need the versions retired.
func backupWarning(from, to int) string {
	return fmt.Sprintf("etcd backups taken before the migration still hold objects under transit key versions %s: before restoring one, run `kmsctl retire --undo` (nothing was deleted; Vault keeps every version)",
		versionRange(from, to-1))
}

func versionRange(a, b int) string {
	if a == b {
		return fmt.Sprintf("v%d", a)
	}
	return fmt.Sprintf("v%d to v%d", a, b)
}

// writeRetireTable prints the decision for a person.
func writeRetireTable(w io.Writer, addr string, resources []string, r RetireReport) error {
	b, d := r.Before, r.Decision
	fmt.Fprintf(w, "transit key %s at %s: latest_version %d, min_decryption_version %d\n", b.Name, addr, b.Latest, b.MinDecryption)
	if r.Undo {
		fmt.Fprintln(w, "--undo: no etcd scan needed: lowering min_decryption_version never makes stored data unreadable")
	} else {
		fmt.Fprintf(w, "etcd scan at revision %d of %s\n", r.ScanRevision, strings.Join(resources, ", "))
	}
	dry := ""
	if r.DryRun {
		dry = " (dry run: nothing changed)"
	}
	switch d.Outcome {
	case rotation.Raise, rotation.Lower:
		if !r.Applied {
			fmt.Fprintf(w, "would set min_decryption_version %d -> %d%s: %s\n", b.MinDecryption, d.To, dry, d.Reason)
			break
		}
		fmt.Fprintf(w, "min_decryption_version %d -> %d (read back from Vault: %d): %s\n", b.MinDecryption, d.To, r.After.MinDecryption, d.Reason)
		if d.Outcome == rotation.Raise {
			fmt.Fprintf(w, "retired %s: Vault keeps them but no longer decrypts with them; `kmsctl retire --undo` makes them usable again\n", versionRange(b.MinDecryption, d.To-1))
		} else {
			fmt.Fprintf(w, "Vault decrypts with %s again; run `kmsctl retire` to retire them again\n", versionRange(d.To, b.MinDecryption-1))
		}
	case rotation.Unchanged:
		fmt.Fprintf(w, "unchanged%s: %s\n", dry, d.Reason)
	case rotation.Refuse:
		fmt.Fprintf(w, "refused, nothing changed: %s\n", d.Reason)
		if len(d.Remaining) > 0 {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RESOURCE\tOBJECT\tVERSION\tWHY")
			for _, o := range d.Remaining {
				v := "-"
				if o.TransitVersion > 0 {
					v = fmt.Sprintf("v%d", o.TransitVersion)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", o.Resource, o.Object, v, o.Why)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(w, "(%d listed of %d)\n", len(d.Remaining), d.RemainingCount)
		}
		fmt.Fprintln(w, refusalHint(r))
	}
	if r.Warning != "" {
		fmt.Fprintf(w, "WARNING: %s\n", r.Warning)
	}
	return nil
}

// refusalHint says what to do about a refusal.
func refusalHint(r RetireReport) string {
	for _, o := range r.Decision.Remaining {
		if o.TransitVersion > 0 && o.TransitVersion < r.Before.MinDecryption {
			return "next: run `kmsctl retire --undo` so Vault can decrypt them again, then `kmsctl migrate --transit-version <latest>`, then `kmsctl retire`"
		}
	}
	if len(r.Decision.Remaining) > 0 {
		return "next: run `kmsctl migrate --transit-version <latest>` (or rewrite the listed objects), check with `kmsctl status`, then run `kmsctl retire` again"
	}
	return "next: nothing was changed; see the reason above"
}
