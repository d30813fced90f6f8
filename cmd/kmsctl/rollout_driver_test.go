package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/clusterstate"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/nodefs"
)

const (
	provA = "vault-a-11111111"
	provB = "vault-b-22222222"
)

var (
	t0     = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	rev1   = lifecycle.Revision{Name: "1", Provider: provA, ImageDigest: "sha256:i1", ArgsHash: "sha256:a1"}
	rev2   = lifecycle.Revision{Name: "2", Provider: provA, ImageDigest: "sha256:i2", ArgsHash: "sha256:a2"}
	newKey = lifecycle.Revision{Name: "3", Provider: provB, ImageDigest: "sha256:i2", ArgsHash: "sha256:a3"}
	onRev1 = lifecycle.NodeConfig{Pods: []lifecycle.Revision{rev1}, Providers: []lifecycle.Provider{{Name: provA, KMS: true}, {Name: lifecycle.IdentityProvider}}}
)

// world is a cluster in memory for the driver: each node's files as a
// NodeConfig, kubelets and API servers that settle at once (a broken
// revision never turns healthy), the shared ConfigMap with its version,
// and this kmsctl's state directory. It records what the driver does.
type world struct {
	desired  lifecycle.Revision
	order    []string
	local    map[string]bool
	disk     map[string]lifecycle.NodeConfig
	broken   lifecycle.Revision
	shared   clusterstate.State
	version  int
	conflict map[int]bool // the saves (1, 2, ...) that another kmsctl beats
	saves    int
	kept     map[string]lifecycle.NodeConfig // last-known-good in this state directory
	now      time.Time
	log      []string
}

func newWorld(desired lifecycle.Revision, nodes ...string) *world {
	w := &world{desired: desired, order: nodes, local: map[string]bool{}, disk: map[string]lifecycle.NodeConfig{},
		shared: clusterstate.Empty(), conflict: map[int]bool{}, kept: map[string]lifecycle.NodeConfig{}, now: t0}
	for _, n := range nodes {
		w.disk[n] = onRev1
	}
	return w
}

func hashOf(c lifecycle.NodeConfig) string { return "sha256:" + c.String() }

// node is what observe sees of name with files c: healthy unless it runs
// the broken revision.
func (w *world) node(name string, c lifecycle.NodeConfig) lifecycle.Node {
	n := lifecycle.Node{Name: name, OnDisk: c, ConfigHash: hashOf(c), Plugins: map[string]lifecycle.PluginHealth{}}
	ready := true
	for _, p := range c.Pods {
		ok := p != w.broken
		n.Plugins[p.Provider] = lifecycle.PluginHealth{Running: p, StatusOK: true, PreflightOK: ok}
		ready = ready && ok
	}
	n.APIServer = lifecycle.APIServerHealth{ReadyzKMS: ready, LoadedConfigHash: n.ConfigHash}
	return n
}

// observe is the observer's contract: load the shared state, observe and
// publish the local nodes, then the others as published.
func (w *world) observe(ctx context.Context) (rollout.Observed, clusterstate.State, error) {
	w.now = w.now.Add(time.Minute)
	st := w.load()
	o := rollout.Observed{Desired: w.desired, Now: w.now}
	changed := false
	for _, name := range w.order {
		if w.local[name] {
			changed = st.Publish(w.node(name, w.disk[name]), w.now) || changed
		}
	}
	if changed {
		var err error
		if st, err = w.save(ctx, st); err != nil {
			return o, st, err
		}
	}
	for _, name := range w.order {
		c := w.disk[name]
		if !w.local[name] {
			p, ok := st.Nodes[name]
			if !ok {
				return o, st, fmt.Errorf("node %s has not been observed", name)
			}
			c = p.OnDisk
		}
		o.Nodes = append(o.Nodes, w.node(name, c))
	}
	o.Progress = st.Progress
	return o, st, nil
}

