package auth

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

// Vault is the part of the Vault client the keeper drives.
type Vault interface {
	// SetToken installs token for every later call and returns its
	// generation, which the client passes back to Reauth on a 403.
	SetToken(token string) uint64
	// RenewSelf renews the installed token by increment.
	RenewSelf(ctx context.Context, increment time.Duration) (vault.Token, error)
}

// Clock is the time source; tests inject a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Hooks are told about logins and renewals, for metrics.
type Hooks struct {
	Login func(err error)
	Renew func(err error)
}

// Keeper holds the current token and keeps it valid. Its decisions are the
// pure functions of state.go; it runs them and does the I/O.
type Keeper struct {
	vault  Vault
	method Method
	hooks  Hooks
	clock  Clock

	mu sync.Mutex
	s  state
	// flight is closed when the login under way ends; nil when none is.
	// Logins run on their own deadline, not on what is left of the 3 s a
	// request that happened to trigger them has, and every caller that
	// needs one joins the same login.
	flight chan struct{}
}

// callTimeout bounds one login or renewal, so a hung Vault delays the next
// attempt instead of stopping the keeper.
const callTimeout = 10 * time.Second

// NewKeeper returns a Keeper that installs its tokens into v. Register it
// with the client (vault.Client.SetReauth) so 403s reach it.
func NewKeeper(v Vault, method Method, hooks Hooks) *Keeper {
	return newKeeper(v, method, hooks, realClock{})
}

func newKeeper(v Vault, method Method, hooks Hooks, clock Clock) *Keeper {
	return &Keeper{vault: v, method: method, hooks: hooks, clock: clock}
}

// ExpiresAt is when the current token expires; zero if there is none or it
// does not expire.
func (k *Keeper) ExpiresAt() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.s.token.expiresAt
}

// Login logs in now (or joins the login under way) and waits for it as long
// as ctx allows.
func (k *Keeper) Login(ctx context.Context) error {
	return k.join(ctx)
}

// Reauth is what the Vault client calls when Vault answered 403 to a call
// made with token generation gen. It returns nil when a new token is
// installed and the call should be retried, else why not. Concurrent 403s
// share one login, and decideReauth keeps 403s from causing more logins
// than a retry can justify.
func (k *Keeper) Reauth(ctx context.Context, gen uint64) error {
	fp := k.method.Fingerprint()
	k.mu.Lock()
	now := k.clock.Now()
	switch decideReauth(k.s, now, gen, fp) {
	case reauthRetry:
		k.mu.Unlock()
		return nil
	case reauthFail:
		err := k.s.err
		if err == nil {
			err = fmt.Errorf("Vault refused a fresh token too, so logging in again cannot help: the token's policy likely lacks this path (next login attempt in at most %s)", reauthGap(k.s.reauthStreak))
		}
		k.mu.Unlock()
		return err
	}
	if k.flight == nil {
		k.s = beginReauth(k.s, now)
		klog.InfoS("Vault refused the token; logging in again", "method", k.method.Name(), "streak", k.s.reauthStreak)
	}
	k.mu.Unlock()
	return k.join(ctx)
}

// join starts a login unless one is under way and waits for its outcome
// until ctx ends; the login itself goes on.
func (k *Keeper) join(ctx context.Context) error {
	k.mu.Lock()
	done := k.flight
	if done == nil {
		done = make(chan struct{})
		k.flight = done
		go k.login(done)
	}
	k.mu.Unlock()
	select {
	case <-done:
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.s.err
	case <-ctx.Done():
		return fmt.Errorf("%s login: still under way at the caller's deadline: %w", k.method.Name(), ctx.Err())
	}
}

func (k *Keeper) login(done chan struct{}) {
	fp := k.method.Fingerprint()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	tok, err := k.method.Login(ctx)
	cancel()
	if k.hooks.Login != nil {
		k.hooks.Login(err)
	}
	k.mu.Lock()
	var gen uint64
	if err == nil {
		gen = k.vault.SetToken(tok.Value)
	} else {
		err = explainLogin(k.method.Name(), classify(err), err)
	}
	k.s = afterLogin(k.s, k.clock.Now(), fp, tok, gen, err)
	k.flight = nil
	k.mu.Unlock()
	close(done)
	if err != nil {
		klog.ErrorS(err, "Logging in to Vault failed", "method", k.method.Name())
		return
	}
	klog.V(2).InfoS("Logged in to Vault", "method", k.method.Name(), "ttl", tok.TTL, "renewable", tok.Renewable)
}

func (k *Keeper) renew(ctx context.Context) {
	k.mu.Lock()
	s := k.s
	k.mu.Unlock()
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	tok, err := k.vault.RenewSelf(callCtx, s.token.loginTTL)
	cancel()
	if k.hooks.Renew != nil {
		k.hooks.Renew(err)
	}
	k.mu.Lock()
	k.s = afterRenew(k.s, k.clock.Now(), s.gen, tok, err)
	capped := k.s.token.capped
	k.mu.Unlock()
	if err != nil {
		klog.ErrorS(err, "Renewing the Vault token failed")
		return
	}
	klog.V(4).InfoS("Renewed Vault token", "ttl", tok.TTL, "capped", capped)
}

// Run keeps the token alive until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	for {
		wait := k.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-k.clock.After(wait):
		}
	}
}

// step does what decide says once and returns how long to wait before the
// next step: never longer than pollCredential, so a new credential file is
// noticed within seconds whatever the backoff.
func (k *Keeper) step(ctx context.Context) time.Duration {
	fp := k.method.Fingerprint()
	k.mu.Lock()
	act, at := decide(k.s, k.clock.Now(), fp)
	changed := credentialChanged(k.s, fp)
	k.mu.Unlock()
	switch act {
	case actLogin:
		if changed {
			klog.InfoS("Credential file changed; logging in with it", "method", k.method.Name())
		}
		_ = k.join(ctx) // the outcome is in the state, and logged
	case actRenew:
		k.renew(ctx)
	}
	if act != actWait {
		k.mu.Lock()
		_, at = decide(k.s, k.clock.Now(), fp)
		k.mu.Unlock()
	}
	wait := pollCredential
	if !at.IsZero() {
		wait = min(wait, max(at.Sub(k.clock.Now()), 10*time.Millisecond))
	}
	return wait
}
