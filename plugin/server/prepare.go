package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	// Chmod while root still owns it (without CAP_FOWNER, which the prepare
	// step does not get, root may chmod only its own files), then chown.
	// Either way round the directory only ever becomes more closed.
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
