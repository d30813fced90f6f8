// Package transit is kmsctl's Vault operator client for one transit key: it
// reads the key's versions and sets min_decryption_version. Nothing else:
// it cannot rotate, delete, trim, export or back up the key.
//
// Its settings are its Config and nothing else. api.NewClient reads VAULT_*
// variables (VAULT_SKIP_VERIFY, VAULT_CACERT, VAULT_ADDR, VAULT_NAMESPACE,
// VAULT_HEADERS, VAULT_TOKEN, VAULT_WRAP_TTL...); New builds the client as
// the sidecar does (vault.NewAPIClient), so none of them reaches it: TLS
// verification stays on, the address, namespace and token are the Config's.
package transit

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

// Config is how to reach Vault and which key to operate on.
type Config struct {
	// Address is Vault's URL, https://host[:port] (http only for loopback).
	Address string
	// Namespace is the Vault Enterprise namespace of the transit mount.
	Namespace string
	// CAFile is a PEM CA bundle that verifies Vault (default: system roots).
	CAFile string
	// ServerName is the TLS name to verify instead of Address's host.
	ServerName string
	// KeyPath is <mount>/keys/<name>; the mount may be nested.
	KeyPath string
	// Token is the operator's Vault token. It never appears in errors.
	Token string
	// Timeout bounds each request (default 30s).
	Timeout time.Duration
}

// Key is what Vault says about a transit key (GET <mount>/keys/<name>).
type Key struct {
	// Name is "<mount>/<name>", as the plugin's key_ids name the key.
	Name string `json:"name"`
	// Latest is latest_version.
	Latest int `json:"latestVersion"`
	// MinDecryption is min_decryption_version.
	MinDecryption int `json:"minDecryptionVersion"`
	// MinEncryption is min_encryption_version (0: latest).
	MinEncryption int `json:"minEncryptionVersion"`
	// MinAvailable is min_available_version: versions below it were trimmed
	// and no longer exist (0: none trimmed).
	MinAvailable int `json:"minAvailableVersion"`
	// Versions are the versions Vault holds (the keys map), ascending.
	Versions []int `json:"versions"`
	// Created is each version's creation time in unix seconds, as the
	// plugin's default key_ids carry it (contract.MetadataKeyID).
	Created map[int]int64 `json:"created,omitempty"`
}

// Client operates on one transit key.
type Client struct {
	api     *api.Client
	addr    string
	mount   string
	name    string
	timeout time.Duration
}

// SplitKeyPath splits <mount>/keys/<name> at its last "/keys/".
func SplitKeyPath(p string) (mount, name string, err error) {
	i := strings.LastIndex(p, "/keys/")
	if i <= 0 || i+len("/keys/") == len(p) || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return "", "", fmt.Errorf("key path %q is not <mount>/keys/<name>", p)
	}
	return p[:i], p[i+len("/keys/"):], nil
}

// CheckAddress refuses what New would refuse about an address: not http(s),
// a path, or plain http to anything but a loopback address (the token would
// cross the network in clear).
func CheckAddress(addr string) error {
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q is not an http(s)://host[:port] URL", addr)
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%q: give only scheme, host and port", addr)
	}
	if u.Scheme == "http" {
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("%q: plain http is allowed only to a loopback address; the token would cross the network in clear", addr)
		}
	}
	return nil
}

// New returns a client for cfg's key. It makes no request.
func New(cfg Config) (*Client, error) {
	mount, name, err := SplitKeyPath(cfg.KeyPath)
	if err != nil {
		return nil, err
	}
	if err := CheckAddress(cfg.Address); err != nil {
		return nil, fmt.Errorf("vault address: %w", err)
	}
	if cfg.Token == "" {
		return nil, errors.New("no Vault token")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	hc := &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout: 10 * time.Second,
			ForceAttemptHTTP2:   true,
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
		},
		// api.Client follows Vault's redirects (standby → active) itself.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// An explicit Config: api.DefaultConfig would apply VAULT_ADDR,
	// VAULT_SKIP_VERIFY, VAULT_CACERT, VAULT_MAX_RETRIES and the like.
	apiCfg := &api.Config{
		Address:    cfg.Address,
		HttpClient: hc,
		MaxRetries: 2,
		Timeout:    cfg.Timeout,
	}
	if err := apiCfg.ConfigureTLS(&api.TLSConfig{CACert: cfg.CAFile, TLSServerName: cfg.ServerName}); err != nil {
		return nil, fmt.Errorf("vault TLS: %w", err)
	}
	c, err := vault.NewAPIClient(apiCfg)
	if err != nil {
		return nil, fmt.Errorf("build vault client: %w", err)
	}
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	c.SetToken(cfg.Token)
	return &Client{api: c, addr: cfg.Address, mount: mount, name: name, timeout: cfg.Timeout}, nil
}

// Name is "<mount>/<name>", as the plugin's key_ids name the key.
func (c *Client) Name() string { return c.mount + "/" + c.name }

