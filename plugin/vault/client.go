// Package vault is the plugin's narrow client to HashiCorp Vault: the transit
// and auth calls the plugin makes, with failover across Vault nodes.
//
// The client is configured by its Config only. The VAULT_* environment
// variables that github.com/hashicorp/vault/api honours (VAULT_TOKEN,
// VAULT_SKIP_VERIFY, VAULT_AGENT_ADDR, ...) are ignored on purpose: a sidecar
// whose behaviour changes with its environment is hard to reason about, and
// VAULT_SKIP_VERIFY would turn TLS verification off without a flag saying so.
package vault

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"k8s.io/klog/v2"

	"github.com/vaultkms/vault-kms-plugin/plugin/batch"
)

// Config says how to reach Vault.
type Config struct {
	// Addresses are the Vault nodes to try, in order. The client sticks to
	// the last node that answered and moves on when it stops answering.
	Addresses []string
	// Namespace is sent with transit calls (Vault Enterprise).
	Namespace string
	// AuthNamespace is sent with login and token calls; empty means Namespace.
	AuthNamespace string
	// CAFile, ServerName, ClientCert and ClientKey configure TLS. The files
	// are looked at every few seconds and read again when they change.
	CAFile     string
	ServerName string
	ClientCert string
	ClientKey  string
	// Observe, if set, is told the duration and outcome of every Vault call.
	Observe func(op string, d time.Duration, err error)
}

// maxCallDuration bounds a Vault call whose context has no deadline.
const maxCallDuration = 30 * time.Second

// Client talks to one Vault cluster through any of its nodes.
type Client struct {
	nodes   []node
	current atomic.Int32 // index of the node calls start at
	policy  policy
	observe func(op string, d time.Duration, err error)
	tls     *reloadingTransport // nil without TLS files
	// demotedAt[i] is when node i's demotion was last logged (Unix ns).
	demotedAt []atomic.Int64

	tokenGen atomic.Uint64

	mu     sync.Mutex
	reauth Reauthenticator
}

// Reauthenticator replaces a token Vault refused. Reauth is called when
// Vault answers 403 to a call made with token generation gen (see
// SetToken); it returns nil once a newer token is installed, so the call is
// retried once, or why there is none. plugin/auth's Keeper implements it.
type Reauthenticator interface {
	Reauth(ctx context.Context, gen uint64) error
}

// ReauthFunc adapts a function to Reauthenticator.
type ReauthFunc func(ctx context.Context, gen uint64) error

// Reauth implements Reauthenticator.
func (f ReauthFunc) Reauth(ctx context.Context, gen uint64) error { return f(ctx, gen) }

type node struct {
	addr    string
	transit *api.Client // carries Config.Namespace
	auth    *api.Client // carries Config.AuthNamespace and the token
	login   *api.Client // carries Config.AuthNamespace, never a token
}

// New builds a Client. It does no I/O.
func New(cfg Config) (*Client, error) {
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("no Vault address")
	}
	httpClient, reloader, err := newHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	authNS := cfg.AuthNamespace
	if authNS == "" {
		authNS = cfg.Namespace
	}
	c := &Client{observe: cfg.Observe, policy: defaultPolicy, tls: reloader, demotedAt: make([]atomic.Int64, len(cfg.Addresses))}
	for _, addr := range cfg.Addresses {
		u, err := url.Parse(addr)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("vault address %q: want http(s)://host:port", addr)
		}
		transit, err := newAPIClient(addr, httpClient, cfg.Namespace)
		if err != nil {
			return nil, fmt.Errorf("vault address %q: %w", addr, err)
		}
		auth, err := newAPIClient(addr, httpClient, authNS)
		if err != nil {
			return nil, fmt.Errorf("vault address %q: %w", addr, err)
		}
		login, err := newAPIClient(addr, httpClient, authNS)
		if err != nil {
			return nil, fmt.Errorf("vault address %q: %w", addr, err)
		}
		c.nodes = append(c.nodes, node{addr: addr, transit: transit, auth: auth, login: login})
	}
	return c, nil
}

