package svm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate"
)

// Client is the cluster's StorageVersionMigrations, as far as the run
// touches them: only those it created, which carry its label.
type Client interface {
	// Active returns the newest pending or running migration of ours for
	// resource, nil if there is none.
	Active(ctx context.Context, resource string) (*Migration, error)
	// Create creates a migration of resource and returns it.
	Create(ctx context.Context, resource string) (Migration, error)
	// Get observes one migration.
	Get(ctx context.Context, name string) (Migration, error)
	// DeleteFinished deletes ours for resource that Succeeded or Failed,
	// and returns their names.
	DeleteFinished(ctx context.Context, resource string) ([]string, error)
}

// Scanner scans etcd once and returns each resource's stale objects.
type Scanner interface {
	Stale(ctx context.Context) (map[string]int, error)
}

// DefaultEvery is how often Run observes, scans and reports by default.
const DefaultEvery = 2 * time.Second

// Options tune Run. Resources is required; the rest has defaults.
type Options struct {
	// Resources are the EncryptionConfiguration names to migrate.
	Resources []string
	Limits    Limits
	// Every is the time between passes (default DefaultEvery).
	Every time.Duration
	// Progress, when set, is called after every pass but the last, and
	// once at the end.
	Progress func(Progress)
	// Warn receives what goes wrong without failing the run (a finished
	// migration that could not be deleted).
	Warn func(format string, args ...any)
	// Now and Sleep are the clock (default time.Now and a timer honouring
	// ctx); tests replace them.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

func (o Options) withDefaults() Options {
	o.Limits = o.Limits.withDefaults()
	if o.Every <= 0 {
		o.Every = DefaultEvery
	}
	if o.Warn == nil {
		o.Warn = func(string, ...any) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = migrate.Sleep
	}
	return o
}

// Progress is a snapshot of a run, from its latest scan.
type Progress struct {
	// Total is the stale objects of the first scan; Stale those of the
	// latest. Migrated is Total - Stale, never below 0 (an API server on
	// the old key can add stale objects).
	Total, Stale, Migrated int
	Elapsed                time.Duration
	// PerSecond is Migrated / Elapsed.
	PerSecond float64
	// ETA is the time left at PerSecond; 0 when unknown or finished.
	ETA time.Duration
	// Migrations are the migrations followed now, one per resource not yet
	// finished.
	Migrations []Migration
}

// String is the plain progress line.
func (p Progress) String() string {
	pct := 100.0
	if p.Total > 0 {
		pct = 100 * float64(p.Migrated) / float64(p.Total)
	}
	eta := "-"
	if p.ETA > 0 {
		eta = p.ETA.Round(time.Second).String()
	}
	s := fmt.Sprintf("%d/%d objects (%.0f%%), %d still stale in etcd, %.0f objects/s, ETA %s", p.Migrated, p.Total, pct, p.Stale, p.PerSecond, eta)
	var ms []string
	for _, m := range p.Migrations {
		ms = append(ms, fmt.Sprintf("%s %s %s", m.Resource, m.Name, m.State))
	}
	if len(ms) > 0 {
		s += "; " + strings.Join(ms, ", ")
	}
	return s
}

// Result is what Run did.
type Result struct {
	// Total is the stale objects of the first scan, Migrated those of
	// them no longer stale in the last (a deleted object counts: nothing
	// of it is left under the old key).
	Total, Migrated int
	Seconds         float64
	PerSecond       float64
	// FirstMigratedSeconds is when, from the start, a scan first showed
	// an object migrated (0 if none did): kube-controller-manager 1.37
	// starts writing only once its garbage collector's cache of the
	// resource reaches the resourceVersion it recorded for the migration,
	// which on a quiet resource waits for the next watch bookmark.
	FirstMigratedSeconds float64
	// Migrations lists every migration followed, as last observed, in the
	// order they were created or adopted.
	Migrations []Migration
	// Deleted names the finished migrations of ours deleted once the scan
	// proved their resource migrated.
	Deleted []string
}

// follow is Run's state for one resource.
type follow struct {
	resource string
	current  *Migration
	rounds   int
	// stale is the latest scan's count; lastChange when the state or the
	// followed migration changed, or stale went down.
	stale      int
	lastChange time.Time
	finished   bool
}

// Run has StorageVersionMigrations migrate every resource of
// opts.Resources, following the rules of Next and the ordering in the
// package doc. Its error joins the reasons of every resource that gave
// up, or is the failed observation, scan or creation, or ctx's.
func Run(ctx context.Context, c Client, s Scanner, opts Options) (Result, error) {
	opts = opts.withDefaults()
	if len(opts.Resources) == 0 {
		return Result{}, errors.New("svm: no resources to migrate")
	}
	start := opts.Now()
	var res Result
	// followed holds every migration followed, in order; each follow's
	// current points into it, so observations update both.
	var followed []*Migration
	follows := make([]*follow, len(opts.Resources))
	for i, r := range opts.Resources {
		f := &follow{resource: r, stale: -1, lastChange: start}
		// A pending or running migration of ours is an earlier run's,
		// killed before it finished: follow it rather than start another.
		m, err := c.Active(ctx, r)
		if err != nil {
			return res, fmt.Errorf("find running StorageVersionMigrations of %s: %w", r, err)
		}
		if m != nil {
			f.current, f.rounds = m, 1
			followed = append(followed, m)
		}
		follows[i] = f
	}
	progress := func(now time.Time) Progress {
		p := Progress{Total: res.Total, Elapsed: now.Sub(start)}
		for _, f := range follows {
			p.Stale += max(f.stale, 0)
			if !f.finished && f.current != nil {
				p.Migrations = append(p.Migrations, *f.current)
			}
		}
		p.Migrated = max(p.Total-p.Stale, 0)
		if s := p.Elapsed.Seconds(); s > 0 {
			p.PerSecond = float64(p.Migrated) / s
		}
		if p.PerSecond > 0 && p.Stale > 0 {
			p.ETA = time.Duration(float64(p.Stale) / p.PerSecond * float64(time.Second))
		}
		return p
	}
	finish := func(err error) (Result, error) {
		p := progress(opts.Now())
		res.Migrated, res.Seconds, res.PerSecond = p.Migrated, p.Elapsed.Seconds(), p.PerSecond
		res.Migrations = make([]Migration, 0, len(followed))
		for _, m := range followed {
			res.Migrations = append(res.Migrations, *m)
		}
		if opts.Progress != nil {
			opts.Progress(p)
		}
		return res, err
	}

	var gaveUp []error
	for pass := 0; ; pass++ {
		// STEP 1: observe, then scan.
		for _, f := range follows {
			if f.finished || f.current == nil {
				continue
			}
			m, err := c.Get(ctx, f.current.Name)
			if err != nil {
				return finish(fmt.Errorf("observe StorageVersionMigration %s: %w", f.current.Name, err))
			}
			if m.State != f.current.State {
				f.lastChange = opts.Now()
			}
			*f.current = m
		}
		stale, err := s.Stale(ctx)
		if err != nil {
			return finish(fmt.Errorf("etcd scan: %w", err))
		}
		now := opts.Now()
		for _, f := range follows {
			n := stale[f.resource]
			if pass == 0 {
				res.Total += n
			}
			if f.stale >= 0 && n < f.stale {
				f.lastChange = now
				if res.FirstMigratedSeconds == 0 {
					res.FirstMigratedSeconds = now.Sub(start).Seconds()
				}
			}
			f.stale = n
		}

		// STEP 2: decide and act, per resource.
		for _, f := range follows {
			if f.finished {
				continue
			}
			step := Next(Observed{Resource: f.resource, Migration: f.current, Rounds: f.rounds, Stale: f.stale, Idle: now.Sub(f.lastChange)}, opts.Limits)
			switch step.Action {
			case Create:
				m, err := c.Create(ctx, f.resource)
				if err != nil {
					return finish(fmt.Errorf("create a StorageVersionMigration of %s (%s): %w", f.resource, step.Reason, err))
				}
				f.current, f.lastChange = &m, opts.Now()
				f.rounds++
				followed = append(followed, &m)
			case Done:
				f.finished = true
				// The scan proved the resource migrated: finished
				// migrations of ours are no longer evidence of anything.
				deleted, err := c.DeleteFinished(ctx, f.resource)
				if err != nil {
					opts.Warn("%s: delete finished StorageVersionMigrations: %v (harmless; delete them by hand)", f.resource, err)
				}
				res.Deleted = append(res.Deleted, deleted...)
			case GiveUp:
				f.finished = true
				gaveUp = append(gaveUp, errors.New(step.Reason))
			}
		}

		// STEP 3
		all := true
		for _, f := range follows {
			all = all && f.finished
		}
		if all {
			return finish(errors.Join(gaveUp...))
		}
		if opts.Progress != nil && pass > 0 {
			opts.Progress(progress(now))
		}
		if err := opts.Sleep(ctx, opts.Every); err != nil {
			return finish(err)
		}
	}
}
