package nodefs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
)

// Names in the state directory.
const (
	lockFile     = "kmsctl.lock"
	progressFile = "progress.json"
	nodesDir     = "nodes"
)

// Store is a state directory that this process holds the lock of: the one
// kmsctl that may change the nodes' files and the progress.
type Store struct {
	dir  string
	lock *os.File // flock held until Close
}

// Open creates stateDir if needed and takes its lock. It does not wait: if
// another kmsctl holds the lock, it fails and names that process.
func Open(stateDir string) (*Store, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	p := filepath.Join(stateDir, lockFile)
	// The lock file is never removed: removing it would let a newcomer lock
	// a fresh file while the holder still holds the old one.
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "another kmsctl"
			if b, err := os.ReadFile(p); err == nil && len(bytes.TrimSpace(b)) > 0 {
				holder = "another kmsctl (" + strings.TrimSpace(string(b)) + ")"
			}
			return nil, fmt.Errorf("%s holds %s: one kmsctl at a time changes these nodes; wait until it is done, then run again", holder, p)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	// Who holds it, for the next one's message; the lock works without it.
	if f.Truncate(0) == nil {
		f.WriteAt(fmt.Appendf(nil, "pid %d\n", os.Getpid()), 0)
	}
	return &Store{dir: stateDir, lock: f}, nil
}

// Close releases the lock.
func (s *Store) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close()
	s.lock = nil
	if err != nil {
		return fmt.Errorf("release state lock: %w", err)
	}
	return nil
}

func (s *Store) held() error {
	if s == nil || s.lock == nil {
		return errors.New("the state directory's lock is not held (Store closed)")
	}
	return nil
}

// LoadProgress reads stateDir's rollout progress. A missing file is a
// rollout not begun: an empty Progress. A file that does not decode is an
// error and is left alone: it may record a step in flight.
func LoadProgress(stateDir string) (rollout.Progress, error) {
	p := filepath.Join(stateDir, progressFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return rollout.Progress{LastKnownGood: map[string]lifecycle.NodeConfig{}}, nil
	}
	if err != nil {
		return rollout.Progress{}, fmt.Errorf("read rollout progress: %w", err)
	}
	corrupt := func(why string) error {
		return fmt.Errorf("%s is corrupt (%s): it may record a step in flight, so kmsctl will not start over; inspect it and every node's files, then fix or move it away", p, why)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	// A field this kmsctl does not know (a newer kmsctl wrote it) would be
	// lost on the next save.
	dec.DisallowUnknownFields()
	var pr rollout.Progress
	if err := dec.Decode(&pr); err != nil {
		return rollout.Progress{}, corrupt(err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return rollout.Progress{}, corrupt("data after the JSON object")
	}
	if pr.InFlight != nil && pr.StartedAt.IsZero() {
		return rollout.Progress{}, corrupt("a step in flight without startedAt")
	}
	if pr.LastKnownGood == nil {
		pr.LastKnownGood = map[string]lifecycle.NodeConfig{}
	}
	return pr, nil
}

// SaveProgress replaces the progress file, atomically, 0600.
func (s *Store) SaveProgress(p rollout.Progress) error {
	if err := s.held(); err != nil {
		return fmt.Errorf("save rollout progress: %w", err)
	}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("save rollout progress: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(s.dir, progressFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save rollout progress: %w", err)
	}
	return nil
}
