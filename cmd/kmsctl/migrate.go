package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate/kube"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// migrateOptions are the flags of `kmsctl migrate`.
type migrateOptions struct {
	scanOptions
	kubeconfig         string
	engine             string
	transitVersion     int
	includeUnencrypted bool
	workers            int
	qps                float64
	limit              int
	output             string
}

// MigrateReport is `kmsctl migrate -o json`. Fields are only ever added.
type MigrateReport struct {
	Engine         string `json:"engine"`
	TransitVersion int    `json:"transitVersion"`
	// Before and After are the scans before and after the rewrite.
	Before []StaleCount `json:"before"`
	After  []StaleCount `json:"after"`
	// BeforeRevision and AfterRevision are the etcd revisions scanned.
	BeforeRevision int64          `json:"beforeRevision"`
	AfterRevision  int64          `json:"afterRevision"`
	Result         migrate.Result `json:"result"`
	// Remaining lists, up to --limit, objects still stale after the run,
	// and RemainingCount counts all of them.
	Remaining      []migrate.Object `json:"remaining,omitempty"`
	RemainingCount int              `json:"remainingCount"`
}

// StaleCount is one resource's objects in a scan.
type StaleCount struct {
	Resource string `json:"resource"`
	Total    int    `json:"total"`
	// Stale counts the objects migrate rewrites: KMSv2 under a transit
	// version below --transit-version (and, with --include-unencrypted,
	// unencrypted ones).
	Stale int `json:"stale"`
	// Malformed counts objects no provider can read: migrate cannot
	// rewrite them; kmsctl status lists them.
	Malformed int `json:"malformed"`
}

