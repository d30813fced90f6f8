package nodefs

import (
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
)

// cluster drives rollout.Next over real node files, following the
// package's ordering contract, with progress on disk. Health is simulated:
// kubelet runs every pod on disk at once and each API server loads its
// file at once; a broken revision fails its preflight.
type cluster struct {
	t       *testing.T
	st      *Store
	nodes   []NodeFiles
	desired *config.Config
	broken  lifecycle.Revision
	now     time.Time
	retire  string
	steps   []string
}

func (c *cluster) observe() rollout.Observed {
	c.t.Helper()
	p, err := LoadProgress(c.st.dir)
	if err != nil {
		c.t.Fatal(err)
	}
	o := rollout.Observed{Desired: render.Revision(c.desired), Progress: p, Now: c.now, Retire: c.retire, OldProviderEmpty: c.retire != ""}
	for _, f := range c.nodes {
		disk, hash, err := Observe(f)
		if err != nil {
			c.t.Fatal(err)
		}
		n := lifecycle.Node{Name: f.Name, OnDisk: disk, ConfigHash: hash, Plugins: map[string]lifecycle.PluginHealth{}}
		ready := true
		for _, r := range disk.Pods {
			ok := r != c.broken
			n.Plugins[r.Provider] = lifecycle.PluginHealth{Running: r, StatusOK: true, PreflightOK: ok}
			ready = ready && ok
		}
		n.APIServer = lifecycle.APIServerHealth{ReadyzKMS: ready, LoadedConfigHash: hash}
		o.Nodes = append(o.Nodes, n)
	}
	return o
}

// run applies steps until the planner is done or refuses, and returns
// that last step. A wait lets the clock run past the step timeout.
func (c *cluster) run() rollout.Step {
	c.t.Helper()
	r := Rendered{Pod: staticPod(c.t, c.desired), Provider: render.KMSProvider(c.desired)}
	for range 100 {
		o := c.observe()
		s := rollout.Next(o)
		c.steps = append(c.steps, string(s.Action)+" "+s.Node)
		f := c.node(s.Node)
		p := o.Progress
		switch s.Action {
		case rollout.Done, rollout.Refuse:
			return s
		case rollout.Wait:
			c.now = c.now.Add(rollout.DefaultStepTimeout + time.Second)
			continue
		case rollout.Confirm:
			if err := c.st.Apply(f, s, r); err != nil {
				c.t.Fatal(err)
			}
			p.LastKnownGood[s.Node], p.InFlight = s.Config, nil
		default:
			p.InFlight, p.StartedAt = &s, c.now
			if s.Action == rollout.RollBack {
				p.Failed = &rollout.Failure{Revision: o.Desired, Node: s.Node, Reason: s.Reason}
			}
		}
		if err := c.st.SaveProgress(p); err != nil {
			c.t.Fatal(err)
		}
		if s.Action != rollout.Confirm {
			if err := c.st.Apply(f, s, r); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	c.t.Fatalf("no end after 100 steps: %v", c.steps)
	return rollout.Step{}
}

func (c *cluster) node(name string) NodeFiles {
	for _, f := range c.nodes {
		if f.Name == name {
			return f
		}
	}
	return NodeFiles{Name: name}
}

func newCluster(t *testing.T, cfg *config.Config) *cluster {
	c := &cluster{t: t, st: open(t), now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	for _, name := range []string{"a", "b", "c"} {
		c.nodes = append(c.nodes, newNode(t, name, cfg, render.StaticPodFile, otherResources))
	}
	return c
}

// The planner's whole rollout of a new key, then its retirement, on three
// nodes' real files.
func TestPlannerDrivesANewKeyOverRealFiles(t *testing.T) {
	old := loadConfig(t, "enterprise")
	q := newKey(old, "q1")
	p, n := old.ProviderName(), q.ProviderName()
	c := newCluster(t, old)
	c.desired = q
	if s := c.run(); s.Action != rollout.Done {
		t.Fatalf("ended with %s\nsteps: %v", s, c.steps)
	}
	want := []string{
		"confirm a", "write-pod a", "confirm a", "confirm b", "write-pod b", "confirm b", "confirm c", "write-pod c", "confirm c",
		"add-read-only a", "confirm a", "add-read-only b", "confirm b", "add-read-only c", "confirm c",
		"promote a", "confirm a", "promote b", "confirm b", "promote c", "confirm c", "done ",
	}
	if strings.Join(c.steps, ",") != strings.Join(want, ",") {
		t.Fatalf("steps %v\nwant  %v", c.steps, want)
	}
	for _, f := range c.nodes {
		mustEqual(t, observe(t, f), lifecycle.NodeConfig{Pods: pods(render.Revision(old), render.Revision(q)), Providers: kms(n, p, lifecycle.IdentityProvider)})
		if !strings.HasSuffix(string(read(t, f.EncryptionConfigPath)), otherResources) {
			t.Errorf("node %s: the other resource entries changed", f.Name)
		}
	}

	c.retire, c.steps = p, nil
	if s := c.run(); s.Action != rollout.Done {
		t.Fatalf("retiring ended with %s\nsteps: %v", s, c.steps)
	}
	for _, f := range c.nodes {
		mustEqual(t, observe(t, f), lifecycle.NodeConfig{Pods: pods(render.Revision(q)), Providers: kms(n, lifecycle.IdentityProvider)})
	}
}

// A revision that never turns healthy is rolled back on its node to the
// exact bytes confirmed before, and the planner refuses to try it again.
func TestPlannerRollsBackABrokenRevisionOverRealFiles(t *testing.T) {
	r1 := loadConfig(t, "dev")
	r2 := inPlace(r1, "r2")
	c := newCluster(t, r1)
	c.desired, c.broken = r2, render.Revision(r2)
	before := snapshot(t, c.nodes[0])
	s := c.run()
	if s.Action != rollout.Refuse || !strings.Contains(s.Reason, "rolled back") {
		t.Fatalf("ended with %s, want a refusal to retry\nsteps: %v", s, c.steps)
	}
	want := []string{"confirm a", "write-pod a", "wait a", "roll-back a", "confirm a", "refuse "}
	if strings.Join(c.steps, ",") != strings.Join(want, ",") {
		t.Fatalf("steps %v\nwant  %v", c.steps, want)
	}
	sameFiles(t, snapshot(t, c.nodes[0]), before)
	p, err := LoadProgress(c.st.dir)
	if err != nil || p.Failed == nil || p.Failed.Revision != render.Revision(r2) || p.InFlight != nil {
		t.Fatalf("progress %+v, %v; want r2 recorded as failed, nothing in flight", p, err)
	}
}