func (w *world) load() clusterstate.State {
	st := w.shared
	st.Progress.LastKnownGood = maps.Clone(st.Progress.LastKnownGood)
	st.Nodes = maps.Clone(st.Nodes)
	return st
}

func (w *world) save(_ context.Context, st clusterstate.State) (clusterstate.State, error) {
	w.saves++
	if w.conflict[w.saves] {
		w.version++ // another kmsctl wrote first
		w.shared.ResourceVersion = strconv.Itoa(w.version)
		w.log = append(w.log, "save refused: conflict")
		return clusterstate.State{}, fmt.Errorf("save: %w", clusterstate.ErrConflict)
	}
	if st.ResourceVersion != w.shared.ResourceVersion {
		w.log = append(w.log, "save refused: stale version")
		return clusterstate.State{}, fmt.Errorf("save: %w", clusterstate.ErrConflict)
	}
	w.version++
	st.ResourceVersion = strconv.Itoa(w.version)
	if in := st.Progress.InFlight; in != nil && (w.shared.Progress.InFlight == nil || !reflect.DeepEqual(*in, *w.shared.Progress.InFlight)) {
		w.log = append(w.log, "save in flight: "+string(in.Action)+" "+in.Node)
	}
	for n, c := range st.Progress.LastKnownGood {
		if old, ok := w.shared.Progress.LastKnownGood[n]; !ok || !old.Equal(c) {
			w.log = append(w.log, "save last-known-good "+n)
		}
	}
	w.shared = st
	return w.load(), nil
}

// Apply and LastKnownGood are the state directory's (nodefs.Store's).
func (w *world) Apply(f nodefs.NodeFiles, s rollout.Step, _ nodefs.Rendered) error {
	if !w.local[f.Name] || f.Name != s.Node {
		return fmt.Errorf("applied %s to files of node %s", s, f.Name)
	}
	w.log = append(w.log, "files: "+string(s.Action)+" "+s.Node)
	switch s.Action {
	case rollout.Confirm:
		if !w.disk[s.Node].Equal(s.Config) {
			return errors.New("confirm: files differ")
		}
		w.kept[s.Node] = s.Config
	case rollout.RollBack:
		if !w.kept[s.Node].Equal(s.Config) {
			return errors.New("roll back: kept files differ")
		}
		w.disk[s.Node] = s.Config
	default:
		w.disk[s.Node] = rollout.ApplyTo(w.disk[s.Node], s)
	}
	return nil
}

func (w *world) LastKnownGood(node string) (lifecycle.NodeConfig, bool, error) {
	c, ok := w.kept[node]
	return c, ok, nil
}

// run drives w as `rollout apply` (only "") or `rollout node --node only`.
func (w *world) run(t *testing.T, only string) (string, error) {
	t.Helper()
	local := map[string]nodefs.NodeFiles{}
	for _, n := range w.order {
		if only == "" || n == only {
			w.local[n] = true
			local[n] = nodefs.NodeFiles{Name: n}
		}
	}
	var out bytes.Buffer
	d := &driver{only: only, observe: w.observe, save: w.save, files: w, local: local, stateDir: "/state", poll: time.Millisecond, out: &out}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := d.run(ctx)
	return out.String(), err
}

