package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// store is a fake cluster: each object's transit version, a Lister of the
// objects under a version below current (what kmsctl's etcd scan lists),
// and a Rewriter that stores an object under current, recording every call.
type store struct {
	mu       sync.Mutex
	versions map[Object]int
	current  int
	calls    []string
	// errs are the errors the next calls for an object return, in order.
	errs map[Object][]error
	// onRewrite runs after each successful rewrite (to cancel a run).
	onRewrite func(n int)
	rewritten int
}

func newStore(n, current int) *store {
	s := &store{versions: map[Object]int{}, current: current, errs: map[Object][]error{}}
	for i := range n {
		s.versions[obj(i)] = current - 1
	}
	return s
}

func obj(i int) Object {
	return Object{Resource: "secrets", Namespace: "ns", Name: fmt.Sprintf("s%03d", i)}
}

func (s *store) List(context.Context) ([]Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Object
	for o, v := range s.versions {
		if v < s.current {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b Object) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (s *store) Rewrite(_ context.Context, resource, namespace, name string) error {
	o := Object{Resource: resource, Namespace: namespace, Name: name}
	s.mu.Lock()
	s.calls = append(s.calls, o.Name)
	if errs := s.errs[o]; len(errs) > 0 {
		s.errs[o] = errs[1:]
		s.mu.Unlock()
		return errs[0]
	}
	s.versions[o] = s.current
	s.rewritten++
	n, hook := s.rewritten, s.onRewrite
	s.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return nil
}

func (s *store) callsFor(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if c == name {
			n++
		}
	}
	return n
}

// countingLimiter lets everything through and counts the waits.
type countingLimiter struct{ n atomic.Int64 }

func (l *countingLimiter) Wait(ctx context.Context) error {
	l.n.Add(1)
	return ctx.Err()
}

// fastOptions never sleep for real and record the backoffs asked for.
func fastOptions(sleeps *[]time.Duration, mu *sync.Mutex) Options {
	return Options{Workers: 4, Limiter: &countingLimiter{}, Sleep: func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		*sleeps = append(*sleeps, d)
		mu.Unlock()
		return ctx.Err()
	}}
}

