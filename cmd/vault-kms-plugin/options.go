package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vaultkms/vault-kms-plugin/plugin"
)

// options are the sidecar's flags. Their names match what OpenShift's KMS
// plugin lifecycle passes to a Vault KMS sidecar, so this one is a drop-in.
// No flag carries a secret: the secret ID and token are read from files.
type options struct {
	listenAddress         string
	vaultAddress          string
	vaultNamespace        string
	vaultAuthNamespace    string
	transitMount          string
	transitKey            string
	vaultKeyPath          string
	approleMount          string
	approleRoleID         string
	approleRoleIDPath     string
	approleSecretIDPath   string
	vaultTokenPath        string
	tlsCAFile             string
	tlsSNI                string
	tlsClientCert         string
	tlsClientKey          string
	metricsPort           int
	statusRefreshInterval time.Duration
	keyIDModeName         string
	logLevel              string
	socketGroup           string
	batchMaxSize          int
	batchMaxInFlight      int
	batchWindow           time.Duration
	insecureAllowHTTP     bool

	// The one-shot preparation mode (see server.PrepareSocketDir).
	prepareSocketDir      string
	prepareSocketDirOwner string

	// set holds the names of the flags given on the command line, so an
	// explicit flag can be told from its default.
	set map[string]bool

	// Set by validate.
	socketPath string
	addresses  []string
	verbosity  int
	keyIDMode  plugin.KeyIDMode
	gid        int
	prepareUID int
	prepareGID int
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.listenAddress, "listen-address", "", "unix:///absolute/path.sock to serve the KMSv2 API on (required)")
	fs.StringVar(&o.vaultAddress, "vault-address", "", "Vault address, or a comma-separated list of Vault nodes to fail over across (required)")
	fs.StringVar(&o.vaultNamespace, "vault-namespace", "", "Vault Enterprise namespace of the transit mount")
	fs.StringVar(&o.vaultAuthNamespace, "vault-auth-namespace", "", "Vault Enterprise namespace of the auth mount (default: -vault-namespace)")
	fs.StringVar(&o.transitMount, "transit-mount", "transit", "path of the transit secrets engine")
	fs.StringVar(&o.transitKey, "transit-key", "", "name of the transit key (required unless -vault-key-path)")
	fs.StringVar(&o.vaultKeyPath, "vault-key-path", "", "transit key as <mount>/keys/<name>, as OpenShift passes it; instead of -transit-mount and -transit-key")
	fs.StringVar(&o.approleMount, "approle-mount", "approle", "path of the AppRole auth method")
	fs.StringVar(&o.approleRoleID, "approle-role-id", "", "AppRole role ID (not a secret)")
	fs.StringVar(&o.approleRoleIDPath, "approle-role-id-path", "", "file holding the AppRole role ID, instead of -approle-role-id")
	fs.StringVar(&o.approleSecretIDPath, "approle-secret-id-path", "", "file holding the AppRole secret ID; re-read when it changes")
	fs.StringVar(&o.vaultTokenPath, "vault-token-path", "", "file holding a Vault token, instead of AppRole (development)")
	fs.StringVar(&o.tlsCAFile, "tls-ca-file", "", "PEM CA bundle to verify Vault's certificate (default: system roots)")
	fs.StringVar(&o.tlsSNI, "tls-sni", "", "server name to send and verify in Vault's certificate")
	fs.StringVar(&o.tlsClientCert, "tls-client-cert", "", "PEM client certificate for Vault (with -tls-client-key)")
	fs.StringVar(&o.tlsClientKey, "tls-client-key", "", "PEM client key for Vault (with -tls-client-cert)")
	fs.IntVar(&o.metricsPort, "metrics-port", 0, "port on 127.0.0.1 for /metrics, /healthz, /livez and /readyz (0: off)")
	fs.DurationVar(&o.statusRefreshInterval, "status-refresh-interval", 20*time.Second, "how often to read the transit key's metadata for Status")
	fs.StringVar(&o.keyIDModeName, "key-id-mode", string(plugin.KeyIDMetadata), "what key_ids are derived from: metadata (each key version's creation time; HashiCorp's minimum policy suffices) or hmac (an HMAC under the version, unique even for a key re-created within a second; needs \"update\" on <mount>/hmac/<key> too). Every node must use the same")
	fs.StringVar(&o.logLevel, "log-level", "info", "info, debug, debug-extended, warn, error, or a klog verbosity 0-10")
	fs.IntVar(&o.batchMaxSize, "batch-max-size", 128, "most Encrypts or Decrypts coalesced into one transit batch call (1: no batching)")
	fs.IntVar(&o.batchMaxInFlight, "batch-max-in-flight", 8, "most transit encrypt or decrypt calls to Vault at once; more requests queue and leave as one batch")
	fs.DurationVar(&o.batchWindow, "batch-window", 0, "how long a batch formed under load waits for more calls (0: send what has queued; a call alone never waits)")
	fs.StringVar(&o.prepareSocketDir, "prepare-socket-dir", "", "prepare mode: create this socket directory 0750 for -prepare-socket-dir-owner, then exit (run as root with CAP_CHOWN in an init container)")
	fs.StringVar(&o.prepareSocketDirOwner, "prepare-socket-dir-owner", "", "prepare mode: UID:GID that will own -prepare-socket-dir (the plugin's user)")
	fs.BoolVar(&o.insecureAllowHTTP, "insecure-allow-http", false, "allow http:// to a Vault that is not on loopback: the token, secret ID and DEK seeds then cross the network in clear text")
	fs.StringVar(&o.socketGroup, "socket-group", "", "group (name or GID) allowed to use the socket; makes it 0660 instead of 0600")
}

