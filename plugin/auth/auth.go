// Package auth keeps the plugin's Vault token alive: it logs in, renews the
// token before it expires, logs in again before the token's maximum TTL ends
// or when the credential file on disk changes, and re-logs in on demand when
// Vault refuses the token.
package auth

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

// Method obtains a fresh token from credentials on disk.
type Method interface {
	// Login returns a new token. Errors never contain the credential.
	Login(ctx context.Context) (vault.Token, error)
	// Fingerprint identifies the credential file's current contents; a
	// change means the credential was rotated and Login should run again.
	Fingerprint() string
	// Name names the method in logs and metrics.
	Name() string
}

// AppRole logs in with a role ID and a secret ID read from a file.
type AppRole struct {
	Client       *vault.Client
	Mount        string
	RoleID       string // used when RoleIDPath is empty
	RoleIDPath   string
	SecretIDPath string
}

var _ Method = (*AppRole)(nil)

// Name implements Method.
func (a *AppRole) Name() string { return "approle" }

// Fingerprint implements Method.
func (a *AppRole) Fingerprint() string {
	return fingerprint(a.SecretIDPath) + "/" + fingerprint(a.RoleIDPath)
}

// Login implements Method. The secret ID is read on every login so that a
// rotated file is picked up without a restart.
func (a *AppRole) Login(ctx context.Context) (vault.Token, error) {
	roleID := a.RoleID
	if a.RoleIDPath != "" {
		var err error
		if roleID, err = readCredential(a.RoleIDPath, "role ID"); err != nil {
			return vault.Token{}, err
		}
	}
	secretID, err := readCredential(a.SecretIDPath, "secret ID")
	if err != nil {
		return vault.Token{}, err
	}
	return a.Client.LoginAppRole(ctx, a.Mount, roleID, secretID)
}

// TokenFile uses a token read from a file, for development.
type TokenFile struct {
	Path string
}

var _ Method = (*TokenFile)(nil)

// Name implements Method.
func (t *TokenFile) Name() string { return "token-file" }

// Fingerprint implements Method.
func (t *TokenFile) Fingerprint() string { return fingerprint(t.Path) }

// Login implements Method. The token's lifetime is not managed: a token
// file is re-read when it changes or when Vault refuses the token.
func (t *TokenFile) Login(context.Context) (vault.Token, error) {
	tok, err := readCredential(t.Path, "token")
	if err != nil {
		return vault.Token{}, err
	}
	return vault.Token{Value: tok}, nil
}

func readCredential(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		// os errors name the path and the reason, never the content.
		return "", fmt.Errorf("read %s file: %w", what, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("read %s file %s: file is empty", what, path)
	}
	return v, nil
}

func fingerprint(path string) string {
	if path == "" {
		return ""
	}
	fi, err := os.Stat(path) // follows symlinks, as Kubernetes volume updates swap them
	if err != nil {
		return "missing"
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%d:%d:%d", ino, fi.Size(), fi.ModTime().UnixNano())
}

// Hooks are told about logins and renewals, for metrics.
type Hooks struct {
	Login func(err error)
	Renew func(err error)
}

// Keeper holds the current token and keeps it valid.
type Keeper struct {
	client *vault.Client
	method Method
	hooks  Hooks
	now    func() time.Time

	// loginMu serialises logins and renewals so that a burst of 403s causes
	// one login. A renewal holds it for up to callTimeout while Vault is
	// slow; a request waits for it only as long as its own context allows.
	loginMu      ctxMutex
	lastAttempt  time.Time
	lastLoginErr error
	// A 403 that a fresh token does not cure is a policy problem: each
	// re-login would only mint another token. reauthStreak counts 403
	// logins close together and widens the gap between them.
	lastReauth   time.Time
	reauthStreak int

	mu          sync.Mutex
	state       tokenState
	fingerprint string
}

type tokenState struct {
	valid     bool
	renewable bool
	loginTTL  time.Duration // TTL granted at login; renewals ask for this much
	expiresAt time.Time     // zero: no expiry
	capped    bool          // a renewal got less than asked: max TTL is near
	nextAt    time.Time     // when to renew or log in again
}

// minReloginGap keeps a policy error (403 that a new token will not fix) from
// turning every request into a login.
const minReloginGap = 2 * time.Second

// NewKeeper returns a Keeper that installs its tokens into client.
func NewKeeper(client *vault.Client, method Method, hooks Hooks) *Keeper {
	k := &Keeper{client: client, method: method, hooks: hooks, now: time.Now}
	client.SetReauth(k.Reauth)
	return k
}

// ExpiresAt is when the current token expires; zero if there is none or it
// does not expire.
func (k *Keeper) ExpiresAt() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.state.expiresAt
}

