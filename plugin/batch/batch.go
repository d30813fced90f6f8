// Package batch coalesces concurrent calls into batch calls.
//
// A call that arrives while a batch slot is free is sent at once, alone: no
// added latency when the plugin is idle. Calls that arrive while every slot
// is busy wait in a queue and leave together, up to MaxSize, as soon as a
// slot frees; with Window > 0 a batch formed under load also lingers up to
// Window for more. Concurrent calls with the same key share one result.
//
// Every caller keeps its own deadline: a caller returns when its context
// ends, and a batch call runs until its result is in or until no caller of
// any of its keys still waits, whichever comes first. A batch call therefore
// carries no deadline of its own (callers that share a key may arrive, with
// later deadlines, while it is in flight); Timeout bounds it only when some
// caller has none. CallersDeadline tells the batch call the latest deadline
// among the callers it serves, so that it can share that time out.
package batch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Func performs one batch call: results[i] answers keys[i]. An error fails
// every key in the batch.
type Func[K comparable, V any] func(ctx context.Context, keys []K) ([]Result[V], error)

// Result is one key's answer.
type Result[V any] struct {
	Value V
	Err   error
}

// Options shape a Batcher.
type Options struct {
	// MaxSize is the most keys in one batch call; 1 turns batching off.
	MaxSize int
	// MaxInFlight is how many batch calls may run at once.
	MaxInFlight int
	// Window is how long a batch formed while other batches are in flight
	// waits for more keys. 0: only what has already queued.
	Window time.Duration
	// Timeout bounds a batch call that a caller without a deadline waits for.
	Timeout time.Duration
	// Dedupe makes concurrent calls with the same key share one result.
	Dedupe bool
}

// Batcher coalesces calls to fn.
type Batcher[K comparable, V any] struct {
	fn   Func[K, V]
	opts Options

	mu       sync.Mutex
	queue    []*call[K, V]
	pending  map[K]*call[K, V] // queued or in flight, when Dedupe
	inFlight int
}

// call is one key's share of a batch; followers with the same key wait on it.
type call[K comparable, V any] struct {
	key      K
	ctx      context.Context // the first caller's, for its values only
	done     chan struct{}
	result   Result[V]
	enqueued time.Time

	// Guarded by Batcher.mu.
	waiters   int       // callers still waiting for result
	unbounded bool      // some caller has no deadline
	latest    time.Time // the latest deadline among its callers
	flight    *flight   // the batch call carrying it, once sent
}

// flight is one batch call in progress; it is cancelled when none of its
// calls has a waiter left.
type flight struct {
	cancel context.CancelFunc
	calls  int // calls with waiters
	// latest is the latest deadline among the callers of its calls, in
	// Unix nanoseconds (0: none yet); it only grows, as callers join.
	latest atomic.Int64
}

// extend makes d the flight's latest deadline if it is later.
func (f *flight) extend(d time.Time) {
	n := d.UnixNano()
	for {
		cur := f.latest.Load()
		if n <= cur || f.latest.CompareAndSwap(cur, n) {
			return
		}
	}
}

type flightKey struct{}