// KeyPath is <mount>/keys/<name>.
func (c *Client) KeyPath() string { return c.mount + "/keys/" + c.name }

// ReadKey reads the key's versions (read on <mount>/keys/<name>).
func (c *Client) ReadKey(ctx context.Context) (Key, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	sec, err := c.api.Logical().ReadWithContext(ctx, c.KeyPath())
	if err != nil {
		return Key{}, c.wrap("read transit key "+c.KeyPath(), "read on "+c.KeyPath(), err)
	}
	if sec == nil || sec.Data == nil {
		return Key{}, fmt.Errorf("read transit key %s at %s: no such key", c.KeyPath(), c.addr)
	}
	k := Key{Name: c.Name()}
	for field, dst := range map[string]*int{
		"latest_version":         &k.Latest,
		"min_decryption_version": &k.MinDecryption,
		"min_encryption_version": &k.MinEncryption,
		"min_available_version":  &k.MinAvailable,
	} {
		v, err := intField(sec.Data[field])
		if err != nil {
			return Key{}, fmt.Errorf("read transit key %s at %s: %s: %w", c.KeyPath(), c.addr, field, err)
		}
		*dst = v
	}
	if keys, ok := sec.Data["keys"].(map[string]any); ok {
		for v := range keys {
			n, err := strconv.Atoi(v)
			if err != nil {
				return Key{}, fmt.Errorf("read transit key %s at %s: keys: version %q is not a number", c.KeyPath(), c.addr, v)
			}
			k.Versions = append(k.Versions, n)
			created, err := creationTime(keys[v])
			if err != nil {
				return Key{}, fmt.Errorf("read transit key %s at %s: keys: version %d: %w", c.KeyPath(), c.addr, n, err)
			}
			if k.Created == nil {
				k.Created = map[int]int64{}
			}
			k.Created[n] = created
		}
		slices.Sort(k.Versions)
	}
	return k, nil
}

// Rotate adds a new version to the key (update on <mount>/keys/<name>/rotate);
// the plugin encrypts with it from its next Status refresh on.
func (c *Client) Rotate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	path := c.KeyPath() + "/rotate"
	if _, err := c.api.Logical().WriteWithContext(ctx, path, nil); err != nil {
		return c.wrap("rotate "+c.KeyPath(), "update on "+path, err)
	}
	return nil
}

// MetadataKeyID is the key_id the plugin reports for version of k (as
// ReadKey returned it) in its default -key-id-mode=metadata; false when
// Vault gave no creation time for that version.
func (c *Client) MetadataKeyID(k Key, version int) (string, bool) {
	created, ok := k.Created[version]
	if !ok {
		return "", false
	}
	return contract.MetadataKeyID(c.mount, c.name, version, created), true
}

// SetMinDecryptionVersion sets min_decryption_version (update on
// <mount>/keys/<name>/config). Vault keeps every version; this only says
// which ones it agrees to decrypt with.
func (c *Client) SetMinDecryptionVersion(ctx context.Context, v int) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	path := c.KeyPath() + "/config"
	_, err := c.api.Logical().WriteWithContext(ctx, path, map[string]any{"min_decryption_version": v})
	if err != nil {
		return c.wrap(fmt.Sprintf("set min_decryption_version %d on %s", v, c.KeyPath()), "update on "+path, err)
	}
	return nil
}

// wrap makes one line of a Vault error: what was done, where, Vault's
// status and messages, and for 403 which policy grants it.
func (c *Client) wrap(what, capability string, err error) error {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s at %s: %s", what, c.addr, oneLine(err.Error()))
	}
	var msgs []string
	for _, e := range re.Errors {
		// Vault wraps errors as a multierror: "1 error occurred:\n\t* x".
		e = oneLine(vaultErrorList.ReplaceAllString(e, "; "))
		msgs = append(msgs, strings.TrimLeft(e, "; "))
	}
	msg := strings.Join(msgs, "; ")
	if msg == "" {
		msg = http.StatusText(re.StatusCode)
	}
	if re.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%s at %s: %s (403): the token needs %s, which the operator policy vault-operator-policy.hcl from `kmsctl render` grants (rotate, read and config on this key alone)", what, c.addr, msg, capability)
	}
	return fmt.Errorf("%s at %s: %s (%d)", what, c.addr, msg, re.StatusCode)
}

// vaultErrorList matches the header and bullets of a Vault multierror.
var vaultErrorList = regexp.MustCompile(`^\d+ errors? occurred:|\n\t\* `)

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// intField reads a number from a Vault response (json.Number).
func intField(v any) (int, error) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err
	case nil:
		return 0, nil
	default:
		return 0, fmt.Errorf("unexpected %T", v)
	}
}

// creationTime is contract.CreationTime of one entry of the "keys" map as
// the Vault API client decoded it (json.Number, or a map).
func creationTime(v any) (int64, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("unexpected creation record %T: %w", v, err)
	}
	return contract.CreationTime(raw)
}
