package rollout

import (
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
)

var (
	r1     = rev("r1", oldP)
	r2     = rev("r2", oldP)
	q1     = rev("q1", newP)
	onR1   = threeAt(pods(r1), oldP)
	onBoth = pods(r1, q1)
)

// RULE 1
func TestNextRefusesIncompleteObservations(t *testing.T) {
	dup := observed(r2, onR1...)
	dup.Nodes = append(dup.Nodes, dup.Nodes[0])
	run(t, []stepCase{
		{name: "no desired revision => refuse", observed: observed(lifecycle.Revision{}, onR1...), want: Step{Action: Refuse}, wantReason: "no desired revision"},
		{name: "no nodes => refuse", observed: observed(r2), want: Step{Action: Refuse}, wantReason: "no nodes"},
		{name: "a node listed twice => refuse", observed: dup, want: Step{Action: Refuse}, wantReason: "listed twice"},
		{name: "NextFor an unknown node => refuse", observed: observed(r2, onR1...), node: "z", want: Step{Action: Refuse}, wantReason: "not in the node list"},
	})
}

// RULE 2
func TestNextStepInFlight(t *testing.T) {
	writeB := Step{Action: WritePod, Node: "b", Revision: r2}
	// b has r2 on disk: a is done, b's write landed.
	landed := with(observed(r2, node("a", pods(r2), oldP), node("b", pods(r1), oldP), node("c", pods(r1), oldP)), "b", func(n *lifecycle.Node) {
		n.OnDisk.Pods = pods(r2)
	})
	healthy := with(landed, "b", func(n *lifecycle.Node) {
		n.Plugins[oldP] = lifecycle.PluginHealth{Running: r2, StatusOK: true, PreflightOK: true}
	})
	failing := with(landed, "b", func(n *lifecycle.Node) {
		n.Plugins[oldP] = lifecycle.PluginHealth{Running: r2, StatusOK: true, Err: "vault: connection refused"}
	})
	notLanded := observed(r2, node("a", pods(r2), oldP), node("b", pods(r1), oldP), node("c", pods(r1), oldP))
	lkgB := lifecycle.NodeConfig{Pods: pods(r1), Providers: providers(oldP)}
	rollback := Step{Action: RollBack, Node: "b", Config: lkgB, Reason: "x"}
	noLKG := inFlight(failing, writeB, 6*time.Minute)
	noLKG.Progress.LastKnownGood = nil
	// Node a already writes with newP; b's last-known-good predates newP.
	promoteB := Step{Action: Promote, Node: "b", Provider: newP}
	unsafeRollback := inFlight(observed(q1,
		node("a", onBoth, newP, oldP),
		with(observed(q1, node("b", onBoth, newP, oldP)), "b", func(n *lifecycle.Node) { n.APIServer.ReadyzKMS = false }).Nodes[0],
		node("c", onBoth, oldP, newP)), promoteB, 6*time.Minute)
	unsafeRollback.Progress.LastKnownGood["b"] = lifecycle.NodeConfig{Pods: pods(r1), Providers: providers(oldP)}

	run(t, []stepCase{
		{name: "write not landed (killed before it) => the same step again", observed: inFlight(notLanded, writeB, time.Minute), want: writeB, wantReason: "resume"},
		{name: "write not landed and another node unhealthy => wait", observed: inFlight(with(notLanded, "c", func(n *lifecycle.Node) { n.APIServer.ReadyzKMS = false }), writeB, time.Minute), want: Step{Action: Wait, Node: "c"}},
		{name: "write not landed and no longer the next step => refuse", observed: inFlight(notLanded, Step{Action: WritePod, Node: "c", Revision: r2}, time.Minute), want: Step{Action: Refuse}, wantReason: "no longer the next step"},
		{name: "landed and healthy => confirm", observed: inFlight(healthy, writeB, time.Minute), want: Step{Action: Confirm, Node: "b", Config: lifecycle.NodeConfig{Pods: pods(r2), Providers: providers(oldP)}}},
		{name: "landed, old process still answering, within timeout => wait", observed: inFlight(landed, writeB, time.Minute), want: Step{Action: Wait, Node: "b"}, wantReason: "runs r1/" + oldP + ", not r2/"},
		{name: "landed, preflight failing, within timeout => wait", observed: inFlight(failing, writeB, 5*time.Minute), want: Step{Action: Wait, Node: "b"}, wantReason: "preflight"},
		{name: "landed, preflight failing, timed out => roll back b to last-known-good", observed: inFlight(failing, writeB, 5*time.Minute+time.Second), want: Step{Action: RollBack, Node: "b", Config: lkgB}, wantReason: "connection refused"},
		{name: "custom timeout exceeded => roll back", observed: func() Observed { o := inFlight(failing, writeB, 2*time.Minute); o.StepTimeout = time.Minute; return o }(), want: Step{Action: RollBack, Node: "b", Config: lkgB}},
		{name: "timed out without a last-known-good => refuse", observed: noLKG, want: Step{Action: Refuse}, wantReason: "no last-known-good"},
		{name: "timed out, last-known-good lacks a provider another node writes with => refuse", observed: unsafeRollback, want: Step{Action: Refuse}, wantReason: "which node a writes with"},
		{name: "rollback not landed => the rollback again", observed: inFlight(failing, rollback, time.Minute), want: Step{Action: RollBack, Node: "b", Config: lkgB}, wantReason: "resume"},
		{name: "rollback landed and healthy => confirm", observed: inFlight(notLanded, rollback, time.Minute), want: Step{Action: Confirm, Node: "b", Config: lkgB}, wantReason: "rolled back"},
		{name: "rollback landed, unhealthy, timed out => refuse, never loop", observed: inFlight(with(notLanded, "b", func(n *lifecycle.Node) { n.APIServer.ReadyzKMS = false }), rollback, 6*time.Minute), want: Step{Action: Refuse}, wantReason: "needs an operator"},
		{name: "in flight on a node missing from the list => refuse", observed: inFlight(notLanded, Step{Action: WritePod, Node: "z", Revision: r2}, 0), want: Step{Action: Refuse}, wantReason: "not in the node list"},
		{name: "persisted step that changes nothing => refuse", observed: inFlight(notLanded, Step{Action: Wait, Node: "b"}, 0), want: Step{Action: Refuse}, wantReason: "not one that changes a node"},
		{name: "NextFor another node while b is in flight => refuse (one node at a time)", observed: inFlight(landed, writeB, time.Minute), node: "c", want: Step{Action: Refuse}, wantReason: "one node at a time"},
		{name: "NextFor the node in flight => its wait", observed: inFlight(landed, writeB, time.Minute), node: "b", want: Step{Action: Wait, Node: "b"}},
	})
}

