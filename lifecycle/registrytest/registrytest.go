// Package registrytest runs a real OCI registry for tests: Debian's
// docker-registry (distribution 2.8) serving plain HTTP on a free loopback
// port, with its storage in the test's temporary directory. Distribution
// 2.8 has no OCI referrers API, so clients exercise the sha256-<digest> tag
// fallback that many production registries still need.
//
// The binary is $REGISTRY_BIN, else /usr/bin/docker-registry (installed by
// `make registry`). A test that cannot find it fails: a skipped test would
// pass without testing anything.
package registrytest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Registry is a running docker-registry.
type Registry struct {
	// Host is the registry's address, "127.0.0.1:PORT", as image
	// references name it (127.0.0.1/8 makes clients use plain HTTP).
	Host string
	// LogPath is the registry's log, printed when the test fails.
	LogPath string
}

// Binary returns the path of the docker-registry binary or fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("REGISTRY_BIN")
	if p == "" {
		p = "/usr/bin/docker-registry"
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("docker-registry not found at %s: run `make registry` (this test needs a real OCI registry)", p)
	}
	return p
}

// Start starts a registry with empty storage, waits until /v2/ answers, and
// stops it when the test ends. Deleting manifests and blobs is enabled, so
// tests can remove what they pushed.
func Start(t testing.TB) *Registry {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	r := &Registry{LogPath: filepath.Join(dir, "registry.log")}
	// The port is picked by closing a listener; another process may take it
	// before the registry binds, so a failed start is retried on a new port.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("registrytest: pick a port: %v", err)
		}
		r.Host = fmt.Sprintf("127.0.0.1:%d", port)
		if lastErr = r.start(t, bin, dir); lastErr == nil {
			return r
		}
	}
	t.Fatalf("registrytest: start docker-registry: %v\n%s", lastErr, r.logTail())
	return nil
}

func (r *Registry) start(t testing.TB, bin, dir string) error {
	t.Helper()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
  secret: registrytest
`, filepath.Join(dir, "data"), r.Host)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(r.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	// The registry must not outlive a test binary that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()

	if err := waitReady(r.Host, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return err
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("docker-registry log (%s):\n%s", r.Host, r.logTail())
		}
	})
	return nil
}

// waitReady polls GET /v2/ until the registry answers 200, it exits, or 30s
// pass.
func waitReady(host string, exited <-chan struct{}) error {
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("docker-registry exited before serving on %s", host)
		default:
		}
		resp, err := c.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("docker-registry did not answer GET http://%s/v2/ within 30s", host)
}

// logTail returns the end of the registry's log, for failure messages.
func (r *Registry) logTail() string {
	b, err := os.ReadFile(r.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const max = 16 << 10
	s := string(b)
	if len(s) > max {
		s = "...\n" + s[len(s)-max:]
	}
	return strings.TrimRight(s, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
