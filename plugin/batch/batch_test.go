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
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err // as a Vault call on an ended context
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

func TestSharedCallersKeepTheirOwnDeadlines(t *testing.T) {
	tests := []struct {
		name string
		// inFlight: the patient caller joins once the shared call is sent,
		// else while it still queues behind a busy slot.
		inFlight bool
	}{
		{name: "patient caller joins a queued call of an impatient one => it gets the answer after the impatient deadline", inFlight: false},
		{name: "patient caller joins an in-flight call of an impatient one => it gets the answer after the impatient deadline", inFlight: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{}
			b := New(r.fn, Options{MaxSize: 64, MaxInFlight: 1, Dedupe: true})
			var release, waitFirst func()
			if !tt.inFlight {
				release, waitFirst = startHeld(t, b, r)
			} else {
				r.hold = make(chan struct{})
				r.entered = make(chan struct{}, 100)
				release, waitFirst = func() { close(r.hold) }, func() {}
			}
			impatient, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			impatientErr := make(chan error, 1)
			go func() { _, err := b.Do(impatient, "same"); impatientErr <- err }()
			if tt.inFlight {
				<-r.entered
			} else {
				waitQueued(t, b, 1)
			}
			patient, cancelPatient := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancelPatient()
			patientRes := make(chan Result[string], 1)
			go func() { v, err := b.Do(patient, "same"); patientRes <- Result[string]{Value: v, Err: err} }()

			if err := <-impatientErr; !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("impatient caller: %v, want its own deadline", err)
			}
			time.Sleep(50 * time.Millisecond) // well past the impatient deadline
			release()
			waitFirst()
			if got := <-patientRes; got.Err != nil || got.Value != "v:same" {
				t.Fatalf("patient caller: %+v, want v:same: it inherited the impatient caller's deadline", got)
			}
			if s := r.sizes(); (tt.inFlight && fmt.Sprint(s) != "[1]") || (!tt.inFlight && fmt.Sprint(s) != "[1 1]") {
				t.Fatalf("batch sizes = %v: the key was not shared", s)
			}
		})
	}
}

func TestASharedCallIsCancelledOnceNoCallerWaits(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), entered: make(chan struct{}, 10)}
	defer close(r.hold)
	cancelled := make(chan struct{})
	fn := func(ctx context.Context, keys []string) ([]Result[string], error) {
		res, err := r.fn(ctx, keys)
		if ctx.Err() != nil {
			close(cancelled)
		}
		return res, err
	}
	b := New(fn, Options{MaxSize: 64, MaxInFlight: 1, Dedupe: true, Timeout: time.Hour})
	// No deadlines: only the callers leaving can end the call early.
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { _, err := b.Do(ctx1, "same"); errs <- err }()
	<-r.entered
	go func() { _, err := b.Do(ctx2, "same"); errs <- err }()
	waitFor := func(cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatal("timed out")
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.pending["same"].waiters == 2 })
	cancel1()
	<-errs
	select {
	case <-cancelled:
		t.Fatal("the shared call was cancelled while a caller still waited")
	case <-time.After(50 * time.Millisecond):
	}
	cancel2()
	<-errs
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the shared call ran on after every caller gave up")
	}
}

func TestABatchCallKnowsItsCallersLatestDeadline(t *testing.T) {
	entered := make(chan struct{}, 1)
	hold := make(chan struct{})
	seen := make(chan time.Time, 2)
	fn := func(ctx context.Context, keys []string) ([]Result[string], error) {
		if _, ok := ctx.Deadline(); ok {
			t.Error("the batch call's context has a deadline: a caller joining later would inherit it")
		}
		d, _ := CallersDeadline(ctx)
		seen <- d
		entered <- struct{}{}
		<-hold
		d, _ = CallersDeadline(ctx)
		seen <- d
		out := make([]Result[string], len(keys))
		for i, k := range keys {
			out[i] = Result[string]{Value: "v:" + k}
		}
		return out, nil
	}
	b := New(fn, Options{MaxSize: 64, MaxInFlight: 1, Dedupe: true})
	first, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	later, cancelLater := context.WithTimeout(context.Background(), time.Minute)
	defer cancelLater()
	done := make(chan error, 2)
	go func() { _, err := b.Do(first, "k"); done <- err }()
	<-entered
	go func() { _, err := b.Do(later, "k"); done <- err }() // joins the call in flight
	waitWaiters(t, b, "k", 2)
	close(hold)
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	d1, _ := first.Deadline()
	d2, _ := later.Deadline()
	if got := <-seen; !got.Equal(d1) {
		t.Errorf("CallersDeadline at the start = %v, want the first caller's %v", got, d1)
	}
	if got := <-seen; !got.Equal(d2) {
		t.Errorf("CallersDeadline after a caller with a later deadline joined = %v, want %v", got, d2)
	}
	if _, ok := CallersDeadline(context.Background()); ok {
		t.Error("CallersDeadline outside a batch call reports a deadline")
	}
}

// waitWaiters waits until the pending call for key has n callers.
func waitWaiters(t *testing.T, b *Batcher[string, string], key string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		c := b.pending[key]
		got := 0
		if c != nil {
			got = c.waiters
		}
		b.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers wait for %q, want %d", got, key, n)
		}
		time.Sleep(time.Millisecond)
	}
}