// RULE 3
func TestNextFailedRevision(t *testing.T) {
	o := observed(r2, onR1...)
	o.Progress.Failed = &Failure{Revision: r2, Node: "b", Reason: "preflight failed"}
	r3 := observed(rev("r3", oldP), onR1...)
	r3.Progress.Failed = o.Progress.Failed
	run(t, []stepCase{
		{name: "desired is the rolled-back revision => refuse", observed: o, want: Step{Action: Refuse}, wantReason: "render a new revision"},
		{name: "desired is a newer revision => go on", observed: r3, want: Step{Action: WritePod, Node: "a", Revision: rev("r3", oldP)}},
	})
}

// RULE 4
func TestNextUnreadableWriteProvider(t *testing.T) {
	run(t, []stepCase{
		{
			name:     "a node writes with a provider another node does not list => refuse",
			observed: observed(q1, node("a", onBoth, newP, oldP), node("b", pods(r1), oldP), node("c", onBoth, oldP, newP)),
			want:     Step{Action: Refuse}, wantReason: "node a writes with provider " + newP + ", which node b does not list",
		},
		{
			name:     "identity writes everywhere, listed everywhere => go on",
			observed: observed(r1, threeAt(nil, lifecycle.IdentityProvider)...),
			want:     Step{Action: WritePod, Node: "a", Revision: r1},
		},
	})
}

// RULE 5
func TestNextReusedLabel(t *testing.T) {
	other := r2
	other.ImageDigest = "sha256:image-other"
	run(t, []stepCase{
		{name: "a pod has the desired label with another image => refuse", observed: observed(r2, node("a", pods(other), oldP), node("b", pods(r1), oldP)), want: Step{Action: Refuse}, wantReason: "new revision"},
	})
}

