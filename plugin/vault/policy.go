package vault

import (
	"errors"
	"net/http"
	"time"
)

// policy is the client's failover and retry policy, with no clock, no I/O
// and no state: Client.do tells it how much of the caller's deadline is
// left and what the last attempt answered, and does what it says. The rules:
//
//  1. Each attempt gets an equal share of the time left, less Margin, among
//     the nodes not yet tried in this round, plus one share kept for a
//     later round while one may follow; never less than MinAttempt. A node
//     that hangs thus costs a bounded part of the call (a 3 s deadline, two
//     nodes: 0.9 s) and the next node still answers in time. With less than
//     MinAttempt left beyond the margin there is nothing to share: the
//     attempt gets all that is left.
//  2. A failure moves on to the next node when another node may answer
//     otherwise: no answer (refused, reset, or the attempt's share ran
//     out), a 5xx (sealed, a standby without an active node, overloaded)
//     or a 429 (a standby saying so). Any other answer is Vault's word on
//     the request, the same on every node, and is returned; so is the
//     caller's own deadline or cancellation.
//  3. A node that did not answer is demoted: later calls start at the node
//     after it, so a hung node costs one attempt's share once, not on every
//     call. A node that answered with an error keeps its place; a call that
//     succeeds elsewhere moves later calls there.
//  4. When every node failed in a round, another round follows after a
//     backoff (FirstBackoff, doubling up to MaxBackoff), at most
//     MaxRetryRounds times, while the time left covers Margin and
//     MinAttempt; a backoff that would not leave them is cut short. That
//     rides out a leader election (about 2 s) inside the API server's 3 s:
//     the last round starts about 2.45 s in.
type policy struct {
	// Margin is kept at the end of the caller's deadline so that our answer,
	// even an error, reaches the caller before its deadline does.
	Margin time.Duration
	// MinAttempt is the least time worth giving an attempt.
	MinAttempt time.Duration
	// MaxRetryRounds bounds the rounds after the first.
	MaxRetryRounds int
	// FirstBackoff is the wait after the first failed round; it doubles
	// after each further one, up to MaxBackoff.
	FirstBackoff, MaxBackoff time.Duration
}

// defaultPolicy is the policy every Client uses.
var defaultPolicy = policy{
	Margin:         300 * time.Millisecond,
	MinAttempt:     250 * time.Millisecond,
	MaxRetryRounds: 6,
	FirstBackoff:   50 * time.Millisecond,
	MaxBackoff:     time.Second,
}

// verdict is what a failed attempt means for the call and for the node.
type verdict int

const (
	// verdictReturn: return the error; no other node would do better.
	verdictReturn verdict = iota
	// verdictNextNode: the node answered it cannot serve now; try the next.
	verdictNextNode
	// verdictNodeDown: the node did not answer; try the next, and start
	// later calls after it.
	verdictNodeDown
)

func (v verdict) String() string {
	return [...]string{"return", "next node", "node down"}[v]
}

// attemptTimeout is how long the next attempt may take (rule 1). left is
// the time until the caller's deadline, untried the nodes of this round not
// yet tried (the one about to be tried included), round the round's index
// (0 for the first).
func (p policy) attemptTimeout(left time.Duration, untried, round int) time.Duration {
	usable := left - p.Margin
	if usable < p.MinAttempt {
		return max(left, 0)
	}
	untried = max(untried, 1)
	share := usable / time.Duration(untried)
	if round < p.MaxRetryRounds {
		// Keep a share for a later round, when it is worth one.
		if reserved := usable / time.Duration(untried+1); reserved >= p.MinAttempt {
			share = reserved
		}
	}
	return max(share, p.MinAttempt)
}

// judge says what a failed attempt's error means (rules 2 and 3).
// callerDone is whether the caller's own context has ended.
func (p policy) judge(err error, callerDone bool) verdict {
	var ve *Error
	if callerDone || !errors.As(err, &ve) {
		return verdictReturn
	}
	switch {
	case ve.Status == 0:
		return verdictNodeDown
	case ve.Status >= 500, ve.Status == http.StatusTooManyRequests:
		return verdictNextNode
	default:
		return verdictReturn
	}
}

// backoff is the wait after round failed (rule 4).
func (p policy) backoff(round int) time.Duration {
	b := p.FirstBackoff
	for i := 0; i < round && b < p.MaxBackoff; i++ {
		b *= 2
	}
	return min(b, p.MaxBackoff)
}

// nextRound says, after round failed on every node with left until the
// caller's deadline, whether to try them all again and after how long
// (rule 4).
func (p policy) nextRound(round int, left time.Duration) (wait time.Duration, again bool) {
	room := left - p.Margin - p.MinAttempt
	if round >= p.MaxRetryRounds || room < 0 {
		return 0, false
	}
	return min(p.backoff(round), room), true
}
