package svm

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// fake is a cluster with a storage-version-migrator-controller that moves
// each migration one state per observation, and an etcd whose stale counts
// the script sets. It records every call.
type fake struct {
	stale      map[string]int
	migrations map[string]*Migration
	order      []string
	calls      []string
	// onSucceed runs when a migration reaches Succeeded (default: its
	// resource has nothing stale any more).
	onSucceed func(m *Migration)
	// fail makes every migration of these resources fail when it runs.
	fail map[string]string
	// stuck keeps migrations pending forever (no controller).
	stuck bool
}

func newFake(stale map[string]int) *fake {
	return &fake{stale: stale, migrations: map[string]*Migration{}, fail: map[string]string{}}
}

func (f *fake) Active(_ context.Context, resource string) (*Migration, error) {
	f.calls = append(f.calls, "active "+resource)
	for _, name := range slices.Backward(f.order) {
		if m := f.migrations[name]; m.Resource == resource && !m.State.Finished() {
			c := *m
			return &c, nil
		}
	}
	return nil, nil
}

func (f *fake) Create(_ context.Context, resource string) (Migration, error) {
	name := fmt.Sprintf("kmsctl-%s-%d", resource, len(f.order)+1)
	f.calls = append(f.calls, "create "+name)
	m := &Migration{Name: name, Resource: resource, State: StatePending}
	f.migrations[name] = m
	f.order = append(f.order, name)
	return *m, nil
}

func (f *fake) Get(_ context.Context, name string) (Migration, error) {
	f.calls = append(f.calls, "get "+name)
	m, ok := f.migrations[name]
	if !ok {
		return Migration{}, fmt.Errorf("storageversionmigrations %q not found", name)
	}
	switch {
	case f.stuck:
	case m.State == StatePending:
		m.State = StateRunning
	case m.State == StateRunning && f.fail[m.Resource] != "":
		m.State, m.Message = StateFailed, f.fail[m.Resource]
	case m.State == StateRunning:
		m.State = StateSucceeded
		if f.onSucceed != nil {
			f.onSucceed(m)
		} else {
			f.stale[m.Resource] = 0
		}
	}
	return *m, nil
}

func (f *fake) DeleteFinished(_ context.Context, resource string) ([]string, error) {
	var out []string
	for _, name := range f.order {
		if m := f.migrations[name]; m.Resource == resource && m.State.Finished() {
			out = append(out, name)
		}
	}
	f.calls = append(f.calls, "delete "+strings.Join(out, ","))
	return out, nil
}

func (f *fake) Stale(context.Context) (map[string]int, error) {
	f.calls = append(f.calls, "scan")
	return maps(f.stale), nil
}

