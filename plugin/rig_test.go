//go:build integration

package plugin_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// pluginBin is the real sidecar binary, built once for the package.
var pluginBin string

func TestMain(m *testing.M) {
	if sock := os.Getenv(stubSocketEnv); sock != "" {
		serveStub(sock) // the bench's floor: see bench_test.go
		return
	}
	code, err := func() (int, error) {
		if p := os.Getenv("PLUGIN_BIN"); p != "" {
			pluginBin = p
			return m.Run(), nil
		}
		dir, err := os.MkdirTemp("", "vault-kms-plugin-test-")
		if err != nil {
			return 1, err
		}
		defer os.RemoveAll(dir)
		pluginBin = filepath.Join(dir, "vault-kms-plugin")
		out, err := exec.Command("go", "build", "-o", pluginBin, "../cmd/vault-kms-plugin").CombinedOutput()
		if err != nil {
			return 1, fmt.Errorf("build plugin: %v\n%s", err, out)
		}
		return m.Run(), nil
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

const (
	mount      = "transit"
	key        = "kubernetes"
	policyName = "kms-plugin" // the rig's AppRole's policy
)

// rigOptions shape one test's Vault and plugin.
type rigOptions struct {
	persistent  bool          // Vault that can be stopped and started with its data
	tokenTTL    time.Duration // AppRole token_ttl (default 1h)
	tokenMaxTTL time.Duration // AppRole token_max_ttl (default 2h)
	refresh     time.Duration // -status-refresh-interval (default 500ms)
	addresses   func(vaultAddr string) string
	extraArgs   []string
	tls         bool   // Vault on TLS requiring a client certificate
	policy      string // the AppRole's policy (default vaulttest.Policy)
}

// rig is a real Vault with transit and AppRole, and the real plugin binary
// serving on a socket, reached through the API server's own KMSv2 client.
type rig struct {
	t            testing.TB
	vault        *vaulttest.Server
	role         vaulttest.AppRole
	secretID     string
	dir          string
	secretIDPath string
	sock         string
	metricsPort  int
	refresh      time.Duration
	args         []string
	plugin       *process
	client       kmsservice.Service
}

func newRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	if o.tokenTTL == 0 {
		o.tokenTTL, o.tokenMaxTTL = time.Hour, 2*time.Hour
	}
	if o.refresh == 0 {
		o.refresh = 500 * time.Millisecond
	}
	r := &rig{t: t, dir: t.TempDir(), refresh: o.refresh}
	var tlsArgs []string
	if o.tls {
		f := vaulttest.NewTLSFiles(t)
		r.vault = vaulttest.StartPersistentTLS(t, f)
		tlsArgs = []string{"-tls-ca-file=" + f.CAFile, "-tls-sni=" + f.ServerName,
			"-tls-client-cert=" + f.ClientCertFile, "-tls-client-key=" + f.ClientKey}
	} else if o.persistent {
		r.vault = vaulttest.StartPersistent(t)
	} else {
		r.vault = vaulttest.StartDev(t)
	}
	r.vault.EnableTransit(mount, key)
	if o.policy == "" {
		o.policy = vaulttest.Policy(mount, key)
	}
	r.role = r.vault.CreateAppRole("kms-plugin", policyName, o.policy, o.tokenTTL, o.tokenMaxTTL)
	r.secretID = r.vault.NewSecretID(r.role)
	r.secretIDPath = filepath.Join(r.dir, "secret-id")
	writeFileAtomic(t, r.secretIDPath, r.secretID)
	r.sock = filepath.Join(r.dir, "run", "kms.sock")
	r.metricsPort = vaulttest.FreePort(t)
	addr := r.vault.Addr
	if o.addresses != nil {
		addr = o.addresses(addr)
	}
	r.args = append([]string{
		"-listen-address=unix://" + r.sock,
		"-vault-address=" + addr,
		"-transit-mount=" + mount,
		"-transit-key=" + key,
		"-approle-role-id=" + r.role.RoleID,
		"-approle-secret-id-path=" + r.secretIDPath,
		"-metrics-port=" + strconv.Itoa(r.metricsPort),
		"-status-refresh-interval=" + o.refresh.String(),
		"-log-level=debug-extended",
	}, append(tlsArgs, o.extraArgs...)...)
	r.plugin = startProcess(t, pluginBin, r.args...)
	r.client = connect(t, r.sock)
	r.waitHealthy(30 * time.Second)
	return r
}

// startPlugin starts another plugin process with args, on its own socket
// and metrics port (any -listen-address or -metrics-port in args is
// replaced), and returns it with a client. It does not wait for health.
func (r *rig) startPlugin(args []string) (*process, kmsservice.Service, string) {
	r.t.Helper()
	return r.startPluginEnv(args, nil)
}

// startPluginEnv is startPlugin with env as the process's environment
// (nil: this process's).
func (r *rig) startPluginEnv(args, env []string) (*process, kmsservice.Service, string) {
	r.t.Helper()
	sock := filepath.Join(r.t.TempDir(), "kms.sock")
	var out []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-listen-address=") && !strings.HasPrefix(a, "-metrics-port=") {
			out = append(out, a)
		}
	}
	out = append(out, "-listen-address=unix://"+sock)
	p := startProcessEnv(r.t, pluginBin, env, out...)
	return p, connect(r.t, sock), sock
}