func newMigrateCmd() *cobra.Command {
	o := &migrateOptions{}
	cmd := &cobra.Command{
		Use:   "migrate --engine=direct --transit-version N --etcd-endpoints URL[,URL...] --resources R,... [--kubeconfig FILE]",
		Short: "Rewrite every object stored under an older transit key version, then prove it with an etcd scan",
		Long: `migrate rewrites, through the API server, every object of the given
resources that etcd holds under a transit key version older than
--transit-version, so the API server stores it again under its current key
(a no-op write of a stale object is written anyway). It scans etcd first
(as kmsctl status does, without decrypting) and rewrites only what the scan
shows stale: interrupted and run again, it continues where it stopped. At
the end it scans again, and succeeds only when nothing is left under an
older version; otherwise it lists what remains and exits non-zero.

Run it only after every API server reports the new key_id (its
apiserver_envelope_encryption_key_id_hash metric, or kmsctl status): an API
server still on the old key_id writes the object under the old key again.
(kmsctl rotate waits for that and fills --transit-version in.)

--engine=direct is migrate's own engine: --workers rewrites in flight, at
most --qps objects per second (each is a GET and a PUT); a conflict or a
not-found counts as done (someone else wrote or deleted the object); 429s
and timeouts are retried with backoff; any other error fails that object
only and is reported. --engine=svm (Kubernetes' StorageVersionMigration)
is not implemented yet.

Progress goes to stderr every 2 seconds; the report to stdout (-o table or
json).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			ctx := cmd.Context()
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return o.Run(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// AddFlags registers the options' flags.
func (o *migrateOptions) AddFlags(fs *pflag.FlagSet) {
	o.scanOptions.AddFlags(fs, nil)
	fs.IntVar(&o.transitVersion, "transit-version", 0, "the current transit key version: objects under older versions are rewritten (required)")
	o.addRewriteFlags(fs)
}

// addRewriteFlags registers how to rewrite (all but what to scan and which
// version is current), shared with rotate.
func (o *migrateOptions) addRewriteFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&o.engine, "engine", "direct", "migration engine: direct (svm is not implemented yet)")
	fs.BoolVar(&o.includeUnencrypted, "include-unencrypted", false, "also rewrite objects stored unencrypted (identity), so they get encrypted")
	fs.IntVar(&o.workers, "workers", migrate.DefaultWorkers, "rewrites in flight at once")
	fs.Float64Var(&o.qps, "qps", migrate.DefaultQPS, "at most this many objects rewritten per second (each is a GET and a PUT)")
	fs.IntVar(&o.limit, "limit", 20, "list at most this many remaining objects")
	fs.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
}

// Validate checks the flags. It reads no file.
func (o *migrateOptions) Validate() error {
	if len(o.etcd.Endpoints) > 0 && !o.resourcesSet() {
		return errors.New("--resources is required: name every resource the EncryptionConfiguration encrypts")
	}
	if err := o.scanOptions.Validate(false); err != nil {
		return err
	}
	if o.transitVersion < 1 {
		return errors.New("--transit-version is required: the transit key version every API server now encrypts with")
	}
	return o.validateRewrite()
}

// validateRewrite checks the flags of addRewriteFlags.
func (o *migrateOptions) validateRewrite() error {
	switch {
	case o.engine == "svm":
		return errors.New("--engine=svm is not implemented yet: use --engine=direct")
	case o.engine != "direct":
		return fmt.Errorf("--engine must be direct, not %q", o.engine)
	case o.workers < 1:
		return errors.New("--workers must be positive")
	case o.qps <= 0:
		return errors.New("--qps must be positive")
	case o.limit < 1:
		return errors.New("--limit must be positive")
	case o.output != "table" && o.output != "json":
		return fmt.Errorf("-o must be table or json, not %q", o.output)
	}
	return nil
}

// stale is whether migrate rewrites an object stored as s.
func (o *migrateOptions) stale(s scan.Stored) bool {
	switch s.Class {
	case scan.ClassKMSv2:
		return s.TransitVersion > 0 && s.TransitVersion < o.transitVersion
	case scan.ClassIdentity:
		return o.includeUnencrypted
	}
	return false
}

// scanStale scans etcd once and returns the counts and every stale object.
func (o *migrateOptions) scanStale(ctx context.Context) ([]StaleCount, int64, []migrate.Object, error) {
	counts := map[string]*StaleCount{}
	var objs []migrate.Object
	visit := func(resource, object string, s scan.Stored) {
		c := counts[resource]
		if c == nil {
			c = &StaleCount{Resource: resource}
			counts[resource] = c
		}
		c.Total++
		if s.Class == scan.ClassMalformed {
			c.Malformed++
		}
		if !o.stale(s) {
			return
		}
		c.Stale++
		// Names cannot contain '/': a slash means namespace/name.
		ns, name, ok := strings.Cut(object, "/")
		if !ok {
			ns, name = "", object
		}
		objs = append(objs, migrate.Object{Resource: resource, Namespace: ns, Name: name})
	}
	client, err := scan.Dial(o.etcd)
	if err != nil {
		return nil, 0, nil, err
	}
	defer client.Close()
	rep, err := scan.Scan(ctx, scan.NewEtcdReader(client), o.resources, scan.Options{EtcdPrefix: o.etcdPrefix, NameLimit: -1, Visit: visit})
	if err != nil {
		return nil, 0, nil, err
	}
	out := make([]StaleCount, len(o.resources))
	for i, r := range o.resources {
		out[i] = StaleCount{Resource: r}
		if c := counts[r]; c != nil {
			out[i] = *c
		}
	}
	return out, rep.Revision, objs, nil
}

// scanLister is a migrate.Lister over an etcd scan; it keeps the counts.
type scanLister struct {
	o        *migrateOptions
	counts   []StaleCount
	revision int64
}

func (l *scanLister) List(ctx context.Context) ([]migrate.Object, error) {
	counts, rev, objs, err := l.o.scanStale(ctx)
	l.counts, l.revision = counts, rev
	return objs, err
}

// Run scans, rewrites what is stale, scans again and reports; stale
// objects left are printed, then returned as an error (non-zero exit).
func (o *migrateOptions) Run(ctx context.Context, stdout, stderr io.Writer) error {
	cfg, err := loadKubeconfig(o.kubeconfig)
	if err != nil {
		return err
	}
	rw, err := kube.New(cfg, o.qps)
	if err != nil {
		return err
	}
	// Resolve every resource first, so a wrong name fails before any write.
	for _, r := range o.resources {
		if _, err := rw.Resolve(r); err != nil {
			return fmt.Errorf("--resources: %w", err)
		}
	}
	lister := &scanLister{o: o}
	res, runErr := migrate.Run(ctx, lister, rw, migrate.Options{Workers: o.workers, QPS: o.qps,
		Progress: func(p migrate.Progress) { fmt.Fprintf(stderr, "migrate: %s\n", p) }})
	if runErr != nil && lister.counts == nil {
		return runErr
	}
	rep := MigrateReport{Engine: o.engine, TransitVersion: o.transitVersion, Before: lister.counts,
		BeforeRevision: lister.revision, Result: res}
	if runErr != nil {
		// Interrupted: no final scan; the next run lists what is left.
		if err := o.write(stdout, rep); err != nil {
			return err
		}
		return fmt.Errorf("migrate interrupted: %w (run it again: it continues with what is still stale)", runErr)
	}
	after, rev, left, err := o.scanStale(ctx)
	if err != nil {
		return fmt.Errorf("final etcd scan: %w", err)
	}
	rep.After, rep.AfterRevision, rep.RemainingCount = after, rev, len(left)
	rep.Remaining = left[:min(len(left), o.limit)]
	if err := o.write(stdout, rep); err != nil {
		return err
	}
	if rep.RemainingCount > 0 {
		return fmt.Errorf("%d objects are still under transit key versions below %d (listed above): check that every API server reports the new key_id, then run migrate again", rep.RemainingCount, o.transitVersion)
	}
	return nil
}

func (o *migrateOptions) write(w io.Writer, r MigrateReport) error {
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	res := r.Result
	fmt.Fprintf(w, "engine %s, stale: under transit versions below v%d", r.Engine, r.TransitVersion)
	if o.includeUnencrypted {
		fmt.Fprint(w, " or unencrypted")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "rewrote %d of %d objects in %.1fs (%.0f objects/s): %d conflicts and %d not found counted as done, %d retries, %d failed, %d not attempted\n",
		res.Rewritten, res.Total, res.Seconds, res.PerSecond, res.Conflicts, res.NotFound, res.Retries, len(res.Failed), res.NotAttempted)
	for _, f := range res.Failed {
		fmt.Fprintf(w, "failed: %s\n", f.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESOURCE\tTOTAL\tSTALE BEFORE\tSTALE AFTER\tMALFORMED")
	for i, b := range r.Before {
		after, malformed := "-", fmt.Sprint(b.Malformed)
		if i < len(r.After) {
			after, malformed = fmt.Sprint(r.After[i].Stale), fmt.Sprint(r.After[i].Malformed)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", b.Resource, b.Total, b.Stale, after, malformed)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.After == nil {
		return nil
	}
	fmt.Fprintf(w, "etcd scans at revisions %d (before) and %d (after)\n", r.BeforeRevision, r.AfterRevision)
	if r.RemainingCount == 0 {
		fmt.Fprintf(w, "done: nothing left under transit versions below v%d\n", r.TransitVersion)
		return nil
	}
	fmt.Fprintf(w, "remaining (%d listed of %d):\n", len(r.Remaining), r.RemainingCount)
	for _, obj := range r.Remaining {
		fmt.Fprintf(w, "  %s\n", obj)
	}
	return nil
}

// loadKubeconfig loads path, else $KUBECONFIG, else ~/.kube/config.
func loadKubeconfig(path string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	return cfg, nil
}