// RULE 6
func TestNextUnhealthyNode(t *testing.T) {
	base := observed(r2, onR1...)
	run(t, []stepCase{
		{name: "a plugin does not answer => wait", observed: with(base, "b", func(n *lifecycle.Node) { delete(n.Plugins, oldP) }), want: Step{Action: Wait, Node: "b"}, wantReason: "does not answer"},
		{name: "a plugin's revision is unknown => wait", observed: with(base, "b", func(n *lifecycle.Node) { n.Plugins[oldP] = lifecycle.PluginHealth{StatusOK: true, PreflightOK: true} }), want: Step{Action: Wait, Node: "b"}, wantReason: "unknown revision"},
		{name: "no Ready pod of the plugin, Status failing => wait, saying why", observed: with(base, "b", func(n *lifecycle.Node) {
			n.Plugins[oldP] = lifecycle.PluginHealth{Err: "Status: vault login: connection refused"}
		}), want: Step{Action: Wait, Node: "b"}, wantReason: "unknown revision, not " + r1.String() + ": Status: vault login: connection refused"},
		{name: "Status not ok => wait", observed: with(base, "c", func(n *lifecycle.Node) {
			n.Plugins[oldP] = lifecycle.PluginHealth{Running: r1, Err: "healthz: vault sealed"}
		}), want: Step{Action: Wait, Node: "c"}, wantReason: "vault sealed"},
		{name: "readyz kms-providers not ok => wait", observed: with(base, "a", func(n *lifecycle.Node) { n.APIServer.ReadyzKMS = false }), want: Step{Action: Wait, Node: "a"}, wantReason: "readyz"},
		{name: "API server has not loaded the file on disk => wait", observed: with(base, "a", func(n *lifecycle.Node) { n.APIServer.LoadedConfigHash = "sha256:0000000000000000" }), want: Step{Action: Wait, Node: "a"}, wantReason: "not sha256:"},
		{name: "listed KMS provider with no pod and no socket => wait", observed: with(base, "a", func(n *lifecycle.Node) {
			n.OnDisk.Providers = providers(oldP, "vault-sidecar-33333333")
			n.ConfigHash = hashOf(n.OnDisk.Providers)
			n.APIServer.LoadedConfigHash = n.ConfigHash
		}), want: Step{Action: Wait, Node: "a"}, wantReason: "vault-sidecar-33333333 does not answer"},
		{name: "NextFor a while another node is unhealthy => refuse", observed: with(base, "c", func(n *lifecycle.Node) { n.APIServer.ReadyzKMS = false }), node: "a", want: Step{Action: Refuse}, wantReason: "not ready"},
		{name: "NextFor the unhealthy node itself => wait", observed: with(base, "c", func(n *lifecycle.Node) { n.APIServer.ReadyzKMS = false }), node: "c", want: Step{Action: Wait, Node: "c"}},
	})
}

// RULE 7
func TestNextPhases(t *testing.T) {
	run(t, []stepCase{
		// In place.
		{name: "in place, no node at r2 => write r2 on a", observed: observed(r2, onR1...), want: Step{Action: WritePod, Node: "a", Revision: r2}, wantReason: "in place"},
		{name: "in place, a at r2 => write r2 on b", observed: observed(r2, node("a", pods(r2), oldP), node("b", pods(r1), oldP), node("c", pods(r1), oldP)), want: Step{Action: WritePod, Node: "b", Revision: r2}},
		{name: "in place, a and c at r2 => write r2 on b (order of the list)", observed: observed(r2, node("a", pods(r2), oldP), node("b", pods(r1), oldP), node("c", pods(r2), oldP)), want: Step{Action: WritePod, Node: "b", Revision: r2}},
		// New provider.
		{name: "new provider, no node runs it => its pod beside the old on a", observed: observed(q1, onR1...), want: Step{Action: WritePod, Node: "a", Revision: q1}, wantReason: "beside"},
		{name: "new provider, pods on a and b => pod on c before any config change", observed: observed(q1, node("a", onBoth, oldP), node("b", onBoth, oldP), node("c", pods(r1), oldP)), want: Step{Action: WritePod, Node: "c", Revision: q1}},
		{name: "new provider, pods everywhere => add read-only on a after the write provider", observed: observed(q1, threeAt(onBoth, oldP)...), want: Step{Action: AddReadOnly, Node: "a", Provider: newP, After: oldP}},
		{name: "new provider after identity (first enable) => add read-only after identity", observed: observed(q1, threeAt(pods(q1), lifecycle.IdentityProvider)...), want: Step{Action: AddReadOnly, Node: "a", Provider: newP, After: lifecycle.IdentityProvider}},
		{name: "new provider listed on a only => add read-only on b", observed: observed(q1, node("a", onBoth, oldP, newP), node("b", onBoth, oldP), node("c", onBoth, oldP)), want: Step{Action: AddReadOnly, Node: "b", Provider: newP, After: oldP}},
		{name: "listed read-only everywhere and loaded => promote on a", observed: observed(q1, threeAt(onBoth, oldP, newP)...), want: Step{Action: Promote, Node: "a", Provider: newP}},
		{name: "promoted on a => promote on b", observed: observed(q1, node("a", onBoth, newP, oldP), node("b", onBoth, oldP, newP), node("c", onBoth, oldP, newP)), want: Step{Action: Promote, Node: "b", Provider: newP}},
		{name: "listed everywhere, c's API server not loaded => wait, no promote (invariant 1)", observed: with(observed(q1, threeAt(onBoth, oldP, newP)...), "c", func(n *lifecycle.Node) { n.APIServer.LoadedConfigHash = hashOf(providers(oldP)) }), want: Step{Action: Wait, Node: "c"}},
		{name: "in-place revision of the new provider mid-rollout => pod first, before promoting", observed: observed(rev("q2", newP), threeAt(onBoth, oldP, newP)...), want: Step{Action: WritePod, Node: "a", Revision: rev("q2", newP)}},
	})
}

