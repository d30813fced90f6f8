package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a batch function that records each batch and can be held
// until released, to build up a queue deterministically.
type recorder struct {
	mu      sync.Mutex
	batches [][]string
	hold    chan struct{} // nil: answer at once
	entered chan struct{}
	itemErr map[string]error
	callErr error
}

func (r *recorder) fn(ctx context.Context, keys []string) ([]Result[string], error) {
	r.mu.Lock()
	r.batches = append(r.batches, append([]string(nil), keys...))
	hold := r.hold
	r.mu.Unlock()
	if r.entered != nil {
		r.entered <- struct{}{}
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if r.callErr != nil {
		return nil, r.callErr
	}
	out := make([]Result[string], len(keys))
	for i, k := range keys {
		out[i] = Result[string]{Value: "v:" + k, Err: r.itemErr[k]}
	}
	return out, nil
}

func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []int
	for _, b := range r.batches {
		s = append(s, len(b))
	}
	return s
}

func TestACallAloneIsSentAloneAndAtOnce(t *testing.T) {
	r := &recorder{}
	b := New(r.fn, Options{MaxSize: 64, MaxInFlight: 4, Window: time.Second})
	start := time.Now()
	v, err := b.Do(context.Background(), "a")
	if err != nil || v != "v:a" {
		t.Fatalf("Do = %q, %v", v, err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("a lone call took %s: the window must only apply under load", d)
	}
	if got := r.sizes(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("batches = %v, want [1]", got)
	}
}

// startHeld starts a call that occupies the only slot until released.
func startHeld(t *testing.T, b *Batcher[string, string], r *recorder) (release func(), wait func()) {
	t.Helper()
	r.hold = make(chan struct{})
	r.entered = make(chan struct{}, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := b.Do(context.Background(), "first"); err != nil && r.callErr == nil {
			t.Errorf("first: %v", err)
		}
	}()
	<-r.entered
	return func() { close(r.hold) }, func() { <-done }
}

func queueUp(b *Batcher[string, string], keys []string) (wait func() map[string]Result[string]) {
	var mu sync.Mutex
	got := map[string]Result[string]{}
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := b.Do(context.Background(), k)
			mu.Lock()
			got[k] = Result[string]{Value: v, Err: err}
			mu.Unlock()
		}()
	}
	return func() map[string]Result[string] { wg.Wait(); return got }
}

func waitQueued(t *testing.T, b *Batcher[string, string], n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b.mu.Lock()
		q := len(b.queue)
		b.mu.Unlock()
		if q == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("queue never reached %d", n)
}

func TestCallsArrivingWhileBusyLeaveTogether(t *testing.T) {
	r := &recorder{}
	b := New(r.fn, Options{MaxSize: 64, MaxInFlight: 1})
	release, waitFirst := startHeld(t, b, r)
	var keys []string
	for i := 0; i < 10; i++ {
		keys = append(keys, fmt.Sprint("k", i))
	}
	wait := queueUp(b, keys)
	waitQueued(t, b, 10)
	release()
	waitFirst()
	got := wait()
	for _, k := range keys {
		if got[k].Err != nil || got[k].Value != "v:"+k {
			t.Errorf("%s = %+v", k, got[k])
		}
	}
	if s := r.sizes(); len(s) != 2 || s[0] != 1 || s[1] != 10 {
		t.Fatalf("batch sizes = %v, want [1 10]", s)
	}
}

func TestBatchesNeverExceedMaxSize(t *testing.T) {
	r := &recorder{}
	b := New(r.fn, Options{MaxSize: 4, MaxInFlight: 1})
	release, waitFirst := startHeld(t, b, r)
	var keys []string
	for i := 0; i < 10; i++ {
		keys = append(keys, fmt.Sprint("k", i))
	}
	wait := queueUp(b, keys)
	waitQueued(t, b, 10)
	release()
	waitFirst()
	wait()
	if s := r.sizes(); fmt.Sprint(s) != "[1 4 4 2]" {
		t.Fatalf("batch sizes = %v, want [1 4 4 2]", s)
	}
}

func TestIdenticalConcurrentKeysAreSentOnce(t *testing.T) {
	r := &recorder{}
	b := New(r.fn, Options{MaxSize: 64, MaxInFlight: 1, Dedupe: true})
	release, waitFirst := startHeld(t, b, r)
	wait := queueUp(b, []string{"same", "same", "same", "other"})
	waitQueued(t, b, 2)
	release()
	waitFirst()
	got := wait()
	if got["same"].Value != "v:same" || got["other"].Value != "v:other" {
		t.Fatalf("results = %+v", got)
	}
	// Joining a call that is already in flight also shares its result.
	if s := r.sizes(); fmt.Sprint(s) != "[1 2]" {
		t.Fatalf("batch sizes = %v, want [1 2]", s)
	}
}

func TestItemErrorsReachOnlyTheirCaller(t *testing.T) {
	r := &recorder{itemErr: map[string]error{"bad": errors.New("tampered")}}
	b := New(r.fn, Options{MaxSize: 64, MaxInFlight: 1})
	release, waitFirst := startHeld(t, b, r)
	wait := queueUp(b, []string{"bad", "good"})
	waitQueued(t, b, 2)
	release()
	waitFirst()
	got := wait()
	if got["bad"].Err == nil || got["good"].Err != nil {
		t.Fatalf("results = %+v", got)
	}
}

func TestABatchErrorReachesEveryCaller(t *testing.T) {
	r := &recorder{callErr: errors.New("vault down")}
	b := New(r.fn, Options{MaxSize: 64, MaxInFlight: 1})
	release, waitFirst := startHeld(t, b, r)
	wait := queueUp(b, []string{"a", "b", "c"})
	waitQueued(t, b, 3)
	release()
	waitFirst()
	for k, res := range wait() {
		if res.Err == nil || res.Err.Error() != "vault down" {
			t.Errorf("%s: err = %v", k, res.Err)
		}
	}
}

func TestOneCallerGivingUpDoesNotCancelTheBatch(t *testing.T) {
	r := &recorder{}
	b := New(r.fn, Options{MaxSize: 64, MaxInFlight: 1})
	release, waitFirst := startHeld(t, b, r)
	impatient, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := b.Do(impatient, "impatient"); errc <- err }()
	wait := queueUp(b, []string{"patient"})
	waitQueued(t, b, 2)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("impatient caller: %v", err)
	}
	release()
	waitFirst()
	if got := wait()["patient"]; got.Err != nil || got.Value != "v:patient" {
		t.Fatalf("patient caller: %+v", got)
	}
}

func TestManyConcurrentCallersAllGetTheirOwnAnswer(t *testing.T) {
	var calls atomic.Int64
	fn := func(_ context.Context, keys []int) ([]Result[int], error) {
		calls.Add(1)
		time.Sleep(200 * time.Microsecond)
		out := make([]Result[int], len(keys))
		for i, k := range keys {
			out[i] = Result[int]{Value: k * 2}
		}
		return out, nil
	}
	b := New(fn, Options{MaxSize: 16, MaxInFlight: 2, Window: 100 * time.Microsecond, Dedupe: true})
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				k := g*1000 + i
				v, err := b.Do(context.Background(), k)
				if err != nil || v != 2*k {
					t.Errorf("Do(%d) = %d, %v", k, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n >= 64*50 {
		t.Fatalf("%d batch calls for %d keys: nothing was coalesced", n, 64*50)
	}
	t.Logf("%d keys in %d batch calls", 64*50, calls.Load())
}