func TestRun(t *testing.T) {
	apiErr := func(kind error) error { return fmt.Errorf("%w: the server says so", kind) }

	t.Run("every stale object => rewritten once, none failed", func(t *testing.T) {
		s := newStore(50, 2)
		var sleeps []time.Duration
		var mu sync.Mutex
		res, err := Run(context.Background(), s, s, fastOptions(&sleeps, &mu))
		if err != nil {
			t.Fatal(err)
		}
		if res.Total != 50 || res.Rewritten != 50 || len(res.Failed) != 0 || len(s.calls) != 50 {
			t.Errorf("result %+v with %d calls, want 50 rewritten in 50 calls", res, len(s.calls))
		}
		if left, _ := s.List(context.Background()); len(left) != 0 {
			t.Errorf("%d objects left stale", len(left))
		}
	})

	t.Run("conflict and not found => done, not retried, not failed", func(t *testing.T) {
		s := newStore(10, 2)
		s.errs[obj(1)] = []error{apiErr(ErrConflict)}
		s.errs[obj(2)] = []error{apiErr(ErrNotFound)}
		var sleeps []time.Duration
		var mu sync.Mutex
		res, err := Run(context.Background(), s, s, fastOptions(&sleeps, &mu))
		if err != nil {
			t.Fatal(err)
		}
		if res.Rewritten != 8 || res.Conflicts != 1 || res.NotFound != 1 || len(res.Failed) != 0 || res.Retries != 0 {
			t.Errorf("result %+v, want 8 rewritten, 1 conflict, 1 not found, none failed", res)
		}
		if n := s.callsFor("s001") + s.callsFor("s002"); n != 2 {
			t.Errorf("%d calls for the conflict and the not-found object, want one each", n)
		}
	})

	t.Run("429 and timeouts => retried with doubling backoff, then rewritten", func(t *testing.T) {
		s := newStore(3, 2)
		s.errs[obj(0)] = []error{apiErr(ErrThrottled), apiErr(ErrTimeout), apiErr(ErrThrottled)}
		var sleeps []time.Duration
		var mu sync.Mutex
		opts := fastOptions(&sleeps, &mu)
		lim := opts.Limiter.(*countingLimiter)
		res, err := Run(context.Background(), s, s, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.Rewritten != 3 || res.Retries != 3 || len(res.Failed) != 0 {
			t.Errorf("result %+v, want 3 rewritten after 3 retries", res)
		}
		if want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}; !slices.Equal(sleeps, want) {
			t.Errorf("backoffs %v, want %v", sleeps, want)
		}
		// Every attempt, retries included, waits on the limiter.
		if got := lim.n.Load(); got != 6 {
			t.Errorf("limiter waited %d times, want 6 (3 objects + 3 retries)", got)
		}
	})

	t.Run("429 on every attempt => that object fails after Attempts, the rest are rewritten", func(t *testing.T) {
		s := newStore(5, 2)
		s.errs[obj(4)] = slices.Repeat([]error{apiErr(ErrThrottled)}, 10)
		var sleeps []time.Duration
		var mu sync.Mutex
		opts := fastOptions(&sleeps, &mu)
		opts.Attempts = 3
		res, err := Run(context.Background(), s, s, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.Rewritten != 4 || len(res.Failed) != 1 || res.Failed[0].Object != obj(4) || s.callsFor("s004") != 3 {
			t.Errorf("result %+v, %d calls for s004; want 4 rewritten and s004 failed after 3 attempts", res, s.callsFor("s004"))
		}
		if !strings.Contains(res.Failed[0].Error, "after 3 attempts") {
			t.Errorf("failure %q does not say how many attempts", res.Failed[0].Error)
		}
	})

	t.Run("hard error => that object fails at once, reported, the run goes on", func(t *testing.T) {
		s := newStore(5, 2)
		s.errs[obj(2)] = []error{errors.New("forbidden: no update on secrets")}
		var sleeps []time.Duration
		var mu sync.Mutex
		res, err := Run(context.Background(), s, s, fastOptions(&sleeps, &mu))
		if err != nil {
			t.Fatal(err)
		}
		if res.Rewritten != 4 || len(res.Failed) != 1 || s.callsFor("s002") != 1 || len(sleeps) != 0 {
			t.Fatalf("result %+v, want 4 rewritten and s002 failed without retry", res)
		}
		if f := res.Failed[0]; f.Object != obj(2) || !strings.Contains(f.Error, "secrets ns/s002: forbidden") {
			t.Errorf("failure %+v does not name the object and the error", f)
		}
	})

	t.Run("interrupted, then run again => the second run rewrites only the rest", func(t *testing.T) {
		s := newStore(100, 2)
		ctx, cancel := context.WithCancel(context.Background())
		s.onRewrite = func(n int) {
			if n == 30 {
				cancel()
			}
		}
		var sleeps []time.Duration
		var mu sync.Mutex
		opts := fastOptions(&sleeps, &mu)
		first, err := Run(ctx, s, s, opts)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted run returned %v, want context.Canceled", err)
		}
		if first.Rewritten < 30 || first.Rewritten+first.NotAttempted+len(first.Failed) != 100 {
			t.Fatalf("first run %+v: want at least 30 rewritten and the rest accounted for", first)
		}
		s.onRewrite = nil
		callsBefore := len(s.calls)
		second, err := Run(context.Background(), s, s, opts)
		if err != nil {
			t.Fatal(err)
		}
		if second.Total != 100-first.Rewritten || second.Rewritten != second.Total || len(second.Failed) != 0 {
			t.Errorf("second run %+v after %d rewritten: want exactly the rest listed and rewritten", second, first.Rewritten)
		}
		if len(s.calls)-callsBefore != second.Total {
			t.Errorf("second run made %d calls for %d objects: it rewrote objects already done", len(s.calls)-callsBefore, second.Total)
		}
		if left, _ := s.List(context.Background()); len(left) != 0 {
			t.Errorf("%d objects left stale after the second run", len(left))
		}
	})

	t.Run("nothing stale => nothing rewritten", func(t *testing.T) {
		s := newStore(0, 2)
		res, err := Run(context.Background(), s, s, Options{})
		if err != nil || res.Total != 0 || len(s.calls) != 0 {
			t.Errorf("result %+v, err %v, %d calls; want an empty run", res, err, len(s.calls))
		}
	})
}

func TestRunRateLimit(t *testing.T) {
	// 40 objects at 100 objects/s, burst Workers (4): at least 360ms. Only
	// a lower bound is asserted, which no slow machine can break.
	s := newStore(40, 2)
	start := time.Now()
	res, err := Run(context.Background(), s, s, Options{Workers: 4, QPS: 100})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 340*time.Millisecond {
		t.Errorf("40 objects at --qps 100 took %v, want at least 360ms", took)
	}
	if res.Rewritten != 40 {
		t.Errorf("result %+v, want 40 rewritten", res)
	}
}

func TestRunProgress(t *testing.T) {
	s := newStore(20, 2)
	var got []Progress
	var mu sync.Mutex
	opts := Options{Workers: 2, QPS: 100, Every: 50 * time.Millisecond, Progress: func(p Progress) {
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}}
	if _, err := Run(context.Background(), s, s, opts); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) < 2 {
		t.Fatalf("%d progress reports in a ~200ms run every 50ms, want several", len(got))
	}
	last := got[len(got)-1]
	if last.Done != 20 || last.Total != 20 || last.PerSecond <= 0 || last.ETA != 0 {
		t.Errorf("last progress %+v, want 20/20 with a rate and no ETA", last)
	}
	if line := last.String(); !strings.HasPrefix(line, "20/20 objects (100%), 0 failed, ") || !strings.HasSuffix(line, "objects/s, ETA -") {
		t.Errorf("progress line %q", line)
	}
}