func TestDriver(t *testing.T) {
	inFlightOn := func(node string) func(*world) {
		return func(w *world) {
			s := rollout.Step{Action: rollout.WritePod, Node: node, Revision: rev2}
			w.shared.Progress.InFlight, w.shared.Progress.StartedAt = &s, t0
			w.shared.Publish(w.node(node, w.disk[node]), t0)
			w.shared.ResourceVersion, w.version = "1", 1
		}
	}
	published := func(nodes ...string) func(*world) {
		return func(w *world) {
			for _, n := range nodes {
				w.shared.Publish(w.node(n, w.disk[n]), t0)
			}
			w.shared.ResourceVersion, w.version = "1", 1
		}
	}
	tests := []struct {
		name    string
		desired lifecycle.Revision
		only    string
		setup   func(*world)
		want    []string
		out     string // the last line says
		err     string // "" means exit 0
	}{
		{
			name: "apply, in place on a and b => every node confirmed, written and confirmed, done", desired: rev2,
			want: []string{
				"files: confirm a", "save last-known-good a",
				"save in flight: write-pod a", "files: write-pod a",
				"files: confirm a", "save last-known-good a",
				"files: confirm b", "save last-known-good b",
				"save in flight: write-pod b", "files: write-pod b",
				"files: confirm b", "save last-known-good b",
			},
			out: "] done: revision 2 runs on every node",
		},
		{
			name: "node a, in place, b published => a only, done saying b still needs the pod", desired: rev2, only: "a", setup: published("b"),
			want: []string{
				"files: confirm a", "save last-known-good a",
				"save in flight: write-pod a", "files: write-pod a",
				"files: confirm a", "save last-known-good a",
			},
			out: "done node=a: node a has nothing left to do; write the desired static pod on node b",
		},
		{
			name: "node a, b never published => refused before deciding, a published", desired: rev2, only: "a",
			err: "node b has not been observed",
		},
		{
			name: "node a while b has a step in flight => refused, a's files untouched", desired: rev2, only: "a", setup: inFlightOn("b"),
			out: "refuse: node b has a step in flight", err: "rollout refused: node b has a step in flight",
		},
		{
			name: "node a, another kmsctl writes just before a's step goes in flight => nothing written, observed again", desired: rev2, only: "a",
			setup: func(w *world) { published("b")(w); w.conflict[3] = true },
			want: []string{
				"files: confirm a", "save last-known-good a",
				"save refused: conflict",
				"save in flight: write-pod a", "files: write-pod a",
				"files: confirm a", "save last-known-good a",
			},
			out: "done node=a",
		},
		{
			name: "node a, new key => a's pod, then done for now: the cluster's next step is b's pod", desired: newKey, only: "a", setup: published("b"),
			want: []string{
				"files: confirm a", "save last-known-good a",
				"save in flight: write-pod a", "files: write-pod a",
				"files: confirm a", "save last-known-good a",
			},
			out: "done node=a: nothing more on this node for now (node a is ready to add the desired provider read-only, but the cluster is not: write the desired static pod on node b first); the cluster's next step: confirm node=b",
		},
		{
			name: "node a, new key, a already a phase ahead => refused, nothing changed", desired: newKey, only: "a",
			setup: func(w *world) {
				w.disk["a"] = rollout.ApplyTo(onRev1, rollout.Step{Action: rollout.WritePod, Node: "a", Revision: newKey})
				w.kept["a"] = w.disk["a"]
				w.shared.Progress.LastKnownGood["a"] = w.disk["a"]
				published("a", "b")(w)
			},
			err: "rollout refused: node a is ready to add the desired provider read-only, but the cluster is not",
		},
		{
			name: "node a, broken revision => rolled back, confirmed, exits saying so", desired: rev2, only: "a",
			setup: func(w *world) { published("b")(w); w.broken = rev2 },
			want: []string{
				"files: confirm a", "save last-known-good a",
				"save in flight: write-pod a", "files: write-pod a",
				"save in flight: roll-back a", "files: roll-back a",
				"files: confirm a",
			},
			err: "rolled back to the last-known-good files: revision 2/vault-a-11111111 was rolled back on node a",
		},
		{
			name: "node a, last-known-good confirmed by a kmsctl elsewhere, a on it => kept here first", desired: rev2, only: "a",
			setup: func(w *world) { w.shared.Progress.LastKnownGood["a"] = onRev1; published("b")(w) },
			want: []string{
				"files: confirm a",
				"save in flight: write-pod a", "files: write-pod a",
				"files: confirm a", "save last-known-good a",
			},
			out: "done node=a",
		},
		{
			name: "node a timed out, its last-known-good kept elsewhere => refused before the rollback goes in flight", desired: rev2, only: "a",
			setup: func(w *world) {
				w.broken = rev2
				w.disk["a"] = rollout.ApplyTo(onRev1, rollout.Step{Action: rollout.WritePod, Node: "a", Revision: rev2})
				w.shared.Progress.LastKnownGood["a"] = onRev1
				inFlightOn("a")(w)
				published("b")(w)
			},
			want: nil,
			err:  "roll-back needs node a's last-known-good files [pods 1/vault-a-11111111; providers vault-a-11111111,identity], which are not in /state/nodes/a",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(tt.desired, "a", "b")
			if tt.setup != nil {
				tt.setup(w)
			}
			before := maps.Clone(w.disk)
			out, err := w.run(t, tt.only)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err = %v, want %q\n%s", err, tt.err, out)
			}
			if got := w.log; !sameLog(got, tt.want) {
				t.Errorf("actions:\n  %s\nwant:\n  %s\noutput:\n%s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "), out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if tt.out != "" && !strings.Contains(lines[len(lines)-1], tt.out) {
				t.Errorf("last line %q, want %q\n%s", lines[len(lines)-1], tt.out, out)
			}
			if tt.only != "" {
				for n, c := range w.disk {
					if n != tt.only && !c.Equal(before[n]) {
						t.Errorf("node %s's files changed by `rollout node --node %s`", n, tt.only)
					}
				}
				if _, ok := w.shared.Nodes[tt.only]; !ok {
					t.Errorf("node %s was not published", tt.only)
				}
			}
		})
	}
}