// RULE 8
func TestNextBaseline(t *testing.T) {
	o := observed(r2, onR1...)
	delete(o.Progress.LastKnownGood, "a")
	noneAtAll := observed(r2, onR1...)
	noneAtAll.Progress.LastKnownGood = nil
	run(t, []stepCase{
		{name: "first node has no last-known-good => confirm its config first", observed: o, want: Step{Action: Confirm, Node: "a", Config: onR1[0].OnDisk}},
		{name: "no progress at all => confirm the first node only", observed: noneAtAll, want: Step{Action: Confirm, Node: "a", Config: onR1[0].OnDisk}},
		{name: "b has none but a is next => write on a", observed: func() Observed { o := observed(r2, onR1...); delete(o.Progress.LastKnownGood, "b"); return o }(), want: Step{Action: WritePod, Node: "a", Revision: r2}},
	})
}

// RULE 9
func TestNextRetire(t *testing.T) {
	promoted := threeAt(onBoth, newP, oldP)
	retire := func(o Observed, p string, empty bool) Observed {
		o.Retire, o.OldProviderEmpty = p, empty
		return o
	}
	run(t, []stepCase{
		{name: "retire without a scan => refuse", observed: retire(observed(q1, promoted...), oldP, false), want: Step{Action: Refuse}, wantReason: "kmsctl migrate --from-provider " + oldP},
		{name: "retire the desired provider => refuse", observed: retire(observed(q1, promoted...), newP, true), want: Step{Action: Refuse}, wantReason: "desired provider"},
		{name: "retire a provider a node writes with => refuse", observed: retire(observed(q1, node("a", onBoth, newP, oldP), node("b", onBoth, oldP, newP)), oldP, true), want: Step{Action: Refuse}, wantReason: "node b still writes"},
		{name: "retire while b's API server still runs an older file => wait for b, whatever the scan says", observed: retire(with(observed(q1, promoted...), "b", func(n *lifecycle.Node) { n.APIServer.LoadedConfigHash = "sha256:older" }), oldP, true), want: Step{Action: Wait, Node: "b"}, wantReason: "has not loaded"},
		{name: "NextFor a while b's API server still runs an older file => refuse", observed: retire(with(observed(q1, promoted...), "b", func(n *lifecycle.Node) { n.APIServer.LoadedConfigHash = "sha256:older" }), oldP, true), node: "a", want: Step{Action: Refuse}, wantReason: "node b has not loaded"},
		{name: "scan empty, promoted everywhere => remove it from a's config", observed: retire(observed(q1, promoted...), oldP, true), want: Step{Action: RemoveProvider, Node: "a", Provider: oldP}},
		{name: "removed from every config => remove its pod on a", observed: retire(observed(q1, threeAt(onBoth, newP)...), oldP, true), want: Step{Action: RemovePod, Node: "a", Provider: oldP}},
		{name: "removed from a and b, listed on c => c's config before any pod", observed: retire(observed(q1, node("a", onBoth, newP), node("b", onBoth, newP), node("c", onBoth, newP, oldP)), oldP, true), want: Step{Action: RemoveProvider, Node: "c", Provider: oldP}},
		{name: "retired everywhere => done", observed: retire(observed(q1, threeAt(pods(q1), newP)...), oldP, true), want: Step{Action: Done}},
	})
}

