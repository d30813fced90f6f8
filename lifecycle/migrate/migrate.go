// Package migrate is kmsctl migrate's own engine (--engine=direct): it
// rewrites objects through the API server so that each is stored again
// under the current key (a no-op write of a stale object is written anyway,
// re-encrypting it). It talks to the cluster through two narrow
// interfaces, a Lister (what is still to rewrite: kmsctl lists it with an
// etcd scan) and a Rewriter (one no-op write: kmsctl's does GET then PUT
// with client-go's dynamic client, in package migrate/kube), so its rules
// are tested with fakes. It imports no Kubernetes code.
//
// The rules of Run:
//
//  1. List once; every object listed is rewritten at most once per run
//     (plus retries). Objects the list leaves out (already under the
//     current key) are skipped, which is what makes a run resumable: run
//     again after an interruption and only the rest is listed.
//  2. Options.Workers goroutines rewrite in parallel; every attempt first
//     waits on the rate limiter (Options.QPS objects per second).
//  3. An attempt that fails with ErrConflict counts as done: the object was
//     written by someone else between the Rewriter's read and its write,
//     and that write stored it under the current key too. It is not
//     retried; the final etcd scan is the proof either way.
//  4. An attempt that fails with ErrNotFound counts as done: the object was
//     deleted, and nothing of it is left to re-encrypt.
//  5. An attempt that fails with ErrThrottled (HTTP 429) or ErrTimeout is
//     retried after a backoff (Options.Backoff, doubling up to
//     Options.MaxBackoff), at most Options.Attempts attempts in all.
//  6. Any other error, or the last retry failing, fails that object only:
//     it is reported in Result.Failed and the run goes on.
//  7. When ctx ends, no new attempt starts; Run returns what was done and
//     ctx's error. Objects not attempted are left for the next run.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Errors a Rewriter wraps so that Run can tell what happened.
var (
	// ErrConflict: the object changed between the read and the write.
	ErrConflict = errors.New("conflict")
	// ErrNotFound: the object no longer exists.
	ErrNotFound = errors.New("not found")
	// ErrThrottled: the API server answered 429 Too Many Requests.
	ErrThrottled = errors.New("throttled")
	// ErrTimeout: the request timed out (client or server side).
	ErrTimeout = errors.New("timeout")
)

