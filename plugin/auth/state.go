package auth

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

// This file is the token keeper's policy: pure functions of its state and
// the time, so every rule is tested with tables and timelines (state_test.go)
// without a Vault or a clock. keeper.go only observes and acts.

// failure classifies a failed login or renewal by what a retry can fix.
type failure int

const (
	failNone failure = iota
	// failTransient: Vault unreachable, 5xx, 429, a timeout, an unreadable
	// credential file. Retrying with backoff is what fixes it.
	failTransient
	// failRejected: Vault answered 400 to a login ("invalid role or secret
	// ID"). The same credential will never work, and every try counts
	// towards Vault's user lockout (on by default since 1.13: 5 failed
	// logins within 15 minutes lock the role_id out, for every node that
	// shares it). Only a new credential file helps.
	failRejected
	// failRefused: Vault answered 403 to a login: the role is most likely
	// locked out after failed logins (sys/locked-users), or the auth mount
	// refuses this client. It lifts by itself after the lockout duration
	// or when an operator unlocks the role.
	failRefused
)

// Retry timing.
const (
	// pollCredential is how often the credential file is checked for a new
	// version; a rotated file is used within this long, even while a
	// failed login is backing off.
	pollCredential = 2 * time.Second
	// maxBackoff caps the wait between attempts that failed for a
	// transient reason, so a token that expired during a Vault outage is
	// replaced within seconds of Vault's return, well inside one Status
	// refresh interval.
	maxBackoff = 10 * time.Second
	// rejectedRetry is how long a rejected credential rests before it is
	// tried once more (in case Vault's side was fixed, for example a
	// role's CIDR binding). Vault counts failed logins per role_id until 15
	// minutes pass without one (lockout_counter_reset); with one attempt
	// per node per hour, nodes sharing a role_id add up to at most one
	// failure each per counter window, so fewer than 5 nodes never trip
	// the default lockout_threshold of 5.
	rejectedRetry = time.Hour
	// refusedRetry spaces logins while Vault answers 403 (a lockout):
	// Vault does not count logins it refuses for a locked role, so this
	// only bounds how soon the plugin notices an unlock.
	refusedRetry = time.Minute
	// maxReauthGap caps the wait between 403-triggered logins while Vault
	// keeps refusing fresh tokens (a policy missing a path).
	maxReauthGap = 5 * time.Minute
	// minReauthGap is the first step of that wait.
	minReauthGap = 2 * time.Second
)

// tokenState is what the keeper knows about the installed token.
type tokenState struct {
	valid     bool
	renewable bool
	loginTTL  time.Duration // TTL granted at login; renewals ask for this much
	expiresAt time.Time     // zero: no expiry
	capped    bool          // a renewal got less than asked: max TTL is near
	nextAt    time.Time     // when to renew or log in again
}

// state is the keeper's whole memory.
type state struct {
	token tokenState
	// gen is the client's generation of the installed token (see
	// vault.Client.SetToken); a 403 on an older generation needs no login.
	gen uint64

	// The last attempt to obtain or extend a token.
	attemptAt time.Time
	// attemptFP is the credential fingerprint the last login used; a
	// different one on disk means a new credential to try at once.
	attemptFP string
	failure   failure
	failures  int   // consecutive failed attempts, for backoff
	err       error // the last attempt's error; nil after a success

	// 403-triggered logins: when the last one ran, and how many in a row
	// minted a token that Vault refused again.
	lastReauth   time.Time
	reauthStreak int
}

// action is what the keeper should do next.
type action int

const (
	actWait action = iota
	actRenew
	actLogin
)

func (a action) String() string {
	return [...]string{"wait", "renew", "login"}[a]
}

// retryAt is when the next attempt may start after a failed one.
func retryAt(s state) time.Time {
	switch s.failure {
	case failNone:
		return time.Time{}
	case failRejected:
		return s.attemptAt.Add(rejectedRetry)
	case failRefused:
		return s.attemptAt.Add(refusedRetry)
	default:
		return s.attemptAt.Add(backoff(s.failures))
	}
}

// backoff is the wait after n consecutive transient failures: 1s, 2s, 4s,
// 8s, then maxBackoff.
func backoff(n int) time.Duration {
	if n < 1 {
		return 0
	}
	return min(time.Second<<min(n-1, 10), maxBackoff)
}

// credentialChanged reports whether the credential on disk (fp) differs from
// the one the last login used.
func credentialChanged(s state, fp string) bool {
	return !s.attemptAt.IsZero() && fp != s.attemptFP
}

// decide is the keeper loop's policy: what to do at now with the credential
// fingerprint fp, and when to look again if the answer is to wait (zero: at
// the next credential poll).
func decide(s state, now time.Time, fp string) (action, time.Time) {
	if credentialChanged(s, fp) {
		// A rotated credential: use it now, while the old token still
		// works, and whatever a failed attempt's backoff says.
		return actLogin, now
	}
	t := s.token
	var act action
	switch {
	case !t.valid:
		act = actLogin
	case t.expiresAt.IsZero():
		return actWait, time.Time{} // no expiry: act on a 403 or a new file only
	case now.Before(t.nextAt):
		return actWait, t.nextAt
	case t.renewable && !t.capped:
		act = actRenew
	default:
		act = actLogin // not renewable, or renewals are capped by the max TTL
	}
	if at := retryAt(s); now.Before(at) {
		return actWait, at
	}
	return act, now
}

