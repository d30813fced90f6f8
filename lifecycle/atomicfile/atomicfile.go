// Package atomicfile writes files the way kubelet and the API server must
// see them change: all at once or not at all, and durably.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// TempInfix marks kmsctl's temp files: "." + target name + TempInfix +
// random. The leading dot keeps kubelet from reading one as a static pod,
// and readers of a directory kmsctl writes skip such names.
const TempInfix = ".kmsctl-tmp-"

// Writer writes files atomically. The zero value is ready to use.
type Writer struct {
	// BeforeRename, when a test sets it, is called once a temp file is
	// written and synced, before it is renamed over path; an error fails
	// the write there, as a crash or a full disk would.
	BeforeRename func(path string) error
}

// WriteFile is Writer{}.WriteFile.
func WriteFile(path string, data []byte, mode fs.FileMode) error {
	return Writer{}.WriteFile(path, data, mode)
}

// WriteFile replaces path with data so that a reader (kubelet, the API
// server's config reload) sees the old file or the new one, never a part,
// and a crash leaves one of them on disk: a temp file in the same
// directory, fsynced, renamed over path, then the directory fsynced. mode
// is the new file's; when path exists, its owner is kept too. On error,
// path is as it was and the temp file is gone. Temp files a killed writer
// left for path are removed first.
func (w Writer) WriteFile(path string, data []byte, mode fs.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	removeStaleTemps(dir, base)
	tmp, err := os.CreateTemp(dir, "."+base+TempInfix+"*")
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
	if w.BeforeRename != nil {
		if err := w.BeforeRename(path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := SyncDir(dir); err != nil {
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
		if strings.HasPrefix(e.Name(), "."+base+TempInfix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// SyncDir fsyncs a directory, making the renames and removals in it
// durable.
func SyncDir(dir string) error {
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
