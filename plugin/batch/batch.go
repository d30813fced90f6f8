// Package batch coalesces concurrent calls into batch calls.
//
// A call that arrives while a batch slot is free is sent at once, alone: no
// added latency when the plugin is idle. Calls that arrive while every slot
// is busy wait in a queue and leave together, up to MaxSize, as soon as a
// slot frees; with Window > 0 a batch formed under load also lingers up to
// Window for more. Concurrent calls with the same key share one result.
package batch

import (
	"context"
	"errors"
	"sync"
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
	// Timeout bounds a batch call whose members carry no deadline.
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
	ctx      context.Context
	done     chan struct{}
	result   Result[V]
	enqueued time.Time
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
	if !shared {
		c = &call[K, V]{key: key, ctx: ctx, done: make(chan struct{}), enqueued: time.Now()}
		if b.opts.Dedupe {
			b.pending[key] = c
		}
		b.queue = append(b.queue, c)
	}
	run := !shared && b.inFlight < b.opts.MaxInFlight
	if run {
		b.inFlight++
	}
	b.mu.Unlock()

	if run {
		// This goroutine owns a slot: send the first batch itself (its own
		// key is in it when the Batcher was idle), then hand the slot on.
		b.runBatch(b.take(false))
		go b.drain()
	}
	select {
	case <-c.done:
		return c.result.Value, c.result.Err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
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
	// Members may have different deadlines; one member giving up must not
	// cancel the others, so the call lives until the latest deadline.
	var latest time.Time
	for _, c := range batch {
		d, ok := c.ctx.Deadline()
		if !ok {
			latest = time.Now().Add(b.opts.Timeout)
			break
		}
		if d.After(latest) {
			latest = d
		}
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
	defer cancel()

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
			c.result = Result[V]{Err: err}
		} else {
			c.result = results[i]
		}
		if b.opts.Dedupe && b.pending[c.key] == c {
			delete(b.pending, c.key)
		}
		close(c.done)
	}
	b.mu.Unlock()
}