// HTTP/2 health checks: a connection that has received nothing for
// h2SendPingTimeout is pinged, and closed when no answer comes within
// h2PingTimeout. Without them a connection to a node that hangs without
// closing it (a frozen process, a dropped network path) stays open, and
// every call sent on it waits out its share of the deadline.
const (
	h2SendPingTimeout = 3 * time.Second
	h2PingTimeout     = 2 * time.Second
)

// newHTTPClient returns the HTTP client of every node and, when TLS files
// are configured, the transport that reloads them (nil otherwise).
func newHTTPClient(cfg Config) (*http.Client, *reloadingTransport, error) {
	build := func(tlsCfg *tls.Config) *http.Transport {
		return &http.Transport{
			Proxy: nil, // Vault is reached directly; proxies are not a sidecar's business.
			DialContext: (&net.Dialer{
				Timeout:   2 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			ForceAttemptHTTP2: true,
			HTTP2: &http.HTTP2Config{
				SendPingTimeout: h2SendPingTimeout,
				PingTimeout:     h2PingTimeout,
				// A peer that stops reading must not block a write forever.
				WriteByteTimeout: 5 * time.Second,
			},
			// A cold API server start sends a burst of concurrent Decrypts; keep
			// enough idle connections that the burst does not churn TCP+TLS.
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   128,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
			TLSClientConfig:       tlsCfg,
		}
	}
	hc := &http.Client{
		// Vault's client follows its own redirects (standby → active).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	files := tlsFiles{caFile: cfg.CAFile, certFile: cfg.ClientCert, keyFile: cfg.ClientKey, serverName: cfg.ServerName}
	if len(files.paths()) == 0 {
		tlsCfg, err := files.load()
		if err != nil {
			return nil, nil, fmt.Errorf("configure TLS: %w", err)
		}
		hc.Transport = build(tlsCfg)
		return hc, nil, nil
	}
	// cert-manager and Secret volume updates replace these files while
	// the plugin runs; a CA or certificate read once would fail every call
	// after the old one expires.
	rt, err := newReloadingTransport(files, build)
	if err != nil {
		return nil, nil, fmt.Errorf("configure TLS: %w", err)
	}
	hc.Transport = rt
	return hc, rt, nil
}

func newAPIClient(addr string, hc *http.Client, namespace string) (*api.Client, error) {
	c, err := NewAPIClient(&api.Config{
		Address:    addr,
		HttpClient: hc,
		// Failover and retry are ours: the API server gives each call 3 s,
		// which Vault's own backoff (1–1.5 s per retry) would mostly spend
		// waiting on a node that is down.
		MaxRetries: 0,
		// No client timeout: with one, Logical().*Raw* cancel their context
		// on return, before the caller reads the body ("context canceled").
		// Every call carries a deadline instead (see do).
		Timeout: 0,
	})
	if err != nil {
		return nil, err
	}
	if namespace != "" {
		c.SetNamespace(namespace)
	}
	return c, nil
}

// NewAPIClient builds a vault/api client from cfg alone: no VAULT_*
// variable of the process reaches it (token, namespace, headers, response
// wrapping), and none, malformed or not, makes building it fail. Both the
// sidecar and kmsctl's operator client build theirs with it.
func NewAPIClient(cfg *api.Config) (*api.Client, error) {
	var c *api.Client
	err := withoutVaultEnv(func() (err error) {
		c, err = api.NewClient(cfg)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Every request would otherwise ask for response wrapping when
	// VAULT_WRAP_TTL is set, read at request time.
	c.SetWrappingLookupFunc(func(string, string) string { return "" })
	return c, nil
}

// envMu serialises withoutVaultEnv, which changes the process environment.
var envMu sync.Mutex

// withoutVaultEnv runs f with every VAULT_* variable hidden from the process
// environment, then puts them back. api.NewClient reads them through
// api.DefaultConfig whatever config it is given (VAULT_TOKEN,
// VAULT_NAMESPACE and VAULT_HEADERS land in the client; a malformed
// VAULT_HEADERS, VAULT_SKIP_VERIFY, VAULT_RATE_LIMIT, VAULT_MAX_RETRIES,
// VAULT_CLIENT_TIMEOUT or an unreadable VAULT_CACERT fails it, checked on
// vault/api v1.23.0), and no option turns that off.
func withoutVaultEnv(f func() error) error {
	envMu.Lock()
	defer envMu.Unlock()
	hidden := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "VAULT_") {
			hidden[k] = v
			_ = os.Unsetenv(k)
		}
	}
	defer func() {
		for k, v := range hidden {
			_ = os.Setenv(k, v)
		}
	}()
	return f()
}

// SetToken makes every later call use token and returns the token's
// generation, which numbers the tokens installed so far. A 403 on a call
// made with an older generation is cured by retrying, not by a login.
func (c *Client) SetToken(token string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		n.transit.SetToken(token)
		n.auth.SetToken(token)
	}
	return c.tokenGen.Add(1)
}

// SetReauth registers what is asked for a new token when Vault answers a
// call that needs one with 403 (token revoked or expired early).
func (c *Client) SetReauth(r Reauthenticator) {
	c.mu.Lock()
	c.reauth = r
	c.mu.Unlock()
}

// Address is the node the client currently uses.
func (c *Client) Address() string {
	return c.nodes[int(c.current.Load())%len(c.nodes)].addr
}

// do runs call against the nodes as policy says (see policy for the
// rules): each attempt bounded by its share of the caller's deadline, on to
// the next node when one does not answer or cannot serve, and round after
// round with backoff while the deadline leaves time, so a call rides out a
// hung node or a Vault failover instead of failing.
func (c *Client) do(ctx context.Context, op string, call func(ctx context.Context, n node) error) error {
	deadline, bounded := ctx.Deadline()
	if !bounded {
		// A hung Vault must not hold a call, and its goroutine, forever.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxCallDuration)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}
	// A batch call carries no deadline of its own, but its callers have
	// theirs (3 s for the API server's): share out their time, not 30 s.
	callersDeadline := func() time.Time {
		if d, ok := batch.CallersDeadline(ctx); !bounded && ok && d.Before(deadline) {
			return d
		}
		return deadline
	}
	start := time.Now()
	nodes := len(c.nodes)
	var err error
	for round := 0; ; round++ {
		// Each round starts at the current node: one demoted meanwhile,
		// by this call or another, comes last.
		first := int(c.current.Load())
		for i := 0; i < nodes; i++ {
			idx := (first + i) % nodes
			left := time.Until(callersDeadline())
			if left <= 0 {
				// The callers are gone (a batch call's context ends a
				// moment after its last caller's deadline).
				if err == nil {
					err = wrap(op, c.nodes[idx].addr, context.DeadlineExceeded)
				}
				c.report(op, start, err)
				return err
			}
			timeout := c.policy.attemptTimeout(left, nodes-i, round)
			if err = c.attempt(ctx, op, c.nodes[idx], timeout, call); err == nil {
				// Later calls start here; a no-op when idx == first, or
				// when another call has moved current meanwhile.
				c.current.CompareAndSwap(int32(first), int32(idx))
				c.report(op, start, nil)
				return nil
			}
			// A node is judged only on time it was given: an attempt that
			// ran into the callers' deadline says nothing about it.
			callersDone := ctx.Err() != nil || !time.Now().Before(callersDeadline())
			switch c.policy.judge(err, callersDone) {
			case verdictReturn:
				c.report(op, start, err)
				return err
			case verdictNodeDown:
				if next := (idx + 1) % nodes; c.current.CompareAndSwap(int32(idx), int32(next)) {
					c.noteDemoted(idx, next, err)
				}
			}
		}
		wait, again := c.policy.nextRound(round, time.Until(callersDeadline()))
		if !again {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	c.report(op, start, err)
	return err
}

// demotedLogEvery bounds how often one node's demotion is logged: while
// every node is down, each call demotes each node.
const demotedLogEvery = time.Minute

// noteDemoted logs that calls moved from node idx to node next because idx
// did not answer: once a failover succeeds no call fails, and this line is
// what tells an operator a node hangs.
func (c *Client) noteDemoted(idx, next int, err error) {
	if idx == next {
		return // one node: nowhere to move
	}
	now := time.Now().UnixNano()
	last := c.demotedAt[idx].Load()
	if now-last < int64(demotedLogEvery) || !c.demotedAt[idx].CompareAndSwap(last, now) {
		return
	}
	klog.InfoS("Vault node did not answer: calls now start at the next one", "node", c.nodes[idx].addr, "next", c.nodes[next].addr, "err", err)
}

// attempt runs call once against n within timeout.
func (c *Client) attempt(ctx context.Context, op string, n node, timeout time.Duration, call func(ctx context.Context, n node) error) error {
	attemptCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := call(attemptCtx, n)
	if err == nil {
		return nil
	}
	if ctx.Err() == nil && attemptCtx.Err() != nil {
		// Our share ran out, not the caller's time: say so, since the
		// transport's "context deadline exceeded" reads as the caller's.
		err = fmt.Errorf("no answer within %s: %w", timeout.Round(time.Millisecond), err)
	}
	return wrap(op, n.addr, err)
}

func (c *Client) report(op string, start time.Time, err error) {
	if c.observe != nil {
		c.observe(op, time.Since(start), err)
	}
}

// doAuthed is do for calls that need the token: a 403 triggers one re-login
// and one retry, so a token that expired early never fails a request.
func (c *Client) doAuthed(ctx context.Context, op string, call func(ctx context.Context, n node) error) error {
	return c.doAuthedExplained(ctx, op, call, nil)
}

// doAuthedExplained is doAuthed that first asks explain (if set) whether a
// 403 has a cause other than the token; an error from explain is returned
// instead of logging in again.
func (c *Client) doAuthedExplained(ctx context.Context, op string, call func(ctx context.Context, n node) error, explain func(ctx context.Context, denied error) error) error {
	gen := c.tokenGen.Load()
	err := c.do(ctx, op, call)
	if !IsPermissionDenied(err) {
		return err
	}
	if explain != nil {
		if xerr := explain(ctx, err); xerr != nil {
			return xerr
		}
	}
	c.mu.Lock()
	reauth := c.reauth
	c.mu.Unlock()
	if reauth == nil {
		return err
	}
	if rerr := reauth.Reauth(ctx, gen); rerr != nil {
		return &ReauthError{Call: err, Login: rerr}
	}
	return c.do(ctx, op, call)
}

// ReauthError is a call Vault refused with 403 whose token could not be
// replaced. The login's reason comes first in its text: it is the one to
// act on, and Status truncates long messages.
type ReauthError struct {
	Call  error // the refused call
	Login error // why no new token
}

func (e *ReauthError) Error() string {
	return fmt.Sprintf("%v (after %v)", e.Login, e.Call)
}

// Unwrap keeps the call's *Error reachable (IsPermissionDenied and friends).
func (e *ReauthError) Unwrap() []error { return []error{e.Call, e.Login} }

// Error is a failed Vault call.
type Error struct {
	Op     string   // what the plugin was doing, e.g. "transit decrypt"
	Addr   string   // the Vault node
	Status int      // HTTP status, 0 if Vault did not answer
	Errors []string // Vault's messages
	Err    error    // transport error when Status is 0
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("%s at %s: %v", e.Op, e.Addr, e.Err)
	}
	// Vault's messages can span lines ("1 error occurred:\n\t* ..."); a
	// log line and a healthz string must not.
	msg := strings.Join(strings.Fields(strings.Join(e.Errors, "; ")), " ")
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%s at %s: Vault answered %d: %s", e.Op, e.Addr, e.Status, msg)
}

func (e *Error) Unwrap() error { return e.Err }

func wrap(op, addr string, err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return &Error{Op: op, Addr: addr, Status: re.StatusCode, Errors: re.Errors}
	}
	var ve *Error
	if errors.As(err, &ve) {
		return err
	}
	return &Error{Op: op, Addr: addr, Err: err}
}

// IsPermissionDenied reports whether Vault refused the token or policy.
func IsPermissionDenied(err error) bool {
	var ve *Error
	return errors.As(err, &ve) && ve.Status == http.StatusForbidden
}

// IsBadRequest reports whether Vault rejected the request's content (for
// transit decrypt: a malformed or tampered ciphertext, or a disallowed key
// version).
func IsBadRequest(err error) bool {
	var ve *Error
	return errors.As(err, &ve) && ve.Status == http.StatusBadRequest
}

// IsNotFound reports whether Vault answered 404 (for transit: no such key).
func IsNotFound(err error) bool {
	var ve *Error
	return errors.As(err, &ve) && ve.Status == http.StatusNotFound
}
