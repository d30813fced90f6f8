package rotation

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// fakeKey is a transit key that records what was done to it.
type fakeKey struct {
	state   KeyState
	actions []string
	// ignoreWrites makes writes succeed without effect, as a Vault that
	// lost them would.
	ignoreWrites bool
	failWrite    error
}

func (f *fakeKey) Read(context.Context) (KeyState, error) {
	f.actions = append(f.actions, "read")
	return f.state, nil
}

func (f *fakeKey) SetMinDecryptionVersion(_ context.Context, v int) error {
	f.actions = append(f.actions, fmt.Sprintf("set %d", v))
	if f.failWrite != nil {
		return f.failWrite
	}
	if !f.ignoreWrites {
		f.state.MinDecryption = v
	}
	return nil
}

// scans returns a Scanner that answers with reps in turn and logs "scan".
func scans(f *fakeKey, reps ...scan.Report) Scanner {
	i := 0
	return func(context.Context) (scan.Report, error) {
		f.actions = append(f.actions, "scan")
		r := reps[min(i, len(reps)-1)]
		i++
		return r, nil
	}
}

func TestRun(t *testing.T) {
	state := func(latest, min int) KeyState { return KeyState{Name: key, Latest: latest, MinDecryption: min} }
	clean := report(under(3, 4))
	tests := []struct {
		name        string
		key         fakeKey
		scans       []scan.Report
		opts        RunOptions
		wantActions []string
		wantOutcome RetireOutcome
		wantMin     int
		wantApplied bool
		wantRolled  bool
		wantErr     string
	}{
		{
			name: "nothing below 3 => scan, read, set 3, read back, scan again",
			key:  fakeKey{state: state(3, 1)}, scans: []scan.Report{clean},
			wantActions: []string{"scan", "read", "set 3", "read", "scan"}, wantOutcome: Raise, wantMin: 3, wantApplied: true,
		},
		{
			name: "an object under 1 => refused, nothing written",
			key:  fakeKey{state: state(3, 1)}, scans: []scan.Report{report(under(1, 1, "a/old"), under(3, 4))}, opts: RunOptions{To: 3},
			wantActions: []string{"scan", "read"}, wantOutcome: Refuse, wantMin: 1,
		},
		{
			name: "dry run => decided, nothing written",
			key:  fakeKey{state: state(3, 1)}, scans: []scan.Report{clean}, opts: RunOptions{DryRun: true},
			wantActions: []string{"scan", "read"}, wantOutcome: Raise, wantMin: 1,
		},
		{
			name: "already retired => unchanged, nothing written",
			key:  fakeKey{state: state(3, 3)}, scans: []scan.Report{clean},
			wantActions: []string{"scan", "read"}, wantOutcome: Unchanged, wantMin: 3,
		},
		{
			name: "undo => no scan, read, set 1, read back",
			key:  fakeKey{state: state(3, 3)}, opts: RunOptions{Undo: true},
			wantActions: []string{"read", "set 1", "read"}, wantOutcome: Lower, wantMin: 1, wantApplied: true,
		},
		{
			name: "an object under 2 appears during the raise => old minimum written back, refusal listing it",
			key:  fakeKey{state: state(3, 1)}, scans: []scan.Report{clean, report(under(2, 1, "a/late"), under(3, 4))},
			wantActions: []string{"scan", "read", "set 3", "read", "scan", "set 1", "read"}, wantOutcome: Refuse, wantMin: 1, wantApplied: true, wantRolled: true,
		},
		{
			name: "Vault reads back another value => error",
			key:  fakeKey{state: state(3, 1), ignoreWrites: true}, scans: []scan.Report{clean},
			wantActions: []string{"scan", "read", "set 3", "read"}, wantOutcome: Raise, wantMin: 1, wantApplied: true,
			wantErr: "set min_decryption_version 3, but the transit key transit/kubernetes reports 1",
		},
		{
			name: "the write fails => error, not applied",
			key:  fakeKey{state: state(3, 1), failWrite: errors.New("permission denied")}, scans: []scan.Report{clean},
			wantActions: []string{"scan", "read", "set 3"}, wantOutcome: Raise, wantMin: 1, wantErr: "permission denied",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := tt.key
			var sc Scanner = func(context.Context) (scan.Report, error) { t.Fatal("scanned"); return scan.Report{}, nil }
			if tt.scans != nil {
				sc = scans(&k, tt.scans...)
			}
			res, err := Run(context.Background(), &k, sc, tt.opts)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if !reflect.DeepEqual(k.actions, tt.wantActions) {
				t.Errorf("actions %q, want %q", k.actions, tt.wantActions)
			}
			if res.Decision.Outcome != tt.wantOutcome || k.state.MinDecryption != tt.wantMin || res.Applied != tt.wantApplied || res.RolledBack != tt.wantRolled {
				t.Errorf("outcome %s, min %d, applied %v, rolled back %v; want %s, %d, %v, %v",
					res.Decision.Outcome, k.state.MinDecryption, res.Applied, res.RolledBack, tt.wantOutcome, tt.wantMin, tt.wantApplied, tt.wantRolled)
			}
			if tt.wantRolled && (len(res.Decision.Remaining) != 1 || res.Decision.Remaining[0].Object != "a/late") {
				t.Errorf("remaining %+v", res.Decision.Remaining)
			}
			if res.Key != key || res.Before.Name != key {
				t.Errorf("key %q, before %+v", res.Key, res.Before)
			}
		})
	}
}
