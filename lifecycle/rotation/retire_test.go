package rotation

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

const key = "transit/kubernetes"

// under is a scan group of n objects under version v of key.
func under(v, n int, objs ...string) scan.Group {
	return scan.Group{Class: scan.ClassKMSv2, Provider: "vault-kubernetes-0a1b2c3d", TransitKey: key, TransitVersion: v,
		KeyID: fmt.Sprintf("vault-transit:%s:v%d:00ff", key, v), Count: n, Objects: objs}
}

// report puts groups under secrets.
func report(groups ...scan.Group) scan.Report {
	return scan.Report{Resources: []scan.ResourceReport{{Resource: "secrets", Groups: groups}}}
}

func TestRetire(t *testing.T) {
	state := func(latest, min int) KeyState { return KeyState{Name: key, Latest: latest, MinDecryption: min} }
	tests := []struct {
		name string
		in   RetireInput
		want RetireDecision
	}{
		{
			name: "rule 1: min_decryption_version above latest => refuse",
			in:   RetireInput{Scan: report(), Key: state(2, 3)},
			want: RetireDecision{Outcome: Refuse},
		},
		{
			name: "rule 1: no version at all => refuse",
			in:   RetireInput{Scan: report(), Key: state(0, 0)},
			want: RetireDecision{Outcome: Refuse},
		},
		{
			name: "rule 2: --to above latest => refuse",
			in:   RetireInput{Scan: report(under(3, 1, "a/x")), Key: state(3, 1), To: 4},
			want: RetireDecision{Outcome: Refuse},
		},
		{
			name: "rule 3: --to below current => refuse, lowering is --undo",
			in:   RetireInput{Scan: report(under(3, 1, "a/x")), Key: state(3, 2), To: 1},
			want: RetireDecision{Outcome: Refuse},
		},
		{
			name: "rule 4: a malformed object => refuse, listing it",
			in: RetireInput{Scan: report(under(3, 1, "a/x"),
				scan.Group{Class: scan.ClassMalformed, Reason: scan.ReasonUndecodable, Count: 1, Objects: []string{"a/bad"}}), Key: state(3, 1)},
			want: RetireDecision{Outcome: Refuse, RemainingCount: 1, Remaining: []Remaining{
				{Resource: "secrets", Object: "a/bad", Why: "malformed: " + scan.ReasonUndecodable}}},
		},
		{
			name: "rule 4: an object under the key with an unreadable version => refuse",
			in:   RetireInput{Scan: report(under(3, 1, "a/x"), under(0, 1, "a/odd")), Key: state(3, 1)},
			want: RetireDecision{Outcome: Refuse, RemainingCount: 1, Remaining: []Remaining{
				{Resource: "secrets", Object: "a/odd", Why: "kms-v2 under " + key + " with a DEK source not wrapped by Vault transit"}}},
		},
		{
			name: "rule 5: an object below the current min => refuse, undo first",
			in:   RetireInput{Scan: report(under(1, 1, "a/old"), under(3, 5)), Key: state(3, 2)},
			want: RetireDecision{Outcome: Refuse, RemainingCount: 1, Remaining: []Remaining{
				{Resource: "secrets", Object: "a/old", TransitVersion: 1, Why: "kms-v2 under " + key + " version 1"}}},
		},
		{
			name: "rule 6+10: objects under 2 and 3, no --to => raise to 2, the oldest needed",
			in:   RetireInput{Scan: report(under(2, 1, "a/x"), under(3, 9)), Key: state(3, 1)},
			want: RetireDecision{Outcome: Raise, To: 2},
		},
		{
			name: "rule 6+10: no object under the key => raise to latest",
			in: RetireInput{Scan: report(scan.Group{Class: scan.ClassIdentity, Count: 4, Objects: []string{"a/p"}},
				scan.Group{Class: scan.ClassAESCBC, Provider: "k1", Count: 2}), Key: state(4, 1)},
			want: RetireDecision{Outcome: Raise, To: 4},
		},
		{
			name: "rule 6: objects under another transit key or plugin => ignored",
			in: RetireInput{Scan: report(under(3, 2),
				scan.Group{Class: scan.ClassKMSv2, Provider: "other", TransitKey: "transit/other", TransitVersion: 1, Count: 7},
				scan.Group{Class: scan.ClassKMSv2, Provider: "azure", KeyID: "https://kv/keys/k/1", Count: 3}), Key: state(3, 1)},
			want: RetireDecision{Outcome: Raise, To: 3},
		},
		{
			name: "rule 7: --to 3 with objects under 1 and 2 => refuse, oldest first, bounded by the limit",
			in: RetireInput{Scan: scan.Report{Resources: []scan.ResourceReport{
				{Resource: "secrets", Groups: []scan.Group{under(2, 40, "a/s2", "b/s2"), under(1, 1, "a/s1"), under(3, 10)}},
				{Resource: "configmaps", Groups: []scan.Group{under(1, 2, "a/c1", "b/c1")}},
			}}, Key: state(3, 1), To: 3, Limit: 3},
			want: RetireDecision{Outcome: Refuse, RemainingCount: 43, Remaining: []Remaining{
				{Resource: "secrets", Object: "a/s1", TransitVersion: 1, Why: "kms-v2 under " + key + " version 1"},
				{Resource: "configmaps", Object: "a/c1", TransitVersion: 1, Why: "kms-v2 under " + key + " version 1"},
				{Resource: "configmaps", Object: "b/c1", TransitVersion: 1, Why: "kms-v2 under " + key + " version 1"},
			}},
		},
		{
			name: "rule 7+10: --to 2 with objects under 2 and 3 => raise to 2",
			in:   RetireInput{Scan: report(under(2, 1), under(3, 1)), Key: state(3, 1), To: 2},
			want: RetireDecision{Outcome: Raise, To: 2},
		},
		{
			name: "rule 8: already at the oldest needed version => unchanged",
			in:   RetireInput{Scan: report(under(2, 1), under(3, 1)), Key: state(3, 2)},
			want: RetireDecision{Outcome: Unchanged, To: 2},
		},
		{
			name: "rule 8: --to equal to the current => unchanged",
			in:   RetireInput{Scan: report(under(3, 1)), Key: state(3, 3), To: 3},
			want: RetireDecision{Outcome: Unchanged, To: 3},
		},
		{
			name: "rule 9: min_encryption_version 2 below the target 3 => refuse, Vault would reject it",
			in:   RetireInput{Scan: report(under(3, 1)), Key: KeyState{Name: key, Latest: 3, MinDecryption: 1, MinEncryption: 2}},
			want: RetireDecision{Outcome: Refuse},
		},
		{
			name: "rule 9+10: min_encryption_version 3 at the target => raise",
			in:   RetireInput{Scan: report(under(3, 1)), Key: KeyState{Name: key, Latest: 3, MinDecryption: 1, MinEncryption: 3}},
			want: RetireDecision{Outcome: Raise, To: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Retire(tt.in)
			if got.Reason == "" {
				t.Error("no reason given")
			}
			got.Reason = ""
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Retire =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestUndo(t *testing.T) {
	state := func(latest, min, available int) KeyState {
		return KeyState{Name: key, Latest: latest, MinDecryption: min, MinAvailable: available}
	}
	tests := []struct {
		name string
		in   UndoInput
		want RetireDecision
	}{
		{
			name: "rule 1: min_decryption_version 0 => refuse",
			in:   UndoInput{Key: state(3, 0, 0)},
			want: RetireDecision{Outcome: Refuse},
		},
		{
			name: "rule 2: --to above the current => refuse, raising is retire",
			in:   UndoInput{Key: state(3, 2, 0), To: 3},
			want: RetireDecision{Outcome: Refuse},
		},
		{
			name: "rule 3: --to below a trimmed key's oldest version => refuse",
			in:   UndoInput{Key: state(5, 4, 2), To: 1},
			want: RetireDecision{Outcome: Refuse},
		},
		{
			name: "rule 4+6: no --to => lower to 1",
			in:   UndoInput{Key: state(3, 3, 0)},
			want: RetireDecision{Outcome: Lower, To: 1},
		},
		{
			name: "rule 4+6: no --to on a trimmed key => lower to min_available_version",
			in:   UndoInput{Key: state(5, 4, 2)},
			want: RetireDecision{Outcome: Lower, To: 2},
		},
		{
			name: "rule 4+6: --to 2 => lower to 2",
			in:   UndoInput{Key: state(3, 3, 0), To: 2},
			want: RetireDecision{Outcome: Lower, To: 2},
		},
		{
			name: "rule 5: already 1 => unchanged",
			in:   UndoInput{Key: state(3, 1, 0)},
			want: RetireDecision{Outcome: Unchanged, To: 1},
		},
		{
			name: "rule 5: --to equal to the current => unchanged",
			in:   UndoInput{Key: state(3, 2, 0), To: 2},
			want: RetireDecision{Outcome: Unchanged, To: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Undo(tt.in)
			if got.Reason == "" {
				t.Error("no reason given")
			}
			got.Reason = ""
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Undo =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}