func maps(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// options are Run's options on a fake clock that Sleep advances.
func options(resources ...string) (Options, *[]Progress) {
	now := time.Unix(1_800_000_000, 0)
	var ps []Progress
	return Options{
		Resources: resources,
		Every:     2 * time.Second,
		Limits:    Limits{MaxRounds: 3, IdleTimeout: time.Minute},
		Progress:  func(p Progress) { ps = append(ps, p) },
		Now:       func() time.Time { return now },
		Sleep: func(ctx context.Context, d time.Duration) error {
			now = now.Add(d)
			return ctx.Err()
		},
	}, &ps
}

func TestRun(t *testing.T) {
	t.Run("fresh run => one migration created, waited for, proven by the scan, then deleted", func(t *testing.T) {
		f := newFake(map[string]int{"secrets": 300})
		opts, ps := options("secrets")
		res, err := Run(context.Background(), f, f, opts)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"active secrets",
			"scan", "create kmsctl-secrets-1",
			"get kmsctl-secrets-1", "scan", // Running
			"get kmsctl-secrets-1", "scan", // Succeeded, nothing stale
			"delete kmsctl-secrets-1",
		}
		if !slices.Equal(f.calls, want) {
			t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(f.calls, "\n"), strings.Join(want, "\n"))
		}
		if res.Total != 300 || res.Migrated != 300 || len(res.Migrations) != 1 || res.Migrations[0].State != StateSucceeded ||
			!slices.Equal(res.Deleted, []string{"kmsctl-secrets-1"}) || res.Seconds != 4 || res.PerSecond != 75 || res.FirstMigratedSeconds != 4 {
			t.Errorf("result %+v", res)
		}
		if last := (*ps)[len(*ps)-1]; last.Migrated != 300 || last.Stale != 0 || !strings.Contains(last.String(), "300/300 objects (100%), 0 still stale in etcd, 75 objects/s") {
			t.Errorf("last progress %q", last)
		}
	})

	t.Run("rerun after kill -9 => the running migration is adopted, none created", func(t *testing.T) {
		f := newFake(map[string]int{"secrets": 120})
		f.migrations["kmsctl-secrets-old"] = &Migration{Name: "kmsctl-secrets-old", Resource: "secrets", State: StateRunning}
		f.order = []string{"kmsctl-secrets-old"}
		opts, _ := options("secrets")
		res, err := Run(context.Background(), f, f, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range f.calls {
			if strings.HasPrefix(c, "create") {
				t.Errorf("created a duplicate: %v", f.calls)
			}
		}
		if len(res.Migrations) != 1 || res.Migrations[0].Name != "kmsctl-secrets-old" || res.Migrations[0].State != StateSucceeded {
			t.Errorf("migrations %+v", res.Migrations)
		}
	})

	t.Run("nothing stale => no migration created", func(t *testing.T) {
		f := newFake(map[string]int{"secrets": 0})
		opts, _ := options("secrets")
		if _, err := Run(context.Background(), f, f, opts); err != nil {
			t.Fatal(err)
		}
		if want := []string{"active secrets", "scan", "delete "}; !slices.Equal(f.calls, want) {
			t.Errorf("calls %v, want %v", f.calls, want)
		}
	})

	t.Run("succeeded too early => another round for the stragglers", func(t *testing.T) {
		f := newFake(map[string]int{"secrets": 300})
		rounds := 0
		f.onSucceed = func(m *Migration) {
			// The first ran before its API server had the new key_id.
			if rounds++; rounds > 1 {
				f.stale["secrets"] = 0
			}
		}
		opts, _ := options("secrets")
		res, err := Run(context.Background(), f, f, opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Migrations) != 2 || res.Migrations[0].State != StateSucceeded || res.Migrations[1].State != StateSucceeded || len(res.Deleted) != 2 {
			t.Errorf("result %+v", res)
		}
	})

	t.Run("stale after every round => gives up after three, keeps them", func(t *testing.T) {
		f := newFake(map[string]int{"secrets": 300})
		f.onSucceed = func(*Migration) {}
		opts, _ := options("secrets")
		res, err := Run(context.Background(), f, f, opts)
		if err == nil || !strings.Contains(err.Error(), "300 objects still stale after 3 StorageVersionMigrations Succeeded") {
			t.Fatalf("err = %v", err)
		}
		if len(res.Migrations) != 3 || len(res.Deleted) != 0 || res.Migrated != 0 {
			t.Errorf("result %+v", res)
		}
	})

	t.Run("one resource fails => its message is the error, the other finishes", func(t *testing.T) {
		f := newFake(map[string]int{"secrets": 10, "configmaps": 5})
		f.fail["configmaps"] = "unable to obtain GVR from discovery"
		opts, _ := options("secrets", "configmaps")
		res, err := Run(context.Background(), f, f, opts)
		if err == nil || err.Error() != "configmaps: StorageVersionMigration kmsctl-configmaps-2 failed: unable to obtain GVR from discovery" {
			t.Fatalf("err = %v", err)
		}
		if f.stale["secrets"] != 0 || !slices.Equal(res.Deleted, []string{"kmsctl-secrets-1"}) || res.Migrated != 10 {
			t.Errorf("result %+v, stale %v", res, f.stale)
		}
	})

	t.Run("no controller => gives up after the idle timeout", func(t *testing.T) {
		f := newFake(map[string]int{"secrets": 10})
		f.stuck = true
		opts, _ := options("secrets")
		_, err := Run(context.Background(), f, f, opts)
		if err == nil || !strings.Contains(err.Error(), "not started after 1m0s") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("interrupted => ctx's error, the migration left running", func(t *testing.T) {
		f := newFake(map[string]int{"secrets": 10})
		f.stuck = true
		opts, _ := options("secrets")
		ctx, cancel := context.WithCancel(context.Background())
		sleep := opts.Sleep
		opts.Sleep = func(c context.Context, d time.Duration) error {
			cancel()
			return sleep(c, d)
		}
		res, err := Run(ctx, f, f, opts)
		if err != context.Canceled || len(res.Migrations) != 1 || res.Migrations[0].State.Finished() {
			t.Fatalf("err = %v, result %+v", err, res)
		}
	})
}
