// Package etcdtest runs a real etcd for tests: the v3.7.0 binary that
// `make etcd` builds (the version Kubernetes 1.37 ships), one member on free
// loopback ports, its data in the test's temporary directory.
//
// The binary is $ETCD_BIN, else .build/bin/etcd at the repository root. A
// test that cannot find it fails: a skipped test would pass without testing
// anything.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is a running single-member etcd.
type Etcd struct {
	// Endpoint is the client URL, http://127.0.0.1:PORT.
	Endpoint string
	// Client is connected to it and closed when the test ends.
	Client *clientv3.Client
	// LogPath is etcd's log, printed when the test fails.
	LogPath string
}

// Binary returns the path of the etcd binary or fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("ETCD_BIN")
	if p == "" {
		_, file, _, _ := runtime.Caller(0)
		p = filepath.Join(filepath.Dir(file), "..", "..", "..", ".build", "bin", "etcd")
	}
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("etcd not found at %s ($ETCD_BIN overrides the path): run `make etcd` (etcd v3.7.0 from the Go module proxy); this test needs a real etcd", filepath.Clean(p))
	}
	return p
}

// Start starts etcd with empty data, waits until it answers, and stops it
// when the test ends.
func Start(t testing.TB) *Etcd {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	// A port is picked by closing a listener; another process may take it
	// before etcd binds, so a failed start is retried on new ports.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		e, err := start(t, bin, dir, attempt)
		if err == nil {
			return e
		}
		lastErr = err
	}
	t.Fatalf("etcdtest: start etcd: %v", lastErr)
	return nil
}

func start(t testing.TB, bin, dir string, attempt int) (*Etcd, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, fmt.Errorf("pick ports: %w", err)
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	e := &Etcd{Endpoint: client, LogPath: filepath.Join(dir, fmt.Sprintf("etcd-%d.log", attempt))}
	logf, err := os.Create(e.LogPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin,
		"--name=test",
		"--data-dir="+filepath.Join(dir, fmt.Sprintf("data-%d", attempt)),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=test="+peer,
		"--initial-cluster-state=new",
		"--logger=zap",
		"--log-outputs=stderr",
		"--log-level=warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// etcd must not outlive a test binary that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	c, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		stop()
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	if err := waitReady(c, exited); err != nil {
		c.Close()
		stop()
		return nil, fmt.Errorf("%w\n%s", err, tail(e.LogPath))
	}
	e.Client = c
	t.Cleanup(func() {
		c.Close()
		stop()
		if t.Failed() {
			t.Logf("etcd log (%s):\n%s", client, tail(e.LogPath))
		}
	})
	return e, nil
}

// waitReady polls a read until etcd answers, exits, or 30s pass.
func waitReady(c *clientv3.Client, exited <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Get(ctx, "/health-probe")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("etcd exited while starting: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd did not answer in 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const max = 8 << 10
	s := string(b)
	if len(s) > max {
		s = "...\n" + s[len(s)-max:]
	}
	return strings.TrimRight(s, "\n")
}