// argsWithout returns the rig's plugin args minus those with any prefix.
func (r *rig) argsWithout(prefixes ...string) []string {
	var out []string
next:
	for _, a := range r.args {
		for _, p := range prefixes {
			if strings.HasPrefix(a, p) {
				continue next
			}
		}
		out = append(out, a)
	}
	return out
}

// connect dials the socket with the API server's KMSv2 client.
func connect(t testing.TB, sock string) kmsservice.Service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	waitFor(t, 30*time.Second, "socket "+sock, func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	svc, err := kmsv2.NewGRPCService(ctx, "unix://"+sock, "vault-test", 3*time.Second)
	if err != nil {
		t.Fatalf("kmsv2.NewGRPCService: %v", err)
	}
	return svc
}

func (r *rig) status() *kmsservice.StatusResponse {
	r.t.Helper()
	st, err := r.client.Status(context.Background())
	if err != nil {
		r.t.Fatalf("Status: %v", err)
	}
	return st
}

func (r *rig) waitHealthy(timeout time.Duration) *kmsservice.StatusResponse {
	r.t.Helper()
	var st *kmsservice.StatusResponse
	waitFor(r.t, timeout, "Status healthz ok", func() bool {
		s, err := r.client.Status(context.Background())
		st = s
		return err == nil && s.Healthz == "ok"
	})
	return st
}

// metric sums the samples of name whose labels include every pair in labels.
func (r *rig) metric(name string, labels ...string) float64 {
	r.t.Helper()
	body := r.get("/metrics")
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(line, l)
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			sum += f
		}
	}
	return sum
}

func (r *rig) get(path string) string {
	r.t.Helper()
	code, body := r.getCode(path)
	if code != http.StatusOK {
		r.t.Fatalf("GET %s = %d: %s", path, code, body)
	}
	return body
}

func (r *rig) getCode(path string) (int, string) {
	r.t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", r.metricsPort, path))
	if err != nil {
		r.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// process is a child process whose stderr is kept in a file.
type process struct {
	t       testing.TB
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	mu      sync.Mutex
	exit    int
}

func startProcess(t testing.TB, bin string, args ...string) *process {
	t.Helper()
	return startProcessEnv(t, bin, nil, args...)
}

// startProcessEnv is startProcess with env as the environment (nil: this
// process's).
func startProcessEnv(t testing.TB, bin string, env []string, args ...string) *process {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "plugin-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{t: t, cmd: cmd, logPath: logf.Name(), done: make(chan struct{}), exit: -1}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.exit = cmd.ProcessState.ExitCode()
		if err != nil && p.exit == -1 {
			p.exit = 128
		}
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("plugin log (%s):\n%s", p.logPath, tail(p.log(), 6000))
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit code.
func (p *process) stop() int {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// wait waits for the process to exit on its own.
func (p *process) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("process still running after %s:\n%s", timeout, tail(p.log(), 3000))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

func (p *process) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !vaulttest.WaitFor(context.Background(), timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

func writeFileAtomic(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
