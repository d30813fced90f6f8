package rotation

import (
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

func TestVerdicts(t *testing.T) {
	const key = "transit/kubernetes"
	group := func(version, count int) scan.Group {
		return scan.Group{Class: scan.ClassKMSv2, TransitKey: key, TransitVersion: version, Count: count}
	}
	report := func(gs ...scan.Group) scan.Report {
		return scan.Report{Resources: []scan.ResourceReport{{Resource: "secrets", Groups: gs}}}
	}
	tests := []struct {
		name string
		key  KeyState
		scan scan.Report
		want []string // verdicts from the oldest version up
	}{
		{name: "fresh key => current", key: KeyState{Name: key, Latest: 1, MinDecryption: 1}, scan: report(group(1, 5)), want: []string{VerdictCurrent}},
		{name: "rotated, not migrated => v1 needed", key: KeyState{Name: key, Latest: 2, MinDecryption: 1}, scan: report(group(1, 5), group(2, 1)), want: []string{VerdictNeeded, VerdictCurrent}},
		{name: "migrated => v1 safe to retire", key: KeyState{Name: key, Latest: 2, MinDecryption: 1}, scan: report(group(2, 6)), want: []string{VerdictSafeToRetire, VerdictCurrent}},
		{name: "retired => retired", key: KeyState{Name: key, Latest: 3, MinDecryption: 3}, scan: report(group(3, 6)), want: []string{VerdictRetired, VerdictRetired, VerdictCurrent}},
		{name: "object under a retired version => retired but needed", key: KeyState{Name: key, Latest: 2, MinDecryption: 2}, scan: report(group(1, 1), group(2, 6)), want: []string{VerdictRetiredButNeeded, VerdictCurrent}},
		{name: "empty v2 above a needed v1 => blocked", key: KeyState{Name: key, Latest: 3, MinDecryption: 1}, scan: report(group(1, 1), group(3, 6)), want: []string{VerdictNeeded, VerdictBlocked, VerdictCurrent}},
		{name: "malformed object => unknown, never safe", key: KeyState{Name: key, Latest: 2, MinDecryption: 1}, scan: report(group(2, 6), scan.Group{Class: scan.ClassMalformed, Count: 1}), want: []string{VerdictUnknown, VerdictCurrent}},
		{name: "another key's objects => ignored", key: KeyState{Name: key, Latest: 2, MinDecryption: 1}, scan: report(group(2, 6), scan.Group{Class: scan.ClassKMSv2, TransitKey: "transit/other", TransitVersion: 1, Count: 3}), want: []string{VerdictSafeToRetire, VerdictCurrent}},
		{name: "trimmed versions => not listed", key: KeyState{Name: key, Latest: 4, MinDecryption: 3, MinAvailable: 3}, scan: report(group(4, 6)), want: []string{VerdictSafeToRetire, VerdictCurrent}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Verdicts(tt.key, tt.scan)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d versions %+v, want %v", len(got), got, tt.want)
			}
			for i, w := range tt.want {
				if got[i].Verdict != w {
					t.Errorf("v%d: %s (%s), want %s", got[i].Version, got[i].Verdict, got[i].Reason, w)
				}
			}
		})
	}
}