// Object is one object to rewrite.
type Object struct {
	// Resource is the EncryptionConfiguration name (secrets, deployments.apps).
	Resource string `json:"resource"`
	// Namespace is empty for cluster-scoped resources.
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String is "resource namespace/name" (or "resource name").
func (o Object) String() string {
	if o.Namespace == "" {
		return o.Resource + " " + o.Name
	}
	return o.Resource + " " + o.Namespace + "/" + o.Name
}

// Lister lists the objects still to rewrite.
type Lister interface {
	List(ctx context.Context) ([]Object, error)
}

// Rewriter writes one object back unchanged, so the API server stores it
// again under the current key. Its errors wrap ErrConflict, ErrNotFound,
// ErrThrottled or ErrTimeout when they are one of those.
type Rewriter interface {
	Rewrite(ctx context.Context, resource, namespace, name string) error
}

// Limiter paces attempts; *rate.Limiter is one.
type Limiter interface {
	Wait(ctx context.Context) error
}

// Defaults of Options.
const (
	DefaultWorkers    = 8
	DefaultQPS        = 200
	DefaultAttempts   = 6
	DefaultBackoff    = 200 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
	DefaultEvery      = 2 * time.Second
)

// Options tune Run. The zero value means the defaults.
type Options struct {
	// Workers is how many rewrites are in flight at once (default 8).
	Workers int
	// QPS is the rate of attempts, objects per second (default 200); each
	// object is a GET and a PUT for the real Rewriter. Ignored when Limiter
	// is set.
	QPS float64
	// Limiter replaces the rate.Limiter made from QPS (tests count on it).
	Limiter Limiter
	// Attempts bounds the attempts per object on ErrThrottled and
	// ErrTimeout (default 6).
	Attempts int
	// Backoff is the wait before the first retry, doubled before each next
	// one up to MaxBackoff (defaults 200ms and 5s).
	Backoff, MaxBackoff time.Duration
	// Progress, when set, is called every Every (default 2s) while Run
	// works, and once at the end.
	Progress func(Progress)
	Every    time.Duration
	// Now and Sleep are the clock (default time.Now and a timer honouring
	// ctx); tests replace them.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

func (o Options) withDefaults() Options {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.QPS <= 0 {
		o.QPS = DefaultQPS
	}
	if o.Limiter == nil {
		o.Limiter = rate.NewLimiter(rate.Limit(o.QPS), max(1, min(o.Workers, int(o.QPS))))
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.Every <= 0 {
		o.Every = DefaultEvery
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = Sleep
	}
	return o
}

// Sleep waits d or until ctx ends, whichever comes first; it is both
// engines' default Options.Sleep.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Progress is a snapshot of a run.
type Progress struct {
	// Done counts objects finished (rewritten, conflict, not found or
	// failed) of Total.
	Done, Total int
	Failed      int
	Elapsed     time.Duration
	// PerSecond is Done / Elapsed.
	PerSecond float64
	// ETA is the time left at PerSecond; 0 when unknown or finished.
	ETA time.Duration
}

// String is the plain progress line.
func (p Progress) String() string {
	pct := 100.0
	if p.Total > 0 {
		pct = 100 * float64(p.Done) / float64(p.Total)
	}
	eta := "-"
	if p.ETA > 0 {
		eta = p.ETA.Round(time.Second).String()
	}
	return fmt.Sprintf("%d/%d objects (%.0f%%), %d failed, %.0f objects/s, ETA %s", p.Done, p.Total, pct, p.Failed, p.PerSecond, eta)
}

// Failure is one object Run could not rewrite.
type Failure struct {
	Object Object `json:"object"`
	Error  string `json:"error"`
}

// Result is what Run did. Total = Rewritten + Conflicts + NotFound +
// len(Failed) + NotAttempted.
type Result struct {
	Total     int `json:"total"`
	Rewritten int `json:"rewritten"`
	// Conflicts and NotFound count objects done by someone else (rules 3, 4).
	Conflicts int `json:"conflicts"`
	NotFound  int `json:"notFound"`
	// Retries counts attempts after a 429 or a timeout.
	Retries int       `json:"retries"`
	Failed  []Failure `json:"failed,omitempty"`
	// NotAttempted counts objects left when ctx ended.
	NotAttempted int     `json:"notAttempted,omitempty"`
	Seconds      float64 `json:"seconds"`
	PerSecond    float64 `json:"objectsPerSecond"`
}

// Run lists what is still to rewrite and rewrites it (see the package doc
// for the rules). Its error is a failed list or ctx's; objects that failed
// are in Result.Failed, not in the error.
func Run(ctx context.Context, l Lister, rw Rewriter, opts Options) (Result, error) {
	opts = opts.withDefaults()
	start := opts.Now()
	// STEP 1
	objs, err := l.List(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("list objects to rewrite: %w", err)
	}
	res := Result{Total: len(objs)}
	var mu sync.Mutex // guards res
	progress := func() Progress {
		mu.Lock()
		defer mu.Unlock()
		p := Progress{Done: res.Rewritten + res.Conflicts + res.NotFound + len(res.Failed), Total: res.Total,
			Failed: len(res.Failed), Elapsed: opts.Now().Sub(start)}
		if s := p.Elapsed.Seconds(); s > 0 {
			p.PerSecond = float64(p.Done) / s
		}
		if p.PerSecond > 0 && p.Done < p.Total {
			p.ETA = time.Duration(float64(p.Total-p.Done) / p.PerSecond * float64(time.Second))
		}
		return p
	}

	work := make(chan Object)
	var wg sync.WaitGroup
	// STEP 2
	for range opts.Workers {
		wg.Go(func() {
			for o := range work {
				if ctx.Err() != nil {
					mu.Lock()
					res.NotAttempted++
					mu.Unlock()
					continue
				}
				outcome, retries, err := rewrite(ctx, rw, o, opts)
				mu.Lock()
				res.Retries += retries
				switch {
				case err != nil:
					res.Failed = append(res.Failed, Failure{Object: o, Error: err.Error()})
				case outcome == ErrConflict:
					res.Conflicts++
				case outcome == ErrNotFound:
					res.NotFound++
				default:
					res.Rewritten++
				}
				mu.Unlock()
			}
		})
	}
	stopTicker := make(chan struct{})
	tickerDone := make(chan struct{})
	go func() {
		defer close(tickerDone)
		if opts.Progress == nil {
			return
		}
		t := time.NewTicker(opts.Every)
		defer t.Stop()
		for {
			select {
			case <-stopTicker:
				return
			case <-t.C:
				opts.Progress(progress())
			}
		}
	}()

	sent := 0
feed:
	for _, o := range objs {
		// STEP 7
		select {
		case <-ctx.Done():
			break feed
		case work <- o:
			sent++
		}
	}
	close(work)
	wg.Wait()
	close(stopTicker)
	<-tickerDone

	res.NotAttempted += len(objs) - sent
	p := progress()
	res.Seconds = p.Elapsed.Seconds()
	res.PerSecond = p.PerSecond
	if opts.Progress != nil {
		opts.Progress(p)
	}
	return res, ctx.Err()
}

// rewrite makes the attempts for one object. It returns ErrConflict or
// ErrNotFound as the outcome when one of those ended it, the number of
// retries, and an error when the object failed.
func rewrite(ctx context.Context, rw Rewriter, o Object, opts Options) (outcome error, retries int, err error) {
	backoff := opts.Backoff
	for attempt := 1; ; attempt++ {
		if err := opts.Limiter.Wait(ctx); err != nil {
			return nil, retries, fmt.Errorf("%s: %w", o, err)
		}
		err := rw.Rewrite(ctx, o.Resource, o.Namespace, o.Name)
		switch {
		case err == nil:
			return nil, retries, nil
		// STEP 3
		case errors.Is(err, ErrConflict):
			return ErrConflict, retries, nil
		// STEP 4
		case errors.Is(err, ErrNotFound):
			return ErrNotFound, retries, nil
		// STEP 5
		case (errors.Is(err, ErrThrottled) || errors.Is(err, ErrTimeout)) && attempt < opts.Attempts && ctx.Err() == nil:
			if serr := opts.Sleep(ctx, backoff); serr != nil {
				return nil, retries, fmt.Errorf("%s: %w (then %w)", o, err, serr)
			}
			retries++
			backoff = min(2*backoff, opts.MaxBackoff)
		// STEP 6
		default:
			if attempt > 1 {
				return nil, retries, fmt.Errorf("%s: %w (after %d attempts)", o, err, attempt)
			}
			return nil, retries, fmt.Errorf("%s: %w", o, err)
		}
	}
}