// Login logs in now and installs the new token.
func (k *Keeper) Login(ctx context.Context) error {
	if err := k.loginMu.Lock(ctx); err != nil {
		return fmt.Errorf("%s login: wait for the token keeper: %w", k.method.Name(), err)
	}
	defer k.loginMu.Unlock()
	return k.loginLocked(ctx)
}

// Reauth logs in again unless a login was just attempted, in which case it
// returns that attempt's outcome; it is what the Vault client calls when
// Vault answers 403, so concurrent refusals share one login.
func (k *Keeper) Reauth(ctx context.Context) error {
	if err := k.loginMu.Lock(ctx); err != nil {
		// A renewal or login is under way; this request's time is up.
		return fmt.Errorf("log in again: wait for the token keeper: %w", err)
	}
	defer k.loginMu.Unlock()
	now := k.now()
	if !k.lastAttempt.IsZero() && now.Sub(k.lastAttempt) < minReloginGap {
		return k.lastLoginErr
	}
	if !k.lastReauth.IsZero() {
		since := now.Sub(k.lastReauth)
		if since < reauthGap(k.reauthStreak) {
			return k.lastLoginErr
		}
		if since < maxReauthGap {
			k.reauthStreak++
		} else {
			k.reauthStreak = 0
		}
	}
	k.lastReauth = now
	klog.InfoS("Vault refused the token; logging in again", "method", k.method.Name(), "streak", k.reauthStreak)
	return k.loginLocked(ctx)
}

// maxReauthGap caps the wait between 403-triggered logins while Vault keeps
// refusing fresh tokens (for example a policy missing a path).
const maxReauthGap = 5 * time.Minute

// reauthGap is the wait before the next 403-triggered login after streak
// logins that did not help: 0, then 2s, 4s, 8s ... up to maxReauthGap.
func reauthGap(streak int) time.Duration {
	if streak == 0 {
		return 0
	}
	return min(minReloginGap<<min(streak-1, 20), maxReauthGap)
}

// callTimeout bounds one login or renewal, so a hung Vault delays the next
// attempt instead of stopping the keeper.
const callTimeout = 10 * time.Second

func (k *Keeper) loginLocked(ctx context.Context) error {
	fp := k.method.Fingerprint()
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	tok, err := k.method.Login(callCtx)
	cancel()
	if k.hooks.Login != nil {
		k.hooks.Login(err)
	}
	now := k.now()
	k.mu.Lock()
	k.fingerprint = fp
	k.mu.Unlock()
	k.lastAttempt = now
	if err != nil {
		k.lastLoginErr = fmt.Errorf("%s login: %w", k.method.Name(), err)
		return k.lastLoginErr
	}
	k.lastLoginErr = nil
	k.client.SetToken(tok.Value)
	k.mu.Lock()
	k.state = tokenState{valid: true, renewable: tok.Renewable, loginTTL: tok.TTL}
	if tok.TTL > 0 {
		k.state.expiresAt = now.Add(tok.TTL)
		k.state.nextAt = now.Add(refreshAfter(tok.TTL))
	}
	k.mu.Unlock()
	klog.V(2).InfoS("Logged in to Vault", "method", k.method.Name(), "ttl", tok.TTL, "renewable", tok.Renewable)
	return nil
}

