package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
)

// Provider names in the tables: the current key and a new one.
const (
	oldP = "vault-old-11111111"
	newP = "vault-new-22222222"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// rev is revision name of provider, with an image and flags of its own.
func rev(name, provider string) lifecycle.Revision {
	return lifecycle.Revision{Name: name, Provider: provider, ImageDigest: "sha256:image-" + name, ArgsHash: "sha256:args-" + name + "-" + provider}
}

// providers is a provider list; "identity" is the identity provider, any
// other name a KMS provider.
func providers(names ...string) []lifecycle.Provider {
	out := make([]lifecycle.Provider, 0, len(names))
	for _, n := range names {
		out = append(out, lifecycle.Provider{Name: n, KMS: n != lifecycle.IdentityProvider})
	}
	return out
}

// hashOf stands for the sha256 of the EncryptionConfiguration that lists ps.
func hashOf(ps []lifecycle.Provider) string {
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	sum := sha256.Sum256([]byte(strings.Join(names, ",")))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// node is a healthy node with pods and a provider list on disk: every
// plugin runs its pod's revision and passes, and the API server is ready
// with the file on disk loaded.
func node(name string, pods []lifecycle.Revision, list ...string) lifecycle.Node {
	n := lifecycle.Node{
		Name:    name,
		OnDisk:  lifecycle.NodeConfig{Pods: pods, Providers: providers(list...)},
		Plugins: map[string]lifecycle.PluginHealth{},
	}
	for _, p := range pods {
		n.Plugins[p.Provider] = lifecycle.PluginHealth{Running: p, StatusOK: true, PreflightOK: true}
	}
	n.ConfigHash = hashOf(n.OnDisk.Providers)
	n.APIServer = lifecycle.APIServerHealth{ReadyzKMS: true, LoadedConfigHash: n.ConfigHash}
	return n
}

// pods is a pod list.
func pods(rs ...lifecycle.Revision) []lifecycle.Revision { return rs }

// observed is desired over nodes, each with its on-disk config as its
// last-known-good, at t0, nothing in flight.
func observed(desired lifecycle.Revision, nodes ...lifecycle.Node) Observed {
	o := Observed{Desired: desired, Nodes: nodes, Now: t0, Progress: Progress{LastKnownGood: map[string]lifecycle.NodeConfig{}}}
	for _, n := range nodes {
		o.Progress.LastKnownGood[n.Name] = n.OnDisk
	}
	return o
}

// threeAt is three healthy nodes a, b, c with the same pods and list.
func threeAt(ps []lifecycle.Revision, list ...string) []lifecycle.Node {
	return []lifecycle.Node{node("a", ps, list...), node("b", ps, list...), node("c", ps, list...)}
}

// inFlight records s as started at t0 and sets Now to t0+elapsed.
func inFlight(o Observed, s Step, elapsed time.Duration) Observed {
	o.Progress.InFlight = &s
	o.Progress.StartedAt = t0
	o.Now = t0.Add(elapsed)
	return o
}

// with returns o after f changed node name.
func with(o Observed, name string, f func(n *lifecycle.Node)) Observed {
	nodes := append([]lifecycle.Node(nil), o.Nodes...)
	for i := range nodes {
		if nodes[i].Name == name {
			n := nodes[i]
			n.Plugins = map[string]lifecycle.PluginHealth{}
			for k, v := range nodes[i].Plugins {
				n.Plugins[k] = v
			}
			f(&n)
			nodes[i] = n
		}
	}
	o.Nodes = nodes
	return o
}

// stepCase is one row of a decision table.
type stepCase struct {
	name     string
	observed Observed
	// node, when set, asks NextFor instead of Next.
	node string
	want Step
	// wantReason is a part of the reason, when it matters.
	wantReason string
}

// run checks every row: the step's action and target must match want
// exactly; its reason must contain wantReason.
func run(t *testing.T, cases []stepCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got Step
			if tc.node != "" {
				got = NextFor(tc.observed, tc.node)
			} else {
				got = Next(tc.observed)
			}
			want := tc.want
			if !got.same(want) {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
			if !strings.Contains(got.Reason, tc.wantReason) {
				t.Fatalf("reason %q does not contain %q", got.Reason, tc.wantReason)
			}
		})
	}
}
