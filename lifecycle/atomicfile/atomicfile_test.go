package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteFile(t *testing.T) {
	t.Run("missing directory => error, nothing created", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "missing", "f")
		if err := WriteFile(p, []byte("x"), 0o644); err == nil || !strings.Contains(err.Error(), p) {
			t.Fatalf("writeFileAtomic = %v, want an error naming %s", err, p)
		}
	})
	t.Run("restrictive umask => the requested mode anyway", func(t *testing.T) {
		defer syscall.Umask(syscall.Umask(0o077))
		p := filepath.Join(t.TempDir(), "script.sh")
		if err := WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o755 {
			t.Fatalf("mode %v, want 0755", fi.Mode().Perm())
		}
	})
}