// sameLog compares action logs (saves that only publish are not logged).
func sameLog(got, want []string) bool {
	return strings.Join(got, "|") == strings.Join(want, "|")
}

func TestRecorded(t *testing.T) {
	write := rollout.Step{Action: rollout.WritePod, Node: "a", Revision: rev2}
	back := rollout.Step{Action: rollout.RollBack, Node: "a", Config: onRev1, Reason: "not healthy"}
	confirm := rollout.Step{Action: rollout.Confirm, Node: "a", Config: onRev1}
	start := rollout.Progress{LastKnownGood: map[string]lifecycle.NodeConfig{"b": onRev1}}
	inFlight := rollout.Progress{InFlight: &write, StartedAt: t0, LastKnownGood: map[string]lifecycle.NodeConfig{}}
	tests := []struct {
		name string
		p    rollout.Progress
		s    rollout.Step
		want rollout.Progress
	}{
		{name: "a change => in flight since now, the rest kept", p: start, s: write,
			want: rollout.Progress{InFlight: &write, StartedAt: t0.Add(time.Hour), LastKnownGood: map[string]lifecycle.NodeConfig{"b": onRev1}}},
		{name: "a rollback => in flight, and the desired revision recorded as failed", p: inFlight, s: back,
			want: rollout.Progress{InFlight: &back, StartedAt: t0.Add(time.Hour), LastKnownGood: map[string]lifecycle.NodeConfig{},
				Failed: &rollout.Failure{Revision: rev2, Node: "a", Reason: "not healthy"}}},
		{name: "confirm => last-known-good recorded, nothing in flight", p: inFlight, s: confirm,
			want: rollout.Progress{LastKnownGood: map[string]lifecycle.NodeConfig{"a": onRev1}}},
		{name: "confirm on a progress never saved => a map made", p: rollout.Progress{}, s: confirm,
			want: rollout.Progress{LastKnownGood: map[string]lifecycle.NodeConfig{"a": onRev1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := fmt.Sprintf("%+v", tt.p.LastKnownGood)
			got := recorded(tt.p, tt.s, t0.Add(time.Hour), rev2)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if after := fmt.Sprintf("%+v", tt.p.LastKnownGood); after != before {
				t.Errorf("the observed progress was modified: %s, was %s", after, before)
			}
		})
	}
}

func TestLKGVerdict(t *testing.T) {
	onRev2 := rollout.ApplyTo(onRev1, rollout.Step{Action: rollout.WritePod, Node: "a", Revision: rev2})
	tests := []struct {
		name     string
		recorded *lifecycle.NodeConfig
		kept     *lifecycle.NodeConfig
		onDisk   lifecycle.NodeConfig
		want     lkgState
	}{
		{name: "none recorded => nothing to check (the planner confirms a baseline first)", onDisk: onRev2, want: lkgKept},
		{name: "kept here what is recorded => fine", recorded: &onRev1, kept: &onRev1, onDisk: onRev2, want: lkgKept},
		{name: "not kept here, files on disk are it => keep them now", recorded: &onRev1, onDisk: onRev1, want: lkgKeepNow},
		{name: "kept here an older set, files on disk are the recorded one => keep them now", recorded: &onRev2, kept: &onRev1, onDisk: onRev2, want: lkgKeepNow},
		{name: "not kept here, node moved on => missing", recorded: &onRev1, onDisk: onRev2, want: lkgMissing},
		{name: "kept here another set, node moved on => missing", recorded: &onRev1, kept: &onRev2, onDisk: onRev2, want: lkgMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want, have lifecycle.NodeConfig
			if tt.recorded != nil {
				want = *tt.recorded
			}
			if tt.kept != nil {
				have = *tt.kept
			}
			if got := lkgVerdict(want, tt.recorded != nil, have, tt.kept != nil, tt.onDisk); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestDoneForNow(t *testing.T) {
	tests := []struct {
		name       string
		cluster    rollout.Step
		progressed bool
		want       bool
	}{
		{name: "moved the node, cluster's next step on another node => done for now", cluster: rollout.Step{Action: rollout.WritePod, Node: "b"}, progressed: true, want: true},
		{name: "moved the node, cluster waits for another node => done for now", cluster: rollout.Step{Action: rollout.Wait, Node: "b"}, progressed: true, want: true},
		{name: "nothing moved yet => the refusal stands", cluster: rollout.Step{Action: rollout.WritePod, Node: "b"}},
		{name: "cluster refused too => the refusal stands", cluster: rollout.Step{Action: rollout.Refuse}, progressed: true},
		{name: "cluster's next step is on this node => the refusal stands", cluster: rollout.Step{Action: rollout.Promote, Node: "a"}, progressed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := doneForNow("a", tt.cluster, tt.progressed); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestUnpublished(t *testing.T) {
	nodes := []config.NodeFiles{{Name: "a"}, {Name: "b"}}
	seen := clusterstate.NodeState{ConfigHash: "sha256:cc", ObservedAt: t0}
	tests := []struct {
		name      string
		local     map[string]bool
		published map[string]clusterstate.NodeState
		want      string
	}{
		{name: "apply: every node local => nothing needed", local: map[string]bool{"a": true, "b": true}},
		{name: "node a, b published => fine", local: map[string]bool{"a": true}, published: map[string]clusterstate.NodeState{"b": seen}},
		{name: "node a, b never published => refused, naming the command to run on b", local: map[string]bool{"a": true},
			want: "node b has not been observed by kmsctl yet: run `kmsctl rollout node --node b` there first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := unpublished(nodes, tt.local, tt.published)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestLegacyInFlight(t *testing.T) {
	if err := legacyInFlight(rollout.Progress{LastKnownGood: map[string]lifecycle.NodeConfig{"a": onRev1}}, "/state"); err != nil {
		t.Errorf("a progress.json with nothing in flight: %v, want it ignored", err)
	}
	s := rollout.Step{Action: rollout.WritePod, Node: "a", Revision: rev2}
	err := legacyInFlight(rollout.Progress{InFlight: &s, StartedAt: t0}, "/state")
	if err == nil || !strings.Contains(err.Error(), "/state/progress.json records a step in flight (write-pod node=a") {
		t.Errorf("a progress.json with a step in flight: %v, want a refusal naming it", err)
	}
}
