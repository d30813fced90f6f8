package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func vaultErr(status int, msg string) error {
	return &vault.Error{Op: "approle login", Addr: "https://vault:8200", Status: status, Errors: []string{msg}}
}

var (
	errRejected = vaultErr(http.StatusBadRequest, "invalid role or secret ID")
	errLocked   = vaultErr(http.StatusForbidden, "permission denied")
	errDown     = &vault.Error{Op: "approle login", Addr: "https://vault:8200", Err: errors.New("connection refused")}
)

func TestDecide(t *testing.T) {
	now := t0.Add(time.Hour)
	live := tokenState{valid: true, renewable: true, loginTTL: time.Minute, expiresAt: now.Add(time.Minute), nextAt: now.Add(40 * time.Second)}
	due := live
	due.nextAt = now.Add(-time.Second)
	dueCapped := due
	dueCapped.capped = true
	dueNotRenewable := due
	dueNotRenewable.renewable = false
	ok := state{token: live, attemptAt: now.Add(-time.Minute), attemptFP: "fp1"}
	with := func(s state, f func(*state)) state { f(&s); return s }

	tests := []struct {
		name   string
		state  state
		fp     string
		want   action
		wantAt time.Time // for actWait; zero: next credential poll
	}{
		{name: "start: no token, no attempt => login", state: state{}, fp: "fp1", want: actLogin},
		{name: "token not yet due => wait until due", state: ok, fp: "fp1", want: actWait, wantAt: live.nextAt},
		{name: "renewable token due => renew", state: with(ok, func(s *state) { s.token = due }), fp: "fp1", want: actRenew},
		{name: "due but renewals capped by max TTL => login", state: with(ok, func(s *state) { s.token = dueCapped }), fp: "fp1", want: actLogin},
		{name: "due and not renewable => login", state: with(ok, func(s *state) { s.token = dueNotRenewable }), fp: "fp1", want: actLogin},
		{name: "token without expiry => wait for a poll", state: with(ok, func(s *state) { s.token = tokenState{valid: true} }), fp: "fp1", want: actWait},
		{name: "credential file changed => login even if the token is fresh", state: ok, fp: "fp2", want: actLogin},
		{
			name: "rejected credential, same file => wait an hour, not a login per poll",
			state: with(ok, func(s *state) {
				s.token.valid, s.failure, s.failures, s.attemptAt = false, failRejected, 1, now.Add(-time.Minute)
			}),
			fp: "fp1", want: actWait, wantAt: now.Add(-time.Minute).Add(rejectedRetry),
		},
		{
			name: "rejected credential, new file => login at once",
			state: with(ok, func(s *state) {
				s.token.valid, s.failure, s.failures = false, failRejected, 1
			}),
			fp: "fp2", want: actLogin,
		},
		{
			name: "rejected credential an hour ago => one more try",
			state: with(ok, func(s *state) {
				s.token.valid, s.failure, s.failures, s.attemptAt = false, failRejected, 1, now.Add(-rejectedRetry)
			}),
			fp: "fp1", want: actLogin,
		},
		{
			name: "locked out (403) => wait refusedRetry",
			state: with(ok, func(s *state) {
				s.token.valid, s.failure, s.failures, s.attemptAt = false, failRefused, 1, now.Add(-time.Second)
			}),
			fp: "fp1", want: actWait, wantAt: now.Add(-time.Second).Add(refusedRetry),
		},
		{
			name: "Vault unreachable twice => back off 2s",
			state: with(ok, func(s *state) {
				s.token.valid, s.failure, s.failures, s.attemptAt = false, failTransient, 2, now.Add(-time.Second)
			}),
			fp: "fp1", want: actWait, wantAt: now.Add(time.Second),
		},
		{
			name: "renewal failed, backoff over => renew again",
			state: with(ok, func(s *state) {
				s.token, s.failure, s.failures, s.attemptAt = due, failTransient, 1, now.Add(-2*time.Second)
			}),
			fp: "fp1", want: actRenew,
		},
		{
			name: "rejected new credential while the old token works => keep waiting on the token",
			state: with(ok, func(s *state) {
				s.failure, s.failures, s.attemptFP = failRejected, 1, "fp2"
			}),
			fp: "fp2", want: actWait, wantAt: live.nextAt,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, at := decide(tt.state, now, tt.fp)
			if got != tt.want {
				t.Fatalf("decide = %v, want %v", got, tt.want)
			}
			if got == actWait && !at.Equal(tt.wantAt) {
				t.Fatalf("wait until %s, want %s", at.Sub(now), tt.wantAt.Sub(now))
			}
		})
	}
}

