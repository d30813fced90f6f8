package rollout

import (
	"strings"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
)

func TestPlan(t *testing.T) {
	r1, r2 := rev("r1", "old"), rev("r2", "old")
	n1 := rev("n1", "new")
	tests := []struct {
		name string
		o    Observed
		want []string // actions, "node" appended where a step names one
	}{
		{
			name: "in place on three healthy nodes => one pod at a time, confirmed, then done",
			o:    observed(r2, threeAt(pods(r1), "old")...),
			want: []string{"write-pod a", "confirm a", "write-pod b", "confirm b", "write-pod c", "confirm c", "done"},
		},
		{
			name: "new provider => pods everywhere, then read-only everywhere, then promote everywhere",
			o:    observed(n1, threeAt(pods(r1), "old")...),
			want: []string{
				"write-pod a", "confirm a", "write-pod b", "confirm b", "write-pod c", "confirm c",
				"add-read-only a", "confirm a", "add-read-only b", "confirm b", "add-read-only c", "confirm c",
				"promote a", "confirm a", "promote b", "confirm b", "promote c", "confirm c", "done",
			},
		},
		{
			name: "a node unhealthy now => the plan is to wait for it",
			o: with(observed(r2, threeAt(pods(r1), "old")...), "b", func(n *lifecycle.Node) {
				n.APIServer.ReadyzKMS = false
			}),
			want: []string{"wait b"},
		},
		{
			name: "already there => done",
			o:    observed(r1, threeAt(pods(r1), "old")...),
			want: []string{"done"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.o.Nodes[0].OnDisk.String()
			var got []string
			for _, s := range Plan(tt.o, 100) {
				got = append(got, strings.TrimSpace(string(s.Action)+" "+s.Node))
			}
			if strings.Join(got, "; ") != strings.Join(tt.want, "; ") {
				t.Fatalf("plan:\n  %s\nwant:\n  %s", strings.Join(got, "; "), strings.Join(tt.want, "; "))
			}
			if tt.o.Nodes[0].OnDisk.String() != before || tt.o.Progress.InFlight != nil {
				t.Fatal("Plan changed the observations it was given")
			}
		})
	}
}
