package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// PluginConfig is how one plugin process is started. Fields map to the
// plugin's flags.
type PluginConfig struct {
	VaultAddrs   []string // -vault-address, joined with commas
	TransitMount string   // -transit-mount; "transit" if empty
	TransitKey   string   // -transit-key
	RoleID       string   // -approle-role-id
	SecretIDPath string   // -approle-secret-id-path
	TokenPath    string   // -vault-token-path, instead of AppRole
	CAFile       string   // -tls-ca-file
	// StatusRefresh is -status-refresh-interval; 2s if zero, so tests see
	// Vault's state quickly.
	StatusRefresh time.Duration
	LogLevel      string // -log-level; "debug" if empty
}

func (c PluginConfig) args(socket string, metricsPort int) []string {
	mount := c.TransitMount
	if mount == "" {
		mount = "transit"
	}
	refresh := c.StatusRefresh
	if refresh == 0 {
		refresh = 2 * time.Second
	}
	level := c.LogLevel
	if level == "" {
		level = "debug"
	}
	args := []string{
		"-listen-address=unix://" + socket,
		"-vault-address=" + strings.Join(c.VaultAddrs, ","),
		"-transit-mount=" + mount,
		"-transit-key=" + c.TransitKey,
		"-metrics-port=" + strconv.Itoa(metricsPort),
		"-status-refresh-interval=" + refresh.String(),
		"-log-level=" + level,
	}
	if c.TokenPath != "" {
		args = append(args, "-vault-token-path="+c.TokenPath)
	} else {
		args = append(args, "-approle-role-id="+c.RoleID, "-approle-secret-id-path="+c.SecretIDPath)
	}
	if c.CAFile != "" {
		args = append(args, "-tls-ca-file="+c.CAFile)
	}
	return args
}

// Plugin is one vault-kms-plugin process serving a unix socket.
type Plugin struct {
	Name        string
	Socket      string // absolute path of the unix socket
	MetricsPort int
	Dir         string // the plugin's temporary directory (secret-id file, log)
	Config      PluginConfig
	Proc        *Process

	t       testing.TB
	bin     string
	secrets []string
}

// NewPlugin prepares a plugin without starting it. Its socket lives in a
// short directory under os.TempDir: unix socket paths are limited to about
// 100 bytes, and test temp dirs carry the test's name.
func NewPlugin(t testing.TB, name string, cfg PluginConfig) *Plugin {
	t.Helper()
	bin := pluginBinary.find(t)
	sockDir, err := os.MkdirTemp("", "kms-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	p := &Plugin{
		Name:        name,
		Socket:      filepath.Join(sockDir, "kms.sock"),
		MetricsPort: vaulttest.FreePort(t),
		Dir:         t.TempDir(),
		Config:      cfg,
		t:           t,
		bin:         bin,
	}
	// Registered before the process so that it runs after the process
	// stopped (cleanups run last-in first-out) and sees the whole log.
	t.Cleanup(p.checkNoSecretsLogged)
	p.Proc = newProcess(t, name, p.Dir, bin, nil, nil)
	return p
}

// NeverLogs registers a credential (a secret ID, a token) the plugin must
// never write to its log; the test fails at the end if it did.
func (p *Plugin) NeverLogs(secret string) {
	p.secrets = append(p.secrets, secret)
}

func (p *Plugin) checkNoSecretsLogged() {
	log := p.Proc.Log()
	for _, s := range p.secrets {
		if s != "" && strings.Contains(log, s) {
			p.t.Errorf("%s logged a credential (%d bytes starting %q…): secrets must never appear in logs", p.Name, len(s), s[:min(4, len(s))])
		}
	}
}

// StartPlugin prepares and starts a plugin, and waits until its socket
// serves (not until it is healthy: a misconfigured plugin serves too, and
// says why in Status).
func StartPlugin(t testing.TB, name string, cfg PluginConfig) *Plugin {
	t.Helper()
	p := NewPlugin(t, name, cfg)
	p.Start()
	return p
}

