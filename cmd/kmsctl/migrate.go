package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate/kube"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate/svm"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// migrateOptions are the flags of `kmsctl migrate`.
type migrateOptions struct {
	scanOptions
	kubeconfig         string
	engine             string
	transitVersion     int
	fromProvider       string
	includeUnencrypted bool
	workers            int
	qps                float64
	limit              int
	output             string
	// chosen is the engine resolveEngine chose (direct or svm); empty
	// until then.
	chosen string
}

// MigrateReport is `kmsctl migrate -o json`. Fields are only ever added.
type MigrateReport struct {
	Engine         string `json:"engine"`
	TransitVersion int    `json:"transitVersion"`
	// FromProvider is --from-provider: objects stored under that provider
	// were rewritten (TransitVersion is then 0).
	FromProvider string `json:"fromProvider,omitempty"`
	// Before and After are the scans before and after the rewrite.
	Before []StaleCount `json:"before"`
	After  []StaleCount `json:"after"`
	// BeforeRevision and AfterRevision are the etcd revisions scanned.
	BeforeRevision int64          `json:"beforeRevision"`
	AfterRevision  int64          `json:"afterRevision"`
	Result         migrate.Result `json:"result"`
	// Passes counts --engine=direct's rewrite passes (see directPasses);
	// 0 for svm.
	Passes int `json:"passes,omitempty"`
	// Remaining lists, up to --limit, objects still stale after the run,
	// and RemainingCount counts all of them.
	Remaining      []migrate.Object `json:"remaining,omitempty"`
	RemainingCount int              `json:"remainingCount"`
	// SVM is what --engine=svm did; absent for direct. Its Result counts
	// come from the etcd scans: total is what the first scan found stale,
	// rewritten what no later scan found stale any more.
	SVM *SVMReport `json:"svm,omitempty"`
}