// refreshAfter is when to act on a token that lives ttl: at two thirds of
// its life, the point Vault's own lifetime watcher also uses, leaving a
// third for retries if Vault is briefly unreachable.
func refreshAfter(ttl time.Duration) time.Duration {
	return ttl * 2 / 3
}

// action is what the keeper should do next.
type action int

const (
	actWait action = iota
	actRenew
	actLogin
)

// decide is the keeper's policy, a pure function of its state.
func decide(s tokenState, now time.Time, credentialChanged bool) action {
	switch {
	case credentialChanged:
		return actLogin // a rotated credential: use it now, while the old token still works
	case !s.valid:
		return actLogin
	case s.expiresAt.IsZero() || now.Before(s.nextAt):
		return actWait
	case s.renewable && !s.capped:
		return actRenew
	default:
		return actLogin // not renewable, or renewals are capped by the max TTL
	}
}

// Run keeps the token alive until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	const pollCredential = 2 * time.Second
	backoff := time.Second
	for {
		k.mu.Lock()
		s := k.state
		// Only a credential that changed under a working token is news;
		// without one the keeper logs in anyway.
		changed := s.valid && k.method.Fingerprint() != k.fingerprint
		k.mu.Unlock()

		var err error
		switch decide(s, k.now(), changed) {
		case actLogin:
			if changed {
				klog.InfoS("Credential file changed; logging in with it", "method", k.method.Name())
			}
			err = k.Login(ctx)
		case actRenew:
			err = k.renew(ctx, s)
		}
		wait := pollCredential
		if err != nil {
			klog.ErrorS(err, "Keeping the Vault token alive failed; will retry", "retryIn", backoff)
			wait = backoff
			backoff = min(backoff*2, 30*time.Second)
		} else {
			backoff = time.Second
			k.mu.Lock()
			if !k.state.nextAt.IsZero() {
				wait = min(wait, max(k.state.nextAt.Sub(k.now()), 10*time.Millisecond))
			}
			k.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (k *Keeper) renew(ctx context.Context, s tokenState) error {
	// Hold loginMu so a concurrent re-login cannot be overwritten by the
	// outcome of renewing the token it replaced.
	if err := k.loginMu.Lock(ctx); err != nil {
		return fmt.Errorf("renew token: %w", err)
	}
	defer k.loginMu.Unlock()
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	tok, err := k.client.RenewSelf(callCtx, s.loginTTL)
	cancel()
	if k.hooks.Renew != nil {
		k.hooks.Renew(err)
	}
	if vault.IsPermissionDenied(err) {
		// Revoked or already expired: renewing cannot help.
		return k.loginLocked(ctx)
	}
	if err != nil {
		return fmt.Errorf("renew token: %w", err)
	}
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.state.expiresAt = now.Add(tok.TTL)
	k.state.nextAt = now.Add(refreshAfter(tok.TTL))
	// Vault grants less than asked when the token's max TTL is closer than
	// the increment; from then on only a new login extends its life.
	if tok.TTL+time.Second < s.loginTTL {
		k.state.capped = true
	}
	klog.V(4).InfoS("Renewed Vault token", "ttl", tok.TTL, "capped", k.state.capped)
	return nil
}

// ctxMutex is a mutex whose Lock gives up when a context ends. The zero
// value is unlocked.
type ctxMutex struct {
	once sync.Once
	ch   chan struct{} // holds a token while locked
}

// Lock locks m, or returns ctx's error if ctx ends first.
func (m *ctxMutex) Lock(ctx context.Context) error {
	m.once.Do(func() { m.ch = make(chan struct{}, 1) })
	select {
	case m.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unlock unlocks m.
func (m *ctxMutex) Unlock() { <-m.ch }
