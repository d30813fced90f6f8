package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// runner lets the demo use the test harness outside `go test`: it is a
// testing.TB whose failures print and exit, whose cleanups run when the demo
// stops, and whose temporary directories live in the state directory so the
// logs are there to read.
type runner struct {
	testing.TB // never set: methods the harness does not call stay unimplemented

	dir string

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	dirs     int
}

func newRunner(dir string) *runner { return &runner{dir: dir} }

func (r *runner) Helper()      {}
func (r *runner) Name() string { return "demo" }

func (r *runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *runner) Log(args ...any)                 { fmt.Fprintln(os.Stderr, args...) }
func (r *runner) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func (r *runner) Error(args ...any) {
	r.markFailed()
	fmt.Fprintln(os.Stderr, append([]any{"demo:"}, args...)...)
}

func (r *runner) Errorf(format string, args ...any) {
	r.markFailed()
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
}

func (r *runner) Fatal(args ...any) {
	r.Error(args...)
	r.FailNow()
}

func (r *runner) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.FailNow()
}

// FailNow stops everything that was started and exits.
func (r *runner) FailNow() {
	r.markFailed()
	r.Close()
	fmt.Fprintf(os.Stderr, "demo: failed; logs are under %s\n", r.dir)
	os.Exit(1)
}

func (r *runner) markFailed() {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
}

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

// TempDir returns a new numbered directory in the state directory. It is
// kept after the demo stops, for its logs.
func (r *runner) TempDir() string {
	r.mu.Lock()
	r.dirs++
	n := r.dirs
	r.mu.Unlock()
	d := filepath.Join(r.dir, fmt.Sprintf("%03d", n))
	if err := os.MkdirAll(d, 0o700); err != nil {
		r.Fatalf("create %s: %v", d, err)
	}
	return d
}

// Close runs the cleanups, last registered first, once.
func (r *runner) Close() {
	r.mu.Lock()
	cleanups := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
}
