package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

const ms = time.Millisecond

func TestAttemptTimeout(t *testing.T) {
	p := defaultPolicy // margin 300ms, min attempt 250ms, 6 retry rounds
	tests := []struct {
		name    string
		left    time.Duration
		untried int
		round   int
		want    time.Duration
	}{
		{name: "3s left, first of 2 nodes => a third of 2.7s: a hung first node leaves the second 2.1s", left: 3000 * ms, untried: 2, want: 900 * ms},
		{name: "2.1s left, second of 2 nodes => half of 1.8s, half kept for another round", left: 2100 * ms, untried: 1, want: 900 * ms},
		{name: "3s left, first of 3 nodes => a quarter of 2.7s", left: 3000 * ms, untried: 3, want: 675 * ms},
		{name: "3s left, a lone node => half of 2.7s: a second try on a new connection fits", left: 3000 * ms, untried: 1, want: 1350 * ms},
		{name: "30s left (no caller deadline), first of 2 nodes => a third of 29.7s", left: 30 * time.Second, untried: 2, want: 9900 * ms},
		{name: "last round, first of 2 nodes => half of what is left: no round follows", left: 1300 * ms, untried: 2, round: 6, want: 500 * ms},
		{name: "reserve would be under the minimum => it is dropped", left: 1000 * ms, untried: 2, want: 350 * ms},
		{name: "shares under the minimum even without a reserve => the minimum", left: 700 * ms, untried: 3, want: 250 * ms},
		{name: "less than margin plus minimum left => all that is left", left: 500 * ms, untried: 2, want: 500 * ms},
		{name: "deadline passed => zero", left: -10 * ms, untried: 2, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.attemptTimeout(tt.left, tt.untried, tt.round); got != tt.want {
				t.Fatalf("attemptTimeout(%v, %d, %d) = %v, want %v", tt.left, tt.untried, tt.round, got, tt.want)
			}
		})
	}
}

func TestJudge(t *testing.T) {
	answered := func(status int) error { return &Error{Op: "transit decrypt", Addr: "https://v1", Status: status} }
	noAnswer := func(err error) error { return &Error{Op: "transit decrypt", Addr: "https://v1", Err: err} }
	tests := []struct {
		name       string
		err        error
		callerDone bool
		want       verdict
	}{
		{name: "connection refused => node down", err: noAnswer(errors.New("dial tcp: connect: connection refused")), want: verdictNodeDown},
		{name: "attempt's share ran out => node down", err: noAnswer(fmt.Errorf("no answer within 900ms: %w", context.DeadlineExceeded)), want: verdictNodeDown},
		{name: "TLS handshake failed => node down", err: noAnswer(errors.New("tls: failed to verify certificate")), want: verdictNodeDown},
		{name: "503 sealed or standby => next node", err: answered(http.StatusServiceUnavailable), want: verdictNextNode},
		{name: "500 => next node", err: answered(http.StatusInternalServerError), want: verdictNextNode},
		{name: "429 standby => next node", err: answered(http.StatusTooManyRequests), want: verdictNextNode},
		{name: "400 bad ciphertext => return: every node says the same", err: answered(http.StatusBadRequest), want: verdictReturn},
		{name: "403 denied => return, for the token logic above", err: answered(http.StatusForbidden), want: verdictReturn},
		{name: "404 => return", err: answered(http.StatusNotFound), want: verdictReturn},
		{name: "caller's deadline passed => return, whatever the node did", err: noAnswer(context.DeadlineExceeded), callerDone: true, want: verdictReturn},
		{name: "caller gone during a 503 => return", err: answered(http.StatusServiceUnavailable), callerDone: true, want: verdictReturn},
		{name: "not a Vault call's error => return", err: errors.New("decode response: unexpected EOF"), want: verdictReturn},
		{name: "wrapped Vault error => judged by its status", err: fmt.Errorf("fingerprint: %w", answered(http.StatusBadGateway)), want: verdictNextNode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := defaultPolicy.judge(tt.err, tt.callerDone); got != tt.want {
				t.Fatalf("judge(%v, callerDone=%v) = %v, want %v", tt.err, tt.callerDone, got, tt.want)
			}
		})
	}
}

func TestNextRound(t *testing.T) {
	p := defaultPolicy
	tests := []struct {
		name      string
		round     int
		left      time.Duration
		wantWait  time.Duration
		wantAgain bool
	}{
		{name: "first round failed, 2.9s left => again after 50ms", round: 0, left: 2900 * ms, wantWait: 50 * ms, wantAgain: true},
		{name: "second round failed => again after 100ms", round: 1, left: 2500 * ms, wantWait: 100 * ms, wantAgain: true},
		{name: "fifth round failed => backoff capped at 1s", round: 5, left: 10 * time.Second, wantWait: time.Second, wantAgain: true},
		{name: "seventh round failed => no more rounds", round: 6, left: 10 * time.Second, wantAgain: false},
		{name: "backoff would eat the margin and the attempt => cut short", round: 5, left: 1450 * ms, wantWait: 900 * ms, wantAgain: true},
		{name: "time left just covers margin and one attempt => again at once", round: 2, left: 550 * ms, wantWait: 0, wantAgain: true},
		{name: "time left does not cover margin and one attempt => stop", round: 2, left: 540 * ms, wantAgain: false},
		{name: "deadline passed => stop", round: 0, left: -time.Second, wantAgain: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wait, again := p.nextRound(tt.round, tt.left)
			if wait != tt.wantWait || again != tt.wantAgain {
				t.Fatalf("nextRound(%d, %v) = %v, %v; want %v, %v", tt.round, tt.left, wait, again, tt.wantWait, tt.wantAgain)
			}
		})
	}
}

// The rounds of one call that meets a leader election: every node fails
// fast until one wins. Within the API server's 3 s the policy must keep
// trying for longer than an election takes (about 2 s).
func TestRoundsOutlastALeaderElection(t *testing.T) {
	p := defaultPolicy
	left := 3 * time.Second
	var tried time.Duration
	for round := 0; ; round++ {
		wait, again := p.nextRound(round, left-tried)
		if !again {
			break
		}
		tried += wait
	}
	if tried < 2400*ms {
		t.Fatalf("the last round starts %v into a 3s call, want after 2.4s", tried)
	}
	if 3*time.Second-tried < p.Margin+p.MinAttempt {
		t.Fatalf("the last round starts %v into a 3s call: no time left for an attempt and the margin", tried)
	}
}
