package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is one child process whose output goes to a log file. It can be
// stopped and started again with the same arguments; the log accumulates.
type Process struct {
	Name    string // for messages, e.g. "kube-apiserver-1"
	LogPath string

	t    testing.TB
	bin  string
	args []string
	env  []string
	dir  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// newProcess describes a process and arranges for it to be stopped, and its
// log tail printed on failure, when the test ends. It does not start it.
func newProcess(t testing.TB, name, dir, bin string, args, env []string) *Process {
	p := &Process{Name: name, LogPath: filepath.Join(dir, name+".log"), t: t, bin: bin, args: args, env: env, dir: dir}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- last lines of %s log (%s):\n%s", p.Name, p.LogPath, p.LogTail(60))
		}
	})
	return p
}

// Start starts the process. It fails the test if the binary cannot run.
func (p *Process) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatalf("%s is already running", p.Name)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatalf("open %s log: %v", p.Name, err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// The child dies with the test binary, even on SIGKILL of the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	fmt.Fprintf(logf, "=== e2e harness: starting %s at %s\n", p.Name, time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.t.Fatalf("start %s (%s): %v", p.Name, p.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logf, "=== e2e harness: %s (pid %d) exited at %s: %v\n", p.Name, cmd.Process.Pid, time.Now().Format(time.RFC3339Nano), err)
		logf.Close()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
}

// Running reports whether the process has been started and not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Exited is closed when the current run of the process ends; nil if it was
// never started.
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// PID is the process ID of the current run, 0 if not running.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stop sends SIGTERM, waits up to 15s for a clean exit, then kills.
func (p *Process) Stop() { p.signal(syscall.SIGTERM, 15*time.Second) }

// Kill sends SIGKILL, as a crash or an OOM kill would, and waits.
func (p *Process) Kill() { p.signal(syscall.SIGKILL, 0) }

func (p *Process) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-exited:
			return
		case <-time.After(grace):
		}
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Log returns the whole log.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail returns the last n lines of the log.
func (p *Process) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