func TestDecideReauth(t *testing.T) {
	now := t0.Add(time.Hour)
	ok := state{token: tokenState{valid: true}, gen: 3, attemptAt: now.Add(-time.Minute), attemptFP: "fp1"}
	with := func(s state, f func(*state)) state { f(&s); return s }
	tests := []struct {
		name string
		s    state
		gen  uint64
		fp   string
		want reauthVerdict
	}{
		{name: "403 on an older token => retry with the new one", s: ok, gen: 2, fp: "fp1", want: reauthRetry},
		{name: "403 on the current token => login", s: ok, gen: 3, fp: "fp1", want: reauthLogin},
		{name: "fresh token refused again right away => login once more", s: with(ok, func(s *state) { s.lastReauth = now.Add(-time.Second) }), gen: 3, fp: "fp1", want: reauthLogin},
		{name: "third refused fresh token within 2s => fail, no login", s: with(ok, func(s *state) { s.lastReauth, s.reauthStreak = now.Add(-time.Second), 1 }), gen: 3, fp: "fp1", want: reauthFail},
		{name: "refused fresh tokens, gap over => login", s: with(ok, func(s *state) { s.lastReauth, s.reauthStreak = now.Add(-3*time.Second), 1 }), gen: 3, fp: "fp1", want: reauthLogin},
		{name: "credential rejected, same file => fail, no login", s: with(ok, func(s *state) { s.failure, s.failures = failRejected, 1 }), gen: 3, fp: "fp1", want: reauthFail},
		{name: "credential rejected, new file => login", s: with(ok, func(s *state) { s.failure, s.failures = failRejected, 1 }), gen: 3, fp: "fp2", want: reauthLogin},
		{name: "locked out a second ago => fail", s: with(ok, func(s *state) { s.failure, s.failures, s.attemptAt = failRefused, 1, now.Add(-time.Second) }), gen: 3, fp: "fp1", want: reauthFail},
		{name: "Vault unreachable, backoff running => fail", s: with(ok, func(s *state) { s.failure, s.failures, s.attemptAt = failTransient, 3, now.Add(-time.Second) }), gen: 3, fp: "fp1", want: reauthFail},
		{name: "Vault unreachable, backoff over => login", s: with(ok, func(s *state) { s.failure, s.failures, s.attemptAt = failTransient, 3, now.Add(-5*time.Second) }), gen: 3, fp: "fp1", want: reauthLogin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decideReauth(tt.s, now, tt.gen, tt.fp); got != tt.want {
				t.Fatalf("decideReauth = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want failure
	}{
		{errRejected, failRejected},
		{errLocked, failRefused},
		{errDown, failTransient},
		{vaultErr(http.StatusInternalServerError, "internal error"), failTransient},
		{vaultErr(http.StatusTooManyRequests, "rate limit quota exceeded"), failTransient},
		{fmt.Errorf("read secret ID file: %w", errors.New("no such file")), failTransient},
		{fmt.Errorf("wrapped: %w", errRejected), failRejected},
	}
	for _, tt := range tests {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
	msg := explainLogin("AppRole", failRefused, errLocked).Error()
	if !strings.HasPrefix(msg, "AppRole login refused (403): the role may be locked out after failed logins; see sys/locked-users") {
		t.Errorf("403 explained as %q", msg)
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, maxBackoff, maxBackoff}
	for n, w := range want {
		if got := backoff(n); got != w {
			t.Errorf("backoff(%d) = %s, want %s", n, got, w)
		}
	}
	for streak, w := range []time.Duration{0, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		if got := reauthGap(streak); got != w {
			t.Errorf("reauthGap(%d) = %s, want %s", streak, got, w)
		}
	}
	if got := reauthGap(50); got != maxReauthGap {
		t.Errorf("reauthGap(50) = %s, want the cap %s", got, maxReauthGap)
	}
}

// The timelines below run keepers against a model of Vault with its default
// user lockout, on a fake clock, with callers hammering Reauth as the API
// server's requests would while Vault refuses the token.

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(time.Duration) <-chan time.Time { panic("timelines call step") }

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// fakeVault models what the keeper's outcomes depend on: valid secret IDs,
// outages, token TTLs, and user lockout as Vault 1.21 does it by default
// (5 failed logins of one role_id, each within 15 min of the last, lock it
// for 15 min; a locked role gets 403 even with a valid secret ID).
type fakeVault struct {
	clock *fakeClock

	mu          sync.Mutex
	valid       map[string]bool
	down        func(now time.Time) bool
	ttl         time.Duration
	fixedTTL    bool // tokens are not renewable: the keeper must log in again
	failed      int
	lastFail    time.Time
	lockedUntil time.Time
	lockouts    int
	logins      []loginRecord
}

type loginRecord struct {
	at     time.Time
	secret string
	err    error
}

func (v *fakeVault) login(secret string) (vault.Token, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.clock.Now()
	rec := loginRecord{at: now, secret: secret}
	defer func() { v.logins = append(v.logins, rec) }()
	switch {
	case v.down != nil && v.down(now):
		rec.err = errDown
	case now.Before(v.lockedUntil):
		rec.err = errLocked
	case !v.valid[secret]:
		if now.Sub(v.lastFail) > 15*time.Minute {
			v.failed = 0
		}
		v.failed++
		v.lastFail = now
		if v.failed >= 5 {
			v.lockedUntil = now.Add(15 * time.Minute)
			v.lockouts++
			v.failed = 0
		}
		rec.err = errRejected
	default:
		return vault.Token{Value: "token-" + secret, TTL: v.ttl, Renewable: !v.fixedTTL}, nil
	}
	return vault.Token{}, rec.err
}

// node is one plugin's Vault client as the keeper sees it.
type node struct {
	v      *fakeVault
	gen    uint64
	secret string // the credential file's content
	fpGen  int
}

func (n *node) SetToken(string) uint64 { n.gen++; return n.gen }
func (n *node) RenewSelf(context.Context, time.Duration) (vault.Token, error) {
	return vault.Token{TTL: n.v.ttl}, nil
}
func (n *node) Login(context.Context) (vault.Token, error) { return n.v.login(n.secret) }
func (n *node) Fingerprint() string                        { return fmt.Sprint(n.fpGen) }
func (n *node) Name() string                               { return "AppRole" }
func (n *node) writeSecret(s string)                       { n.secret = s; n.fpGen++ }

// simulate runs keepers from start to end in steps of tick: each keeper's
// loop runs when due, and while refused(now) every node's callers get 403
// on every tick and call Reauth. It returns when each node first held a
// token that Vault accepts (served[i], zero if never).
func simulate(t *testing.T, clock *fakeClock, nodes []*node, start, end time.Time, tick time.Duration, refused func(now time.Time, n *node) bool, events map[time.Duration]func()) {
	t.Helper()
	keepers := make([]*Keeper, len(nodes))
	next := make([]time.Time, len(nodes))
	for i, n := range nodes {
		keepers[i] = newKeeper(n, n, Hooks{}, clock)
		next[i] = start
	}
	ctx := context.Background()
	for now := start; now.Before(end); now = now.Add(tick) {
		clock.set(now)
		if ev := events[now.Sub(start)]; ev != nil {
			ev()
		}
		for i, k := range keepers {
			if !now.Before(next[i]) {
				next[i] = now.Add(k.step(ctx))
			}
			if refused(now, nodes[i]) {
				k.mu.Lock()
				gen := k.s.gen
				k.mu.Unlock()
				_ = k.Reauth(ctx, gen)
			}
		}
	}
}

// The scenario: the plugin's token is revoked and its secret ID
// destroyed while Vault keeps answering; 120 s later a new secret ID is
// written into the same file. Before, the plugin sent 5 logins with the
// dead secret ID within 20 s, locked the role out, and a valid secret ID
// then failed for 15 minutes.
func TestTimelineRevokedTokenAndDestroyedSecretIDThenANewFile(t *testing.T) {
	clock := &fakeClock{now: t0}
	v := &fakeVault{clock: clock, valid: map[string]bool{"s1": true}, ttl: time.Hour}
	n := &node{v: v, secret: "s1"}
	revokedAt, newFileAt := 10*time.Second, 130*time.Second
	revokedGen := uint64(0)
	events := map[time.Duration]func(){
		revokedAt: func() { v.mu.Lock(); delete(v.valid, "s1"); v.mu.Unlock(); revokedGen = n.gen },
		newFileAt: func() { v.mu.Lock(); v.valid["s2"] = true; v.mu.Unlock(); n.writeSecret("s2") },
	}
	refused := func(now time.Time, n *node) bool {
		// Calls carry the revoked token until a new one is installed.
		return now.Sub(t0) >= revokedAt && n.gen == revokedGen
	}
	simulate(t, clock, []*node{n}, t0, t0.Add(5*time.Minute), 100*time.Millisecond, refused, events)

	var deadSecretLogins int
	var served time.Duration = -1
	for _, l := range v.logins {
		if l.at.Sub(t0) >= revokedAt && l.secret == "s1" {
			deadSecretLogins++
		}
		if l.secret == "s2" && l.err == nil && served < 0 {
			served = l.at.Sub(t0) - newFileAt
		}
	}
	if deadSecretLogins != 1 {
		t.Errorf("%d logins with the destroyed secret ID, want 1 (each counts towards the lockout)", deadSecretLogins)
	}
	if v.lockouts != 0 {
		t.Errorf("the role was locked out %d times", v.lockouts)
	}
	if served < 0 || served > pollCredential {
		t.Errorf("first login with the new file %s after writing it, want within %s", served, pollCredential)
	}
}

// Three nodes share a role_id and all start with a wrong secret ID, for two
// hours, their callers hammering: Vault's default lockout never trips.
func TestTimelineThreeNodesWithAWrongSecretIDNeverLockTheRoleOut(t *testing.T) {
	clock := &fakeClock{now: t0}
	v := &fakeVault{clock: clock, valid: map[string]bool{"good": true}, ttl: time.Hour}
	nodes := []*node{{v: v, secret: "bad"}, {v: v, secret: "bad"}, {v: v, secret: "bad"}}
	events := map[time.Duration]func(){}
	// The nodes start a few seconds apart, as kubelets do.
	refused := func(now time.Time, n *node) bool { return n.gen == 0 }
	simulate(t, clock, nodes, t0, t0.Add(2*time.Hour), 500*time.Millisecond, refused, events)
	if v.lockouts != 0 {
		t.Fatalf("the role was locked out (%d logins in 2h)", len(v.logins))
	}
	// One try at start and one per rejectedRetry after it, per node.
	if max := len(nodes) * 3; len(v.logins) > max {
		t.Errorf("%d logins in 2h with a rejected secret ID, want at most %d", len(v.logins), max)
	}
	// The operator writes the right secret ID: every node serves within a
	// poll, as the role was never locked.
	v.mu.Lock()
	before := len(v.logins)
	v.mu.Unlock()
	for _, n := range nodes {
		n.writeSecret("good")
	}
	simulate(t, clock, nodes, t0.Add(2*time.Hour), t0.Add(2*time.Hour+10*time.Second), 500*time.Millisecond, refused, events)
	for i, n := range nodes {
		if n.gen == 0 {
			t.Errorf("node %d has no token after the right secret ID was written (logins: %v)", i, v.logins[before:])
		}
	}
}

// The review's finding: a login failing through an outage backed off up to
// 5 minutes, so with Vault back at 4m20s the first login came at 8m32s.
// Now the backoff is capped at maxBackoff.
func TestTimelineTokenExpiredDuringAnOutageIsReplacedSoonAfterVaultReturns(t *testing.T) {
	clock := &fakeClock{now: t0}
	downFrom, downTo := time.Minute, 4*time.Minute+20*time.Second
	v := &fakeVault{clock: clock, valid: map[string]bool{"s": true}, ttl: 90 * time.Second, fixedTTL: true,
		down: func(now time.Time) bool { d := now.Sub(t0); return d >= downFrom && d < downTo }}
	n := &node{v: v, secret: "s"}
	// Logins to replace the token fail through the outage.
	refused := func(now time.Time, n *node) bool { return false }
	simulate(t, clock, []*node{n}, t0, t0.Add(10*time.Minute), 100*time.Millisecond, refused, nil)
	var back time.Duration = -1
	for _, l := range v.logins {
		if l.at.Sub(t0) >= downTo && l.err == nil {
			back = l.at.Sub(t0) - downTo
			break
		}
	}
	// Within one Status refresh interval (the default, 20s), so Status
	// recovers at its next refresh.
	if within := 20 * time.Second; back < 0 || back > within {
		t.Fatalf("first login %s after Vault returned, want within %s", back, within)
	}
	if v.lockouts != 0 || v.failed != 0 {
		t.Errorf("an outage counted as failed logins: %d", v.failed)
	}
}
