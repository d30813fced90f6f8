package nodefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// tmpInfix marks kmsctl's temp files: "." + target name + tmpInfix +
// random. The leading dot keeps kubelet from reading one as a static pod.
const tmpInfix = ".kmsctl-tmp-"

// failBeforeRename, when a test sets it, is called once a temp file is
// written and synced, before it is renamed over path; an error fails the
// write there, as a crash or a full disk would.
var failBeforeRename func(path string) error

// writeFileAtomic replaces path with data: a temp file in the same
// directory, fsynced, renamed over path, then the directory fsynced. mode
// is the new file's; when path exists, its owner is kept too. On error,
// path is as it was and the temp file is gone.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	removeStaleTemps(dir, base)
	tmp, err := os.CreateTemp(dir, "."+base+tmpInfix+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; set the mode whatever the umask.
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil {
		if err := keepOwner(tmp, fi); err != nil {
			return fmt.Errorf("write %s: keep its owner: %w", path, err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if failBeforeRename != nil {
		if err := failBeforeRename(path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// keepOwner gives tmp the owner of the file it replaces: the API server or
// kubelet may read it as that user.
func keepOwner(tmp *os.File, old fs.FileInfo) error {
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid() {
		return nil
	}
	return tmp.Chown(int(st.Uid), int(st.Gid))
}

// removeStaleTemps removes the temp files a killed kmsctl left for base.
// Only the lock holder writes, so none of them is being written now.
func removeStaleTemps(dir, base string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return // CreateTemp reports the directory's problem
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+base+tmpInfix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// writeIfChanged writes data to path atomically unless path already holds
// exactly data; a missing file is written with mode, an existing one keeps
// its own.
func writeIfChanged(path string, data []byte, mode fs.FileMode) error {
	if fi, err := os.Stat(path); err == nil {
		if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
			return nil
		}
		mode = fi.Mode().Perm()
	}
	return writeFileAtomic(path, data, mode)
}

// removeFile removes path, if it exists, and fsyncs its directory so the
// removal survives a crash.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// syncDir fsyncs a directory, making the renames and removals in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s to fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// writeNew writes data to a path that no one else sees yet (inside a
// directory not yet linked in) and fsyncs it.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