// validate checks the flags and fills the derived fields. Each error names
// the flag and says what to do, on one line.
func (o *options) validate(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q: all settings are flags", args[0])
	}
	if o.preparing() {
		return o.validatePrepare()
	}
	var err error
	if o.socketPath, err = socketPath(o.listenAddress); err != nil {
		return err
	}
	if o.addresses, err = vaultAddresses(o.vaultAddress); err != nil {
		return err
	}
	if err := requireTLS(o.addresses, o.insecureAllowHTTP); err != nil {
		return err
	}
	if err := o.resolveKeyPath(); err != nil {
		return err
	}
	if o.transitKey == "" {
		return errors.New("-transit-key (or -vault-key-path=<mount>/keys/<name>) is required")
	}
	if strings.Trim(o.transitMount, "/") == "" {
		return errors.New("-transit-mount must not be empty")
	}
	if len(o.transitMount)+len(o.transitKey) > 512 {
		return errors.New("-transit-mount and -transit-key together must be at most 512 bytes (they appear in every key_id)")
	}
	if err := o.validateAuth(); err != nil {
		return err
	}
	if (o.tlsClientCert == "") != (o.tlsClientKey == "") {
		return errors.New("-tls-client-cert and -tls-client-key must be given together")
	}
	for _, f := range []struct{ flag, path string }{
		{"-tls-ca-file", o.tlsCAFile}, {"-tls-client-cert", o.tlsClientCert}, {"-tls-client-key", o.tlsClientKey},
	} {
		if err := readable(f.flag, f.path); err != nil {
			return err
		}
	}
	if o.metricsPort < 0 || o.metricsPort > 65535 {
		return fmt.Errorf("-metrics-port must be between 0 (off) and 65535, not %d", o.metricsPort)
	}
	if o.statusRefreshInterval < 100*time.Millisecond {
		return fmt.Errorf("-status-refresh-interval must be at least 100ms, not %s", o.statusRefreshInterval)
	}
	if o.batchMaxSize < 1 || o.batchMaxSize > 1024 {
		return fmt.Errorf("-batch-max-size must be between 1 (no batching) and 1024, not %d", o.batchMaxSize)
	}
	if o.batchMaxInFlight < 1 {
		return fmt.Errorf("-batch-max-in-flight must be at least 1, not %d", o.batchMaxInFlight)
	}
	if o.batchWindow < 0 || o.batchWindow > 100*time.Millisecond {
		return fmt.Errorf("-batch-window must be between 0 and 100ms, not %s", o.batchWindow)
	}
	if o.keyIDMode, err = plugin.ParseKeyIDMode(o.keyIDModeName); err != nil {
		return fmt.Errorf("-key-id-mode must be %s or %s, not %q", plugin.KeyIDMetadata, plugin.KeyIDHMAC, o.keyIDModeName)
	}
	if o.verbosity, err = verbosity(o.logLevel); err != nil {
		return err
	}
	if o.gid, err = groupID(o.socketGroup); err != nil {
		return err
	}
	return nil
}

// resolveKeyPath splits -vault-key-path into the transit mount and key.
// The mount may be nested (team/transit/keys/k), so the split is at the last
// "/keys/". Giving it beside -transit-mount or -transit-key is refused even
// when they agree: two sources for one setting drift apart.
func (o *options) resolveKeyPath() error {
	if o.vaultKeyPath == "" {
		return nil
	}
	if o.set["transit-mount"] || o.set["transit-key"] {
		return errors.New("-vault-key-path names both the mount and the key: drop -transit-mount and -transit-key")
	}
	p := strings.Trim(o.vaultKeyPath, "/")
	i := strings.LastIndex(p, "/keys/")
	if i <= 0 || i+len("/keys/") == len(p) || strings.Contains(p[i+len("/keys/"):], "/") {
		return fmt.Errorf("-vault-key-path must be <mount>/keys/<name>, for example transit/keys/kubernetes, not %q", o.vaultKeyPath)
	}
	o.transitMount, o.transitKey = p[:i], p[i+len("/keys/"):]
	return nil
}

func (o *options) preparing() bool {
	return o.prepareSocketDir != "" || o.prepareSocketDirOwner != ""
}