// reauthVerdict is what to do when a call's token was refused with 403.
type reauthVerdict int

const (
	// reauthRetry: a newer token is installed already; retry the call.
	reauthRetry reauthVerdict = iota
	// reauthLogin: log in (or join the login under way).
	reauthLogin
	// reauthFail: logging in now cannot help or would harm; fail the call
	// with the state's reason.
	reauthFail
)

// decideReauth decides on a 403 for a call made with token generation
// refusedGen. It never lets 403s turn into a stream of logins: a failed
// login is retried only as retryAt allows (a rejected credential not at all
// until its file changes), and fresh tokens that Vault refuses again
// (a policy problem, which no login fixes) space logins out up to
// maxReauthGap.
func decideReauth(s state, now time.Time, refusedGen uint64, fp string) reauthVerdict {
	if refusedGen != s.gen {
		return reauthRetry
	}
	if credentialChanged(s, fp) {
		return reauthLogin
	}
	if s.failure != failNone {
		if now.Before(retryAt(s)) {
			return reauthFail
		}
		return reauthLogin
	}
	if !s.lastReauth.IsZero() && now.Sub(s.lastReauth) < reauthGap(s.reauthStreak) {
		return reauthFail
	}
	return reauthLogin
}

// reauthGap is the wait before the next 403-triggered login after streak
// fresh tokens were refused: 0, then 2s, 4s, 8s ... up to maxReauthGap.
func reauthGap(streak int) time.Duration {
	if streak == 0 {
		return 0
	}
	return min(minReauthGap<<min(streak-1, 20), maxReauthGap)
}

// beginReauth records a 403-triggered login about to run: the token it
// replaces is dead, and if that token came from a successful login, Vault
// refused a fresh token (counted in the streak).
func beginReauth(s state, now time.Time) state {
	s.token.valid = false
	if s.failure == failNone && !s.lastReauth.IsZero() && now.Sub(s.lastReauth) < maxReauthGap {
		s.reauthStreak++
	} else if s.failure == failNone {
		s.reauthStreak = 0
	}
	s.lastReauth = now
	return s
}

// refreshAfter is when to act on a token that lives ttl: at two thirds of
// its life, the point Vault's own lifetime watcher also uses, leaving a
// third for retries if Vault is briefly unreachable.
func refreshAfter(ttl time.Duration) time.Duration {
	return ttl * 2 / 3
}

// afterLogin records a login that used credential fp. On success gen is the
// generation of the installed token. A failed login leaves a still valid
// token in place (a rotated credential that does not work yet must not
// stop a working plugin).
func afterLogin(s state, now time.Time, fp string, tok vault.Token, gen uint64, err error) state {
	s.attemptAt, s.attemptFP = now, fp
	if err != nil {
		s.failure = classify(err)
		s.failures++
		s.err = err
		return s
	}
	s.failure, s.failures, s.err = failNone, 0, nil
	s.gen = gen
	s.token = tokenState{valid: true, renewable: tok.Renewable, loginTTL: tok.TTL}
	if tok.TTL > 0 {
		s.token.expiresAt = now.Add(tok.TTL)
		s.token.nextAt = now.Add(refreshAfter(tok.TTL))
	}
	return s
}

// afterRenew records a renewal of the token of generation gen.
func afterRenew(s state, now time.Time, gen uint64, tok vault.Token, err error) state {
	if gen != s.gen {
		return s // a login replaced the token meanwhile; its state stands
	}
	s.attemptAt = now
	switch {
	case vault.IsPermissionDenied(err):
		// Revoked or already expired: only a login helps, at once.
		s.token.valid = false
		s.failure, s.failures, s.err = failNone, 0, nil
	case err != nil:
		s.failure = failTransient
		s.failures++
		s.err = err
	default:
		s.failure, s.failures, s.err = failNone, 0, nil
		s.token.expiresAt = now.Add(tok.TTL)
		s.token.nextAt = now.Add(refreshAfter(tok.TTL))
		// Vault grants less than asked when the token's max TTL is closer
		// than the increment; from then on only a new login extends it.
		if tok.TTL+time.Second < s.token.loginTTL {
			s.token.capped = true
		}
	}
	return s
}

// classify tells what kind of retry can fix a failed login.
func classify(err error) failure {
	var ve *vault.Error
	if !errors.As(err, &ve) {
		return failTransient // an unreadable file, a timeout before Vault answered
	}
	switch ve.Status {
	case http.StatusBadRequest:
		return failRejected
	case http.StatusForbidden:
		return failRefused
	default:
		return failTransient
	}
}

// explainLogin turns a failed login into the message operators see in the
// log and in Status: what Vault's answer most likely means and what to do.
func explainLogin(method string, f failure, err error) error {
	switch f {
	case failRejected:
		return fmt.Errorf("%s login rejected: the credential is not valid; write a new one: it is used within %s of the file changing, and this one is not retried before %s, as each failed login counts towards Vault's user lockout (%w)",
			method, pollCredential, rejectedRetry, err)
	case failRefused:
		return fmt.Errorf("%s login refused (403): the role may be locked out after failed logins; see sys/locked-users (%w)", method, err)
	default:
		return fmt.Errorf("%s login: %w", method, err)
	}
}
