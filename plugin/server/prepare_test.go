package server

import (
	"fmt"
	"os"
	"os/exec"
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

// TestPrepareHelperProcess is the prepare step itself when run by
// TestPrepareWithOnlyCAPCHOWN with its environment; otherwise it does
// nothing.
func TestPrepareHelperProcess(t *testing.T) {
	dir := os.Getenv("PREPARE_HELPER_DIR")
	if dir == "" {
		return
	}
	if err := PrepareSocketDir(dir, 65532, 65532); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	os.Exit(0)
}

// The rendered init container runs the prepare step as root with every
// capability dropped but CAP_CHOWN, once for every new pod: a new revision
// or a node reboot finds the directory it prepared before. Reproduced on a
// real kubelet by kmsctl rollout: "chmod ...: operation not permitted", the
// new pod crash-looping. setpriv (util-linux) gives the helper process
// exactly that capability set.
func TestPrepareWithOnlyCAPCHOWN(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs the prepare step as root with only CAP_CHOWN and must run as root (CI does)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed to drop capabilities: apt-get install util-linux")
	}
	prepare := func(dir string) error {
		cmd := exec.Command(setpriv, "--bounding-set=-all,+chown", "--inh-caps=-all", os.Args[0], "-test.run=^TestPrepareHelperProcess$")
		cmd.Env = append(os.Environ(), "PREPARE_HELPER_DIR="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	dir := filepath.Join(t.TempDir(), "kmsplugin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := prepare(dir); err != nil {
		t.Fatalf("first pod: %v", err)
	}
	assertDir(t, dir, 0o750, 65532, 65532)
	if err := prepare(dir); err != nil {
		t.Fatalf("next pod, directory already prepared: %v", err)
	}
	assertDir(t, dir, 0o750, 65532, 65532)
	// Someone loosened it meanwhile: the step closes it again.
	if err := os.Chmod(dir, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := prepare(dir); err != nil {
		t.Fatalf("prepared directory with another mode: %v", err)
	}
	assertDir(t, dir, 0o750, 65532, 65532)
}