// validatePrepare checks the preparation mode's flags. Nothing else may be
// given: a serving flag in an init container's arguments is a mistake in
// the manifest that should be seen, not ignored.
func (o *options) validatePrepare() error {
	for name := range o.set {
		if name != "prepare-socket-dir" && name != "prepare-socket-dir-owner" {
			return fmt.Errorf("-%s cannot be combined with -prepare-socket-dir, which prepares the socket directory and exits", name)
		}
	}
	if o.prepareSocketDir == "" || o.prepareSocketDirOwner == "" {
		return errors.New("-prepare-socket-dir and -prepare-socket-dir-owner must be given together")
	}
	if !filepath.IsAbs(o.prepareSocketDir) {
		return fmt.Errorf("-prepare-socket-dir must be an absolute path, not %q", o.prepareSocketDir)
	}
	uid, gid, ok := strings.Cut(o.prepareSocketDirOwner, ":")
	var err1, err2 error
	o.prepareUID, err1 = strconv.Atoi(uid)
	o.prepareGID, err2 = strconv.Atoi(gid)
	if !ok || err1 != nil || err2 != nil || o.prepareUID <= 0 || o.prepareGID < 0 {
		return fmt.Errorf("-prepare-socket-dir-owner must be UID:GID with a non-root UID, for example 65532:65532, not %q", o.prepareSocketDirOwner)
	}
	return nil
}

func (o *options) validateAuth() error {
	approle := o.approleRoleID != "" || o.approleRoleIDPath != "" || o.approleSecretIDPath != ""
	switch {
	case approle && o.vaultTokenPath != "":
		return errors.New("use either AppRole (-approle-*) or -vault-token-path, not both")
	case o.vaultTokenPath != "":
		return readable("-vault-token-path", o.vaultTokenPath)
	case !approle:
		return errors.New("no Vault credentials: set -approle-role-id and -approle-secret-id-path (or -vault-token-path for development)")
	case o.approleRoleID != "" && o.approleRoleIDPath != "":
		return errors.New("use either -approle-role-id or -approle-role-id-path, not both")
	case o.approleRoleID == "" && o.approleRoleIDPath == "":
		return errors.New("-approle-secret-id-path needs -approle-role-id or -approle-role-id-path")
	case o.approleSecretIDPath == "":
		return errors.New("-approle-secret-id-path is required with AppRole: the secret ID is read from a file, never from a flag")
	case strings.Trim(o.approleMount, "/") == "":
		return errors.New("-approle-mount must not be empty")
	}
	if err := readable("-approle-role-id-path", o.approleRoleIDPath); err != nil {
		return err
	}
	return readable("-approle-secret-id-path", o.approleSecretIDPath)
}

func socketPath(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("-listen-address is required, for example -listen-address=unix:///var/run/kmsplugin/kms.sock")
	}
	p, ok := strings.CutPrefix(addr, "unix://")
	if !ok || !filepath.IsAbs(p) || strings.HasSuffix(p, "/") {
		return "", fmt.Errorf("-listen-address must be unix:///absolute/path.sock, not %q", addr)
	}
	return filepath.Clean(p), nil
}

func vaultAddresses(list string) ([]string, error) {
	if list == "" {
		return nil, errors.New("-vault-address is required, for example -vault-address=https://vault.example.com:8200")
	}
	var out []string
	seen := map[string]bool{}
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSuffix(strings.TrimSpace(a), "/")
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return nil, fmt.Errorf("-vault-address: %q is not an http(s)://host:port address", a)
		}
		if seen[a] {
			return nil, fmt.Errorf("-vault-address lists %s twice", a)
		}
		seen[a] = true
		out = append(out, a)
	}
	return out, nil
}

// requireTLS refuses plain http to anything but loopback: the plugin sends
// its token, secret ID and the API server's DEK seeds to Vault. Loopback
// stays allowed without a flag, for a dev Vault on the node and for tests.
func requireTLS(addresses []string, allowHTTP bool) error {
	if allowHTTP {
		return nil
	}
	for _, a := range addresses {
		u, _ := url.Parse(a) // vaultAddresses parsed it already
		if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			return fmt.Errorf("-vault-address: %s is plain http to a host that is not loopback, which sends the Vault token and DEK seeds in clear text: use https://, or pass -insecure-allow-http to accept that", a)
		}
	}
	return nil
}

// isLoopback reports whether host is localhost, 127.0.0.0/8 or ::1. Names
// other than localhost are not resolved: what they resolve to can change.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func readable(flagName, path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %v", flagName, err)
	}
	f.Close()
	return nil
}

func verbosity(level string) (int, error) {
	switch level {
	case "error", "warn", "info":
		return 0, nil
	case "debug":
		return 4, nil
	case "debug-extended":
		return 6, nil
	}
	if v, err := strconv.Atoi(level); err == nil && v >= 0 && v <= 10 {
		return v, nil
	}
	return 0, fmt.Errorf("-log-level must be info, debug, debug-extended, warn, error or a number 0-10, not %q", level)
}

func groupID(group string) (int, error) {
	if group == "" {
		return -1, nil
	}
	if gid, err := strconv.Atoi(group); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("-socket-group: no group %q", group)
	}
	return strconv.Atoi(g.Gid)
}
