package nodefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/atomicfile"
)

// files writes nodefs's files; tests set its BeforeRename.
var files atomicfile.Writer

// tmpInfix marks temp files (atomicfile.TempInfix).
const tmpInfix = atomicfile.TempInfix

// writeFileAtomic is files.WriteFile.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	return files.WriteFile(path, data, mode)
}

// syncDir is atomicfile.SyncDir.
func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

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