// Endpoint is the socket as the EncryptionConfiguration names it.
func (p *Plugin) Endpoint() string { return "unix://" + p.Socket }

// Start starts the plugin with its current Config and waits until the
// socket and metrics port answer.
func (p *Plugin) Start() {
	p.t.Helper()
	p.Proc.args = p.Config.args(p.Socket, p.MetricsPort)
	p.Proc.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := p.get("/livez"); err == nil {
			if fi, err := os.Stat(p.Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
				return
			}
		}
		select {
		case <-p.Proc.Exited():
			p.t.Fatalf("%s exited while starting:\n%s", p.Name, p.Proc.LogTail(20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not serve %s within 30s:\n%s", p.Name, p.Socket, p.Proc.LogTail(20))
		}
	}
}

// Stop stops the plugin gracefully (SIGTERM).
func (p *Plugin) Stop() { p.Proc.Stop() }

// Kill kills the plugin with SIGKILL, leaving its socket file behind.
func (p *Plugin) Kill() { p.Proc.Kill() }

// Restart stops the plugin and starts it with cfg.
func (p *Plugin) Restart(cfg PluginConfig) {
	p.t.Helper()
	p.Stop()
	p.Config = cfg
	p.Start()
}

// Ready returns nil when the plugin's /readyz says the KMS is usable, else
// what it says instead.
func (p *Plugin) Ready() error {
	_, err := p.get("/readyz")
	return err
}

// WaitReady waits until /readyz answers 200 or fails the test.
func (p *Plugin) WaitReady(timeout time.Duration) {
	p.t.Helper()
	var err error
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err = p.Ready(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("%s not ready after %s: %v\n%s", p.Name, timeout, err, p.Proc.LogTail(20))
}

// Metrics returns the plugin's /metrics text.
func (p *Plugin) Metrics() (string, error) { return p.get("/metrics") }

func (p *Plugin) get(path string) (string, error) {
	body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d%s", p.MetricsPort, path))
	if err != nil {
		return body, fmt.Errorf("%s: %w", p.Name, err)
	}
	return body, nil
}

// KMS returns a KMSv2 client on the plugin's socket: the API server's own
// gRPC client (k8s.io/apiserver), with the API server's default 3s timeout.
func (p *Plugin) KMS(ctx context.Context) kmsservice.Service {
	p.t.Helper()
	return KMSAt(ctx, p.t, p.Endpoint())
}

// KMSAt returns the API server's own KMSv2 gRPC client on endpoint
// (unix:///path), with the API server's default 3s timeout.
func KMSAt(ctx context.Context, t testing.TB, endpoint string) kmsservice.Service {
	t.Helper()
	svc, err := kmsv2.NewGRPCService(ctx, endpoint, endpoint, 3*time.Second)
	if err != nil {
		t.Fatalf("KMSv2 client for %s: %v", endpoint, err)
	}
	return svc
}

// WaitKMSStatusOK waits until a KMSv2 plugin on endpoint answers Status
// with healthz "ok" through the API server's client, for a plugin the
// harness does not run itself (a kubelet's static pod). It fails the test
// with the tail of the log of whatever runs it.
func WaitKMSStatusOK(t testing.TB, endpoint string, timeout time.Duration, runner *Process) {
	t.Helper()
	ctx := context.Background()
	// One client, made once the socket exists: the API server's client logs
	// an error for every dial of a missing socket.
	var kms kmsservice.Service
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if _, err := os.Stat(strings.TrimPrefix(endpoint, "unix://")); err == nil {
			if kms == nil {
				kms = KMSAt(ctx, t, endpoint)
			}
			callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
			st, err := kms.Status(callCtx)
			cancel()
			if err == nil && st.Healthz == "ok" {
				return
			}
			last = fmt.Sprintf("status %+v, error %v", st, err)
		} else {
			last = err.Error()
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("no KMSv2 Status ok on %s within %s (last: %s)\n%s", endpoint, timeout, last, runner.LogTail(40))
}
