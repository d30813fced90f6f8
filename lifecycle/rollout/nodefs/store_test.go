package nodefs

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
)

// Two kmsctl never interleave: the second Open fails at once, naming the
// holder, and succeeds once the first is closed. flock belongs to an open
// file description, so a second Open in this process is refused exactly
// as another process would be.
func TestOpenRefusesWhileAnotherHoldsTheLock(t *testing.T) {
	dir := t.TempDir()
	first, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	second, err := Open(dir)
	if err == nil {
		second.Close()
		t.Fatal("a second Open succeeded while the lock was held")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the second Open took %s; it must fail at once, not wait", took)
	}
	for _, want := range []string{filepath.Join(dir, lockFile), fmt.Sprintf("pid %d", os.Getpid()), "one kmsctl at a time"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := first.Apply(NodeFiles{Name: "a"}, rollout.Step{Action: rollout.Promote, Node: "a"}, Rendered{}); err == nil || !strings.Contains(err.Error(), "lock is not held") {
		t.Fatalf("Apply after Close: %v, want a refusal", err)
	}
	if err := first.SaveProgress(rollout.Progress{}); err == nil {
		t.Fatal("SaveProgress after Close succeeded")
	}
	again, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	again.Close()
}

func TestProgress(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	r := lifecycle.Revision{Name: "q1", Provider: "vault-new-22222222", ImageDigest: "sha256:aa", ArgsHash: "sha256:bb"}
	step := rollout.Step{Action: rollout.WritePod, Node: "b", Revision: r, Reason: "new provider"}
	full := rollout.Progress{
		InFlight:  &step,
		StartedAt: t0,
		LastKnownGood: map[string]lifecycle.NodeConfig{
			"a": {Pods: pods(r), Providers: kms("vault-new-22222222", "vault-old-11111111", lifecycle.IdentityProvider)},
		},
		Failed: &rollout.Failure{Revision: r, Node: "c", Reason: "preflight failed"},
	}

	t.Run("missing file => empty progress, ready to record into", func(t *testing.T) {
		p, err := LoadProgress(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if p.InFlight != nil || p.Failed != nil || p.LastKnownGood == nil || len(p.LastKnownGood) != 0 {
			t.Fatalf("got %+v, want empty with a map", p)
		}
	})
	t.Run("saved => loaded the same, 0600", func(t *testing.T) {
		st := open(t)
		path := filepath.Join(st.dir, progressFile)
		write(t, path, []byte("{}"))
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := st.SaveProgress(full); err != nil {
			t.Fatal(err)
		}
		got, err := LoadProgress(st.dir)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, full) {
			t.Fatalf("loaded %+v\nsaved  %+v", got, full)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v, %v; want 0600", fi.Mode(), err)
		}
		if tmp := tempFiles(t, st.dir); len(tmp) > 0 {
			t.Fatalf("temp files left: %v", tmp)
		}
	})
	t.Run("a save that fails => the old progress stays", func(t *testing.T) {
		st := open(t)
		if err := st.SaveProgress(full); err != nil {
			t.Fatal(err)
		}
		files.BeforeRename = func(string) error { return fmt.Errorf("no space left on device") }
		t.Cleanup(func() { files.BeforeRename = nil })
		if err := st.SaveProgress(rollout.Progress{}); err == nil {
			t.Fatal("the save did not fail")
		}
		got, err := LoadProgress(st.dir)
		if err != nil || !reflect.DeepEqual(got, full) {
			t.Fatalf("after a failed save: %+v, %v", got, err)
		}
	})
	for _, tc := range []struct{ name, data, want string }{
		{name: "truncated", data: `{"inFlight": {"action": "write-pod"`, want: "unexpected EOF"},
		{name: "empty", data: ``, want: "EOF"},
		{name: "two objects", data: `{} {}`, want: "data after the JSON object"},
		{name: "unknown field", data: `{"inflight2": {}}`, want: "unknown field"},
		{name: "in flight without a start", data: `{"inFlight": {"action": "write-pod", "node": "a"}}`, want: "without startedAt"},
	} {
		t.Run("corrupt: "+tc.name+" => error naming the file, left as it is", func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, progressFile)
			write(t, path, []byte(tc.data))
			_, err := LoadProgress(dir)
			if err == nil {
				t.Fatal("loaded a corrupt progress file")
			}
			for _, want := range []string{path, "corrupt", tc.want, "inspect"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if got := string(read(t, path)); got != tc.data {
				t.Fatalf("the file changed to %q", got)
			}
		})
	}
}