// CallersDeadline returns, inside a batch call, the latest deadline among
// the callers it serves, which grows as callers join it; false outside a
// batch call or when no caller has a deadline. The batch call's context
// carries no deadline (see the package doc); a Func that splits its time
// among attempts (failover across servers) uses this instead.
func CallersDeadline(ctx context.Context) (time.Time, bool) {
	f, ok := ctx.Value(flightKey{}).(*flight)
	if !ok {
		return time.Time{}, false
	}
	n := f.latest.Load()
	if n == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// New returns a Batcher.
func New[K comparable, V any](fn Func[K, V], opts Options) *Batcher[K, V] {
	if opts.MaxSize < 1 {
		opts.MaxSize = 1
	}
	if opts.MaxInFlight < 1 {
		opts.MaxInFlight = 1
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	return &Batcher[K, V]{fn: fn, opts: opts, pending: map[K]*call[K, V]{}}
}

// Do returns key's result, batched with whatever else is queued.
func (b *Batcher[K, V]) Do(ctx context.Context, key K) (V, error) {
	b.mu.Lock()
	c, shared := b.pending[key]
	if shared && c.flight != nil && c.flight.calls == 0 {
		// Its flight was cancelled when its last caller left: start afresh.
		shared = false
	}
	if !shared {
		c = &call[K, V]{key: key, ctx: ctx, done: make(chan struct{}), enqueued: time.Now()}
		if b.opts.Dedupe {
			b.pending[key] = c
		}
		b.queue = append(b.queue, c)
	}
	c.join(ctx)
	run := !shared && b.inFlight < b.opts.MaxInFlight
	if run {
		b.inFlight++
	}
	b.mu.Unlock()

	if run {
		// This call owns a slot: send the first batch (its own key is in it
		// when the Batcher was idle), then hand the slot on. Not on this
		// goroutine: it must stay free to return at its caller's deadline.
		go func() {
			b.runBatch(b.take(false))
			b.drain()
		}()
	}
	select {
	case <-c.done:
		return c.result.Value, c.result.Err
	case <-ctx.Done():
		b.leave(c)
		var zero V
		return zero, ctx.Err()
	}
}

// join counts a caller in. Called with b.mu held.
func (c *call[K, V]) join(ctx context.Context) {
	if c.waiters == 0 && c.flight != nil {
		c.flight.calls++
	}
	c.waiters++
	d, ok := ctx.Deadline()
	if !ok {
		c.unbounded = true
		return
	}
	if d.After(c.latest) {
		c.latest = d
	}
	if c.flight != nil {
		c.flight.extend(d)
	}
}

// leave counts a caller out; the last caller of the last call of a flight
// cancels it, since nobody would read its results.
func (b *Batcher[K, V]) leave(c *call[K, V]) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c.waiters--
	if c.waiters > 0 || c.flight == nil {
		return
	}
	if c.flight.calls--; c.flight.calls == 0 {
		c.flight.cancel()
	}
}

// take removes the next batch from the queue. underLoad lets it linger for
// Window while the batch is not full.
func (b *Batcher[K, V]) take(underLoad bool) []*call[K, V] {
	if underLoad && b.opts.Window > 0 {
		deadline := time.Now().Add(b.opts.Window)
		for time.Now().Before(deadline) {
			b.mu.Lock()
			n := len(b.queue)
			b.mu.Unlock()
			if n >= b.opts.MaxSize {
				break
			}
			time.Sleep(min(time.Until(deadline), 100*time.Microsecond))
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.queue), b.opts.MaxSize)
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	return batch
}

// drain keeps a slot busy while the queue has work, then frees it.
func (b *Batcher[K, V]) drain() {
	for {
		b.mu.Lock()
		if len(b.queue) == 0 {
			b.inFlight--
			b.mu.Unlock()
			return
		}
		underLoad := b.inFlight > 1
		b.mu.Unlock()
		b.runBatch(b.take(underLoad))
	}
}

// runBatch calls fn for batch and delivers every result.
func (b *Batcher[K, V]) runBatch(batch []*call[K, V]) {
	if len(batch) == 0 {
		return
	}
	// Callers may have different deadlines, and more may join while the
	// call is in flight: it lives while any of them waits (see leave), not
	// until the first caller's deadline.
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	defer cancel()
	f := &flight{cancel: cancel}
	unbounded := false
	live := batch[:0:0]
	b.mu.Lock()
	for _, c := range batch {
		if c.waiters == 0 {
			// Every caller gave up while it queued: do not ask Vault.
			b.deliver(c, Result[V]{Err: context.Canceled})
			continue
		}
		c.flight = f
		f.calls++
		unbounded = unbounded || c.unbounded
		if !c.latest.IsZero() {
			f.extend(c.latest)
		}
		live = append(live, c)
	}
	b.mu.Unlock()
	ctx = context.WithValue(ctx, flightKey{}, f)
	batch = live
	if len(batch) == 0 {
		return
	}
	if unbounded {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeout(ctx, b.opts.Timeout)
		defer cancelTimeout()
	}

	keys := make([]K, len(batch))
	for i, c := range batch {
		keys[i] = c.key
	}
	results, err := b.fn(ctx, keys)
	if err == nil && len(results) != len(batch) {
		err = errors.New("batch call returned a different number of results than keys")
	}
	b.mu.Lock()
	for i, c := range batch {
		if err != nil {
			b.deliver(c, Result[V]{Err: err})
		} else {
			b.deliver(c, results[i])
		}
	}
	b.mu.Unlock()
}

// deliver answers c's callers. Called with b.mu held.
func (b *Batcher[K, V]) deliver(c *call[K, V], r Result[V]) {
	c.result = r
	if b.opts.Dedupe && b.pending[c.key] == c {
		delete(b.pending, c.key)
	}
	close(c.done)
}
