package server

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestPrepareSocketDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns a directory and must run as root (CI does)")
	}
	t.Run("a missing directory is created 0750 and owned by the plugin user", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run", "kmsplugin")
		if err := PrepareSocketDir(dir, 65532, 65533); err != nil {
			t.Fatal(err)
		}
		assertDir(t, dir, 0o750, 65532, 65533)
	})
	t.Run("a root 0755 directory as kubelet creates it is handed over", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "kmsplugin")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := PrepareSocketDir(dir, 65532, 65532); err != nil {
			t.Fatal(err)
		}
		assertDir(t, dir, 0o750, 65532, 65532)
	})
	t.Run("a symlink is refused, its target untouched", func(t *testing.T) {
		base := t.TempDir()
		target := filepath.Join(base, "target")
		if err := os.Mkdir(target, 0o700); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(base, "link")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if err := PrepareSocketDir(link, 65532, 65532); err == nil {
			t.Fatal("PrepareSocketDir followed a symlink")
		}
		assertDir(t, target, 0o700, 0, 0)
	})
	t.Run("a relative path or / is refused", func(t *testing.T) {
		for _, dir := range []string{"run/kmsplugin", "/", "//"} {
			if err := PrepareSocketDir(dir, 65532, 65532); err == nil {
				t.Errorf("PrepareSocketDir(%q) succeeded", dir)
			}
		}
	})
}

func assertDir(t *testing.T, dir string, mode os.FileMode, uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm() != mode || st.Uid != uid || st.Gid != gid {
		t.Fatalf("%s: mode %v owner %d:%d, want dir %v %d:%d", dir, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
	}
}
