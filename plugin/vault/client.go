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
	// CAFile, ServerName, ClientCert and ClientKey configure TLS.
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
	current atomic.Int32
	observe func(op string, d time.Duration, err error)

	mu     sync.Mutex
	reauth func(ctx context.Context) error
}

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
	httpClient, err := newHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	authNS := cfg.AuthNamespace
	if authNS == "" {
		authNS = cfg.Namespace
	}
	c := &Client{observe: cfg.Observe}
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

func newHTTPClient(cfg Config) (*http.Client, error) {
	transport := &http.Transport{
		Proxy: nil, // Vault is reached directly; proxies are not a sidecar's business.
		DialContext: (&net.Dialer{
			Timeout:   2 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2: true,
		// A cold API server start sends a burst of concurrent Decrypts; keep
		// enough idle connections that the burst does not churn TCP+TLS.
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
	}
	hc := &http.Client{
		Transport: transport,
		// Vault's client follows its own redirects (standby → active).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	apiCfg := &api.Config{HttpClient: hc}
	if err := apiCfg.ConfigureTLS(&api.TLSConfig{
		CACert:        cfg.CAFile,
		ClientCert:    cfg.ClientCert,
		ClientKey:     cfg.ClientKey,
		TLSServerName: cfg.ServerName,
	}); err != nil {
		return nil, fmt.Errorf("configure TLS: %w", err)
	}
	return hc, nil
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

// SetToken makes every later call use token.
func (c *Client) SetToken(token string) {
	for _, n := range c.nodes {
		n.transit.SetToken(token)
		n.auth.SetToken(token)
	}
}

// SetReauth registers the function called once when Vault answers a transit
// call with 403 (token revoked or expired early); the call is then retried.
func (c *Client) SetReauth(f func(ctx context.Context) error) {
	c.mu.Lock()
	c.reauth = f
	c.mu.Unlock()
}

// Address is the node the client currently uses.
func (c *Client) Address() string {
	return c.nodes[int(c.current.Load())%len(c.nodes)].addr
}

// do runs call against the current node and, when that node is unreachable
// or answers with a server error, against each other node. When every node
// fails that way (a leader election, a restart) it tries them all again
// with backoff while the caller's deadline leaves time, so a call rides out
// a Vault failover instead of failing.
func (c *Client) do(ctx context.Context, op string, call func(ctx context.Context, n node) error) error {
	if _, ok := ctx.Deadline(); !ok {
		// A hung Vault must not hold a call, and its goroutine, forever.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxCallDuration)
		defer cancel()
	}
	start := time.Now()
	deadline, _ := ctx.Deadline()
	first := int(c.current.Load())
	var err error
	backoff := 50 * time.Millisecond
	for round := 0; ; round++ {
		for i := 0; i < len(c.nodes); i++ {
			idx := (first + i) % len(c.nodes)
			n := c.nodes[idx]
			if err = call(ctx, n); err == nil {
				if idx != first {
					c.current.CompareAndSwap(int32(first), int32(idx))
				}
				c.report(op, start, nil)
				return nil
			}
			err = wrap(op, n.addr, err)
			if ctx.Err() != nil || !retryOnOtherNode(err) {
				c.report(op, start, err)
				return err
			}
		}
		// Keep a margin so the caller still gets our answer in time.
		if time.Until(deadline) < backoff+retryMargin || round >= maxRetryRounds {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
	c.report(op, start, err)
	return err
}

// Retry budget when every node fails: enough rounds to outlast a raft
// election (about 2 s), bounded by the caller's deadline less retryMargin.
const (
	maxRetryRounds = 6
	retryMargin    = 300 * time.Millisecond
)

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
	if rerr := reauth(ctx); rerr != nil {
		return fmt.Errorf("%w (log in again: %v)", err, rerr)
	}
	return c.do(ctx, op, call)
}

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

func retryOnOtherNode(err error) bool {
	var ve *Error
	if !errors.As(err, &ve) {
		return false
	}
	// 0: no answer. 5xx: sealed, standby without an active node, or
	// overloaded; 429 is a standby/performance standby saying so.
	return ve.Status == 0 || ve.Status >= 500 || ve.Status == http.StatusTooManyRequests
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
