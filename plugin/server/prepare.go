package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// PrepareSocketDir creates dir (mode 0750) if missing and hands it to
// uid:gid. It is the plugin's one-shot preparation mode, run as root in an
// init container: kubelet creates a DirectoryOrCreate hostPath as root 0755,
// where a non-root plugin cannot bind its socket. The API server runs as
// root and still reaches the socket. A symlink or a non-directory at dir is
// refused rather than followed, so the mode cannot be turned into a chown of
// some other path on the host.
func PrepareSocketDir(dir string, uid, gid int) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
		return fmt.Errorf("socket directory %q must be an absolute path other than /", dir)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory (%s); refusing to change it", dir, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("socket directory %s: no owner information", dir)
	}
	if fi.Mode().Perm() == 0o750 && int(st.Uid) == uid && int(st.Gid) == gid {
		// Prepared before (a new pod revision, a node reboot): the step
		// runs again with every new pod and must succeed without change.
		return nil
	}
	// Without CAP_FOWNER, which the prepare step does not get, root may
	// chmod only what it owns: take the directory back first (CAP_CHOWN
	// allows that), chmod it, then hand it over. The directory only ever
	// becomes more closed on the way.
	if st.Uid != 0 {
		if err := os.Lchown(dir, 0, int(st.Gid)); err != nil {
			return fmt.Errorf("take socket directory %s back to re-prepare it: %w (the prepare step needs root with CAP_CHOWN)", dir, err)
		}
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		return fmt.Errorf("chmod socket directory %s: %w", dir, err)
	}
	if err := os.Lchown(dir, uid, gid); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("hand socket directory %s to %d:%d: %w (the prepare step needs root with CAP_CHOWN)", dir, uid, gid, err)
		}
		return fmt.Errorf("hand socket directory %s to %d:%d: %w", dir, uid, gid, err)
	}
	return nil
}