// The retire scan counts only once no API server can write with the
// provider: taken earlier, a late write could land after it.
func TestNothingWritesWith(t *testing.T) {
	node := func(name, hash, loaded string, providers ...string) lifecycle.Node {
		n := lifecycle.Node{Name: name, ConfigHash: hash, APIServer: lifecycle.APIServerHealth{LoadedConfigHash: loaded}}
		for _, p := range providers {
			n.OnDisk.Providers = append(n.OnDisk.Providers, lifecycle.Provider{Name: p, KMS: true})
		}
		return n
	}
	tests := []struct {
		name  string
		nodes []lifecycle.Node
		want  bool
	}{
		{name: "every node writes with new and runs its file => true", nodes: []lifecycle.Node{node("a", "h1", "h1", "new", "old"), node("b", "h2", "h2", "new", "old")}, want: true},
		{name: "b's file still writes with old => false", nodes: []lifecycle.Node{node("a", "h1", "h1", "new", "old"), node("b", "h2", "h2", "old", "new")}},
		{name: "b's API server runs an older file => false", nodes: []lifecycle.Node{node("a", "h1", "h1", "new", "old"), node("b", "h2", "h0", "new", "old")}},
		{name: "b's API server metric unread => false", nodes: []lifecycle.Node{node("a", "h1", "h1", "new", "old"), node("b", "h2", "", "new", "old")}},
		{name: "b's file unknown => false", nodes: []lifecycle.Node{node("a", "h1", "h1", "new", "old"), node("b", "", "", "new", "old")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NothingWritesWith(tt.nodes, "old"); got != tt.want {
				t.Errorf("NothingWritesWith = %v, want %v", got, tt.want)
			}
		})
	}
}

// RULE 10
func TestNextDone(t *testing.T) {
	run(t, []stepCase{
		{name: "in place, every node at r2 => done", observed: observed(r2, threeAt(pods(r2), oldP)...), want: Step{Action: Done}},
		{name: "new provider promoted everywhere => done, old stays listed", observed: observed(q1, threeAt(onBoth, newP, oldP)...), want: Step{Action: Done}, wantReason: oldP + " stay listed for reading"},
	})
}

// NextFor: the same rules, refusing what the cluster is not ready for.
func TestNextFor(t *testing.T) {
	run(t, []stepCase{
		{name: "in place, c before a => write on c (any order within a phase)", observed: observed(r2, onR1...), node: "c", want: Step{Action: WritePod, Node: "c", Revision: r2}},
		{name: "new provider, pods everywhere but b's API server lacks the read-only config => refuse to promote on a", observed: observed(q1, node("a", onBoth, oldP, newP), node("b", onBoth, oldP), node("c", onBoth, oldP, newP)), node: "a", want: Step{Action: Refuse}, wantReason: "add the desired provider read-only on node b first"},
		{name: "new provider, pod missing on c => refuse to add read-only on a", observed: observed(q1, node("a", onBoth, oldP), node("b", onBoth, oldP), node("c", pods(r1), oldP)), node: "a", want: Step{Action: Refuse}, wantReason: "on node c first"},
		{name: "node done, others not => done for this node", observed: observed(r2, node("a", pods(r2), oldP), node("b", pods(r1), oldP)), node: "a", want: Step{Action: Done, Node: "a"}, wantReason: "node b"},
		{name: "every node done => done", observed: observed(r2, threeAt(pods(r2), oldP)...), node: "b", want: Step{Action: Done, Node: "b"}},
		{name: "no last-known-good for this node => confirm it first", observed: func() Observed { o := observed(r2, onR1...); delete(o.Progress.LastKnownGood, "b"); return o }(), node: "b", want: Step{Action: Confirm, Node: "b", Config: onR1[1].OnDisk}},
	})
}