// SVMReport is the StorageVersionMigrations of a --engine=svm run.
type SVMReport struct {
	// Migrations are every one followed, as last observed, in order.
	Migrations []svm.Migration `json:"migrations"`
	// Deleted names kmsctl's finished migrations deleted once the scan
	// proved their resource migrated.
	Deleted []string `json:"deleted,omitempty"`
	// FirstMigratedSeconds is when a scan first showed an object migrated:
	// before it, the controller waited (on a quiet resource, for its
	// cache to reach the migration's resourceVersion: up to a minute).
	FirstMigratedSeconds float64 `json:"firstMigratedSeconds,omitempty"`
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
		Use:   "migrate [--engine=auto|svm|direct] (--transit-version N | --from-provider NAME) --etcd-endpoints URL[,URL...] --resources R,... [--kubeconfig FILE]",
		Short: "Rewrite every object stored under an older transit key version (or another provider), then prove it with an etcd scan",
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

--engine=svm has the cluster's own StorageVersionMigration
(storagemigration.k8s.io/v1, GA in Kubernetes 1.37, run by
kube-controller-manager's storage-version-migrator-controller) rewrite each
resource: one migration per resource, labelled
app.kubernetes.io/managed-by=kmsctl, followed with an etcd scan every 2
seconds. A migration reports Succeeded once it has sent its requests,
whatever key the API server used, so when the scan still finds stale
objects another migration follows (3 in all at most). Interrupted and run
again, it follows the migration still running instead of starting another.
Once the scan proves a resource migrated, kmsctl deletes its finished
migrations. Its user needs create, get, list, watch and delete on
storageversionmigrations.

--engine=direct is migrate's own engine: --workers rewrites in flight, at
most --qps objects per second (each is a GET and a PUT); a conflict or a
not-found counts as done (someone else wrote or deleted the object); 429s
and timeouts are retried with backoff; any other error fails that object
only and is reported.

--engine=auto (the default) is svm when the API server serves
storagemigration.k8s.io/v1, else direct, and says which on stderr.

--from-provider NAME, instead of --transit-version, rewrites every object
stored under the KMS provider NAME: after kmsctl rollout has promoted a new
provider on every node, this empties the old one so that rollout
--retire-provider NAME can remove it. It runs the direct engine (auto
chooses it; svm is refused).

--engine=direct rewrites in passes: after the first, over the first scan's
list, a new scan finds what was written stale meanwhile (an API server that
switched its key a moment late) and rewrites it, 3 passes at most.

Progress goes to stderr every 2 seconds: on a terminal, one line redrawn
with a bar, objects/s and the time left; otherwise a plain line each time.
The report goes to stdout (-o table or json).`,
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
	fs.IntVar(&o.transitVersion, "transit-version", 0, "the current transit key version: objects under older versions are rewritten")
	fs.StringVar(&o.fromProvider, "from-provider", "", "instead of --transit-version: rewrite every object stored under this KMS provider (one being retired)")
	o.addRewriteFlags(fs)
}

// addRewriteFlags registers how to rewrite (all but what to scan and which
// version is current), shared with rotate.
func (o *migrateOptions) addRewriteFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&o.engine, "engine", "auto", "migration engine: svm (the cluster's StorageVersionMigration), direct (kmsctl's own), or auto: svm where the API server serves it, else direct")
	fs.BoolVar(&o.includeUnencrypted, "include-unencrypted", false, "also rewrite objects stored unencrypted (identity), so they get encrypted")
	fs.IntVar(&o.workers, "workers", migrate.DefaultWorkers, "--engine=direct: rewrites in flight at once")
	fs.Float64Var(&o.qps, "qps", migrate.DefaultQPS, "--engine=direct: at most this many objects rewritten per second (each is a GET and a PUT)")
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
	switch {
	case o.transitVersion != 0 && o.fromProvider != "":
		return errors.New("--transit-version and --from-provider are exclusive: migrate off old key versions, or off a provider")
	case o.fromProvider != "":
		if o.engine == "svm" {
			return errors.New("--from-provider runs --engine=direct: kmsctl's StorageVersionMigrations follow transit key versions")
		}
	case o.transitVersion < 1:
		return errors.New("--transit-version (the transit key version every API server now encrypts with) or --from-provider (a provider every API server has stopped writing with) is required")
	}
	return o.validateRewrite()
}

// validateRewrite checks the flags of addRewriteFlags.
func (o *migrateOptions) validateRewrite() error {
	switch {
	case o.engine != "auto" && o.engine != "svm" && o.engine != "direct":
		return fmt.Errorf("--engine must be auto, svm or direct, not %q", o.engine)
	case o.engine == "svm" && (o.changed("workers") || o.changed("qps")):
		return errors.New("--workers and --qps pace --engine=direct only: kube-controller-manager paces a StorageVersionMigration")
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

// changed reports whether the flag name was given.
func (o *migrateOptions) changed(name string) bool {
	return o.flags != nil && o.flags.Changed(name)
}

// pickEngine is the engine to run for --engine=requested, given whether
// the API server serves StorageVersionMigrations; svm where it is not
// served is an error.
func pickEngine(requested string, served bool) (string, error) {
	switch {
	case requested == "direct":
		return "direct", nil
	case served:
		return "svm", nil
	case requested == "svm":
		return "", errors.New("not served")
	}
	return "direct", nil
}

// resolveEngine sets o.chosen from --engine, asking the API server of cfg
// (discovery) unless --engine=direct, and says on stderr what auto chose.
// Rotate calls it before rotating, so that a refused --engine=svm costs
// nothing.
func (o *migrateOptions) resolveEngine(ctx context.Context, cfg *rest.Config, stderr io.Writer) error {
	if o.chosen != "" {
		return nil
	}
	if o.fromProvider != "" {
		if o.engine == "auto" {
			fmt.Fprintln(stderr, "migrate: --engine=auto: --from-provider runs the direct engine")
		}
		o.chosen = "direct"
		return nil
	}
	served := false
	if o.engine != "direct" {
		var err error
		if served, err = kube.ServesSVM(ctx, cfg); err != nil {
			return fmt.Errorf("--engine=%s: %w", o.engine, err)
		}
	}
	engine, err := pickEngine(o.engine, served)
	if err != nil {
		return fmt.Errorf("--engine=svm: %s does not serve %s StorageVersionMigrations (Kubernetes 1.37 or later): use --engine=direct", cfg.Host, kube.SVMGroupVersion)
	}
	if o.engine == "auto" {
		if served {
			fmt.Fprintf(stderr, "migrate: --engine=auto: %s serves %s: using svm (StorageVersionMigration, run by kube-controller-manager)\n", cfg.Host, kube.SVMGroupVersion)
		} else {
			fmt.Fprintf(stderr, "migrate: --engine=auto: %s does not serve %s: using direct\n", cfg.Host, kube.SVMGroupVersion)
		}
	}
	if engine == "svm" && (o.changed("workers") || o.changed("qps")) {
		fmt.Fprintln(stderr, "migrate: --workers and --qps pace --engine=direct only: ignored")
	}
	o.chosen = engine
	return nil
}

// stale is whether migrate rewrites an object stored as s.
func (o *migrateOptions) stale(s scan.Stored) bool {
	if o.fromProvider != "" {
		// A malformed value under the provider stays malformed whoever
		// rewrites it: the API server cannot read it to write it back.
		return s.Provider == o.fromProvider && s.Class != scan.ClassMalformed
	}
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

// Run picks the engine, scans, has what is stale rewritten, scans again
// and reports; stale objects left are printed, then returned as an error
// (non-zero exit).
func (o *migrateOptions) Run(ctx context.Context, stdout, stderr io.Writer) error {
	cfg, err := loadKubeconfig(o.kubeconfig)
	if err != nil {
		return err
	}
	if err := o.resolveEngine(ctx, cfg, stderr); err != nil {
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
	if o.chosen == "svm" {
		return o.runSVM(ctx, cfg, rw, stdout, stderr)
	}
	pr := newProgressPrinter(stderr, "migrate: ")
	defer pr.Done()
	opts := migrate.Options{Workers: o.workers, QPS: o.qps,
		Progress: func(p migrate.Progress) { pr.Update(p.Done, p.Total, p.String()) }}
	start := time.Now()
	lister := &scanLister{o: o}
	res, runErr := migrate.Run(ctx, lister, rw, opts)
	if runErr != nil && lister.counts == nil {
		return runErr
	}
	rep := MigrateReport{Engine: o.chosen, TransitVersion: o.transitVersion, FromProvider: o.fromProvider, Before: lister.counts,
		BeforeRevision: lister.revision, Result: res, Passes: 1}
	// Objects written stale after the first scan (by an API server that
	// switched its DEK a moment after reporting the new key_id, or by one
	// still on the old key) are not in the first list: rewrite what a
	// fresh scan finds, a bounded number of times, as the SVM engine does.
	for runErr == nil && rep.Passes < directPasses {
		_, _, left, err := o.scanStale(ctx)
		if err != nil {
			return fmt.Errorf("etcd scan after pass %d: %w", rep.Passes, err)
		}
		if len(left) == 0 {
			break
		}
		rep.Passes++
		pr.Println(fmt.Sprintf("%d objects are stale that the first scan did not list (written since by a lagging API server); rewriting them, pass %d of %d", len(left), rep.Passes, directPasses))
		var more migrate.Result
		more, runErr = migrate.Run(ctx, listed(left), rw, opts)
		rep.Result = addResults(rep.Result, more, time.Since(start))
	}
	if runErr != nil {
		// Interrupted: no final scan; the next run lists what is left.
		if err := o.write(stdout, rep); err != nil {
			return err
		}
		return fmt.Errorf("migrate interrupted: %w (run it again: it continues with what is still stale)", runErr)
	}
	return o.finish(ctx, stdout, rep)
}

// directPasses bounds --engine=direct's rewrite passes: the first over the
// first scan, then over what a new scan finds stale. Objects that keep
// coming back stale mean an API server still writes under an older key_id;
// more passes would not help, and the final scan lists them.
const directPasses = 3

// listed is a migrate.Lister of a fixed list.
type listed []migrate.Object

func (l listed) List(context.Context) ([]migrate.Object, error) { return l, nil }

// addResults adds pass b to a; elapsed is the time since the first pass
// began, which the rate is over.
func addResults(a, b migrate.Result, elapsed time.Duration) migrate.Result {
	a.Total += b.Total
	a.Rewritten += b.Rewritten
	a.Conflicts += b.Conflicts
	a.NotFound += b.NotFound
	a.Retries += b.Retries
	a.Failed = append(a.Failed, b.Failed...)
	a.NotAttempted += b.NotAttempted
	a.Seconds = elapsed.Seconds()
	if a.Seconds > 0 {
		a.PerSecond = float64(a.Rewritten+a.Conflicts+a.NotFound) / a.Seconds
	}
	return a
}

// finish scans a last time, writes the report, and returns an error when
// objects are left under older versions: the same end for every engine.
func (o *migrateOptions) finish(ctx context.Context, stdout io.Writer, rep MigrateReport) error {
	after, rev, left, err := o.scanStale(ctx)
	if err != nil {
		return fmt.Errorf("final etcd scan: %w", err)
	}
	rep.After, rep.AfterRevision, rep.RemainingCount = after, rev, len(left)
	rep.Remaining = left[:min(len(left), o.limit)]
	if err := o.write(stdout, rep); err != nil {
		return err
	}
	if rep.RemainingCount > 0 && o.fromProvider != "" {
		return fmt.Errorf("%d objects are still stored under provider %s (listed above): check that no API server lists it first in its EncryptionConfiguration (kmsctl rollout plan), then run migrate again", rep.RemainingCount, o.fromProvider)
	}
	if rep.RemainingCount > 0 {
		return fmt.Errorf("%d objects are still under transit key versions below %d (listed above): check that every API server reports the new key_id, then run migrate again", rep.RemainingCount, o.transitVersion)
	}
	return nil
}

// scanCounter is an svm.Scanner over the etcd scan; it keeps the first
// scan's counts as the report's "before".
type scanCounter struct {
	o        *migrateOptions
	before   []StaleCount
	revision int64
}

func (c *scanCounter) Stale(ctx context.Context) (map[string]int, error) {
	counts, rev, _, err := c.o.scanStale(ctx)
	if err != nil {
		return nil, err
	}
	if c.before == nil {
		c.before, c.revision = counts, rev
	}
	out := make(map[string]int, len(counts))
	for _, sc := range counts {
		out[sc.Resource] = sc.Stale
	}
	return out, nil
}

// runSVM is Run for --engine=svm: StorageVersionMigrations do the writes,
// followed by etcd scans; then the same final scan and report as direct.
func (o *migrateOptions) runSVM(ctx context.Context, cfg *rest.Config, rw *kube.Rewriter, stdout, stderr io.Writer) error {
	ms, err := kube.NewMigrations(cfg, rw, o.transitVersion)
	if err != nil {
		return err
	}
	scans := &scanCounter{o: o}
	pr := newProgressPrinter(stderr, "migrate: ")
	res, runErr := svm.Run(ctx, ms, scans, svm.Options{Resources: o.resources,
		Progress: func(p svm.Progress) { pr.Update(p.Migrated, p.Total, p.String()) },
		Warn:     func(format string, args ...any) { pr.Println("warning: " + fmt.Sprintf(format, args...)) }})
	pr.Done()
	if runErr != nil && scans.before == nil {
		return runErr
	}
	rep := MigrateReport{Engine: o.chosen, TransitVersion: o.transitVersion, Before: scans.before, BeforeRevision: scans.revision,
		Result: migrate.Result{Total: res.Total, Rewritten: res.Migrated, Seconds: res.Seconds, PerSecond: res.PerSecond},
		SVM:    &SVMReport{Migrations: res.Migrations, Deleted: res.Deleted, FirstMigratedSeconds: res.FirstMigratedSeconds}}
	if ctx.Err() != nil {
		if err := o.write(stdout, rep); err != nil {
			return err
		}
		return fmt.Errorf("migrate interrupted: %w (run it again: it follows the StorageVersionMigrations still running)", ctx.Err())
	}
	err = o.finish(ctx, stdout, rep)
	if runErr != nil {
		// One line per resource that gave up is still one line each.
		reason := strings.ReplaceAll(runErr.Error(), "\n", "; ")
		if err != nil {
			return fmt.Errorf("--engine=svm: %s; %w", reason, err)
		}
		return fmt.Errorf("--engine=svm: %s", reason)
	}
	return err
}

func (o *migrateOptions) write(w io.Writer, r MigrateReport) error {
	if o.output == "json" {
		return writeJSON(w, r)
	}
	res := r.Result
	if r.FromProvider != "" {
		fmt.Fprintf(w, "engine %s, stale: under provider %s", r.Engine, r.FromProvider)
	} else {
		fmt.Fprintf(w, "engine %s, stale: under transit versions below v%d", r.Engine, r.TransitVersion)
	}
	if o.includeUnencrypted {
		fmt.Fprint(w, " or unencrypted")
	}
	fmt.Fprintln(w)
	if r.SVM != nil {
		fmt.Fprintf(w, "StorageVersionMigrations took %d of %d stale objects off older versions in %.1fs (%.0f objects/s, counted by etcd scans):", res.Rewritten, res.Total, res.Seconds, res.PerSecond)
		if len(r.SVM.Migrations) == 0 {
			fmt.Fprint(w, " none needed")
		}
		for _, m := range r.SVM.Migrations {
			fmt.Fprintf(w, " %s %s", m.Name, m.State)
			if m.State == svm.StateFailed {
				fmt.Fprintf(w, " (%s)", m.Message)
			}
		}
		fmt.Fprintln(w)
		if r.SVM.FirstMigratedSeconds > 0 {
			fmt.Fprintf(w, "first object migrated after %.0fs (the controller starts once its cache of the resource is current)\n", r.SVM.FirstMigratedSeconds)
		}
		if len(r.SVM.Deleted) > 0 {
			fmt.Fprintf(w, "deleted finished StorageVersionMigrations: %s\n", strings.Join(r.SVM.Deleted, ", "))
		}
	} else {
		passes := ""
		if r.Passes > 1 {
			passes = fmt.Sprintf(" in %d passes", r.Passes)
		}
		fmt.Fprintf(w, "rewrote %d of %d objects%s in %.1fs (%.0f objects/s): %d conflicts and %d not found counted as done, %d retries, %d failed, %d not attempted\n",
			res.Rewritten, res.Total, passes, res.Seconds, res.PerSecond, res.Conflicts, res.NotFound, res.Retries, len(res.Failed), res.NotAttempted)
	}
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
