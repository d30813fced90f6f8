package rollout

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
)

// DefaultStepTimeout is how long a step may take to turn healthy when
// Observed.StepTimeout is zero: a pod start with an image pull, plus the
// API server's config reload (about once a minute) and a Status poll.
const DefaultStepTimeout = 5 * time.Minute

// Action is what a Step asks the driver to do.
type Action string

// The actions. The first six change one node's files; Confirm changes only
// the persisted Progress; the last three change nothing.
const (
	// WritePod writes the static pod of Step.Revision on Step.Node,
	// replacing the pod of the same provider if there is one.
	WritePod Action = "write-pod"
	// AddReadOnly inserts Step.Provider into Step.Node's
	// EncryptionConfiguration right after Step.After, the write provider.
	AddReadOnly Action = "add-read-only"
	// Promote moves Step.Provider to the front (write) of Step.Node's
	// EncryptionConfiguration, keeping the others, in order, after it.
	Promote Action = "promote"
	// RemoveProvider deletes Step.Provider from Step.Node's
	// EncryptionConfiguration.
	RemoveProvider Action = "remove-provider"
	// RemovePod deletes the static pod of Step.Provider on Step.Node.
	RemovePod Action = "remove-pod"
	// RollBack restores Step.Node's last-known-good files, Step.Config;
	// Step.Reason says what failed.
	RollBack Action = "roll-back"
	// Confirm records Step.Config as Step.Node's last-known-good and
	// clears the step in flight.
	Confirm Action = "confirm"
	// Wait asks to observe again later; Step.Reason says what for.
	Wait Action = "wait"
	// Done: nothing left to do (on Step.Node only, when it is set).
	Done Action = "done"
	// Refuse: the planner will not go on; Step.Reason says why.
	Refuse Action = "refuse"
)

// Step is the one thing to do next.
type Step struct {
	Action Action `json:"action"`
	// Node is the node the step acts on.
	Node string `json:"node,omitempty"`
	// Revision is the static pod to write (WritePod).
	Revision lifecycle.Revision `json:"revision,omitzero"`
	// Provider is the provider acted on (AddReadOnly, Promote,
	// RemoveProvider, RemovePod).
	Provider string `json:"provider,omitempty"`
	// After is the write provider that AddReadOnly inserts after.
	After string `json:"after,omitempty"`
	// Config is what RollBack restores and what Confirm records.
	Config lifecycle.NodeConfig `json:"config,omitzero"`
	// Reason says why, in one sentence.
	Reason string `json:"reason,omitempty"`
}

// String spells the step on one line, as the scripts and the CLI show it.
func (s Step) String() string {
	var b strings.Builder
	b.WriteString(string(s.Action))
	if s.Node != "" {
		b.WriteString(" node=" + s.Node)
	}
	if !s.Revision.IsZero() {
		b.WriteString(" revision=" + s.Revision.String())
	}
	if s.Provider != "" {
		b.WriteString(" provider=" + s.Provider)
	}
	if s.After != "" {
		b.WriteString(" after=" + s.After)
	}
	if s.Action == RollBack || s.Action == Confirm {
		b.WriteString(" config=[" + s.Config.String() + "]")
	}
	if s.Reason != "" {
		b.WriteString(": " + s.Reason)
	}
	return b.String()
}

// changesNode reports whether the step writes a node's files.
func (s Step) changesNode() bool {
	switch s.Action {
	case WritePod, AddReadOnly, Promote, RemoveProvider, RemovePod, RollBack:
		return true
	}
	return false
}

// same reports whether s and o ask for the same change (reasons aside).
func (s Step) same(o Step) bool {
	return s.Action == o.Action && s.Node == o.Node && s.Revision == o.Revision &&
		s.Provider == o.Provider && s.After == o.After && s.Config.Equal(o.Config)
}

// Observed is everything Next decides from.
type Observed struct {
	// Desired is the revision kms.yaml renders.
	Desired lifecycle.Revision
	// Nodes are the control-plane nodes, in nodes.yaml order, which is the
	// order steps take within a phase.
	Nodes []lifecycle.Node
	// Progress is what the driver persisted.
	Progress Progress
	// Now is when the observations were taken.
	Now time.Time
	// StepTimeout bounds how long a step may take to turn healthy; zero
	// means DefaultStepTimeout.
	StepTimeout time.Duration
	// Retire names an old provider to remove from every node once the
	// rollout is done; empty (the default) keeps every old provider listed
	// for reading.
	Retire string
	// OldProviderEmpty is the etcd scan's verdict that no stored object is
	// under Retire. Without it, retiring is refused. The scan must be taken
	// after the API servers were observed (Nodes), so that an API server
	// seen running a file that does not write with Retire cannot have
	// stored anything under it since.
	OldProviderEmpty bool
}

// Progress is the rollout's persisted state, which survives a kill -9.
type Progress struct {
	// InFlight is the step applied (or about to be) and not yet confirmed.
	InFlight *Step `json:"inFlight,omitempty"`
	// StartedAt is when InFlight was recorded.
	StartedAt time.Time `json:"startedAt,omitzero"`
	// LastKnownGood is, per node, the last config confirmed healthy.
	LastKnownGood map[string]lifecycle.NodeConfig `json:"lastKnownGood,omitempty"`
	// Failed is the last revision rolled back; it is not tried again.
	Failed *Failure `json:"failed,omitempty"`
}

// Failure is a revision that was rolled back, and why.
type Failure struct {
	Revision lifecycle.Revision `json:"revision"`
	Node     string             `json:"node"`
	Reason   string             `json:"reason"`
}

// Next returns the one next step of the rollout to o.Desired across all
// nodes. The rules, first match wins:
//
//  1. Observations are incomplete (no desired revision, no nodes, a node
//     listed twice) => refuse.
//  2. A step is in flight => finish it before anything else, whatever the
//     desired revision now is:
//     a. not applied on disk (killed before the write) => the same step
//     again, if it is still the step rules 3-9 would choose, wait if they
//     would wait, refuse otherwise;
//     b. applied and the node healthy => confirm it (record last-known-good);
//     c. applied, unhealthy, within the step timeout => wait;
//     d. applied, unhealthy, timed out => roll the node back to its
//     last-known-good config and report what failed; refuse if there is
//     none, or if that config lacks a provider some node writes with;
//     e. a rollback in flight that is not healthy in time => refuse: the
//     node needs an operator, and the planner never loops.
//  3. The desired revision is the one last rolled back => refuse: render a
//     new revision (a new label) to try again.
//  4. A provider some node writes with is not listed on every node =>
//     refuse: an API server may already be unable to read data (invariant 1).
//  5. A static pod carries the desired revision's label but another image
//     or other flags => refuse: labels are never reused.
//  6. A node is unhealthy (a plugin on disk not running that revision, not
//     answering Status, or failing the preflight; its API server not ready
//     for kms-providers, or not yet running the EncryptionConfiguration on
//     disk) => wait (invariant 5: the next step waits until the previous
//     one is healthy).
//  7. Phases, each finished on every node before the next begins, nodes in
//     order: (1) a node without the desired static pod => write it;
//     (2) a node whose EncryptionConfiguration lacks the desired provider
//     => add it read-only after that node's write provider; (3) a node
//     where it is not first => promote it, only once every node lists it
//     and every API server has loaded its file (invariant 1).
//  8. Before a node's first step, a node with no last-known-good config =>
//     confirm its current (healthy) config as the baseline to roll back to.
//  9. Retiring an old provider (Observed.Retire) is refused for the desired
//     or a writing provider, waits until every API server runs the file on
//     its disk, and is refused unless the etcd scan then found nothing
//     under it; when allowed, it is two more phases: (4) remove it from
//     every node's EncryptionConfiguration, (5) then its static pods.
//  10. Nothing left => done. Old providers stay listed for reading.
func Next(o Observed) Step { return plan(o, "") }

// NextFor is Next for `kmsctl rollout node`: the next step on one node,
// under the same rules, or a refusal when the cluster is not ready for it:
// another node has a step in flight or is unhealthy, or an earlier phase is
// unfinished on another node (for example, promoting here before every API
// server has loaded the read-only provider). When this node has nothing
// left to do it returns Done with Node set.
func NextFor(o Observed, node string) Step { return plan(o, node) }

// plan is Next (only == "") and NextFor (only names the node).
func plan(o Observed, only string) Step {
	// RULE 1: the observations are complete and consistent.
	if o.Desired.Name == "" || o.Desired.Provider == "" {
		return refuse("no desired revision: kms.yaml must name a revision and a provider")
	}
	if len(o.Nodes) == 0 {
		return refuse("no nodes observed")
	}
	byName := map[string]*lifecycle.Node{}
	for i := range o.Nodes {
		n := &o.Nodes[i]
		if n.Name == "" {
			return refuse(fmt.Sprintf("node %d has no name", i+1))
		}
		if byName[n.Name] != nil {
			return refuse(fmt.Sprintf("node %s is listed twice", n.Name))
		}
		byName[n.Name] = n
	}
	if only != "" && byName[only] == nil {
		return refuse(fmt.Sprintf("node %s is not in the node list", only))
	}

	// RULE 2: a step in flight is finished first.
	if in := o.Progress.InFlight; in != nil {
		n := byName[in.Node]
		if n == nil {
			return refuse(fmt.Sprintf("the step in flight (%s) is for node %s, which is not in the node list", in, in.Node))
		}
		if only != "" && only != in.Node {
			return refuse(fmt.Sprintf("node %s has a step in flight (%s): one node at a time", in.Node, in))
		}
		return finish(o, *in, n, only)
	}

	// RULE 3: a rolled-back revision is not tried again.
	if f := o.Progress.Failed; f != nil && f.Revision == o.Desired {
		return refuse(fmt.Sprintf("revision %s was rolled back on node %s (%s); render a new revision to try again", f.Revision, f.Node, f.Reason))
	}

	// RULE 4: whatever any node writes with, every node reads.
	for _, w := range o.Nodes {
		wp := w.OnDisk.WriteProvider()
		if wp == "" {
			continue
		}
		for _, r := range o.Nodes {
			if !r.OnDisk.Lists(wp) {
				return refuse(fmt.Sprintf("node %s writes with provider %s, which node %s does not list: repair the EncryptionConfiguration by hand first", w.Name, wp, r.Name))
			}
		}
	}

	// RULE 5: a revision label names one image and one set of flags.
	for _, n := range o.Nodes {
		for _, p := range n.OnDisk.Pods {
			if p.Name == o.Desired.Name && p.Provider == o.Desired.Provider && p != o.Desired {
				return refuse(fmt.Sprintf("node %s runs revision %s with another image or other flags than kms.yaml renders: give the new configuration a new revision", n.Name, p))
			}
		}
	}

	// RULE 9 (first part): refuse an unsafe retirement before any step.
	if o.Retire != "" {
		if s, ok := checkRetire(o, only); !ok {
			return s
		}
	}

	// RULE 6: every node healthy.
	for _, n := range o.Nodes {
		if why := unhealthy(&n); why != "" {
			if only != "" && only != n.Name {
				return refuse(fmt.Sprintf("node %s is not healthy (%s): the cluster is not ready for a step on node %s", n.Name, why, only))
			}
			return Step{Action: Wait, Node: n.Name, Reason: fmt.Sprintf("node %s is not healthy: %s", n.Name, why)}
		}
	}

	// RULE 7 and RULE 9 (second part): the phases.
	lowest := phaseDone
	for i := range o.Nodes {
		lowest = min(lowest, phaseOf(o, &o.Nodes[i]))
	}
	var n *lifecycle.Node
	switch {
	case only != "":
		n = byName[only]
		if p := phaseOf(o, n); p == phaseDone {
			if lowest == phaseDone {
				return done(o, only)
			}
			return Step{Action: Done, Node: only, Reason: fmt.Sprintf("node %s has nothing left to do; %s", only, pending(o, lowest))}
		} else if p != lowest {
			return refuse(fmt.Sprintf("node %s is ready to %s, but the cluster is not: %s first", only, p, pending(o, lowest)))
		}
	case lowest == phaseDone:
		// RULE 10: done.
		return done(o, "")
	default:
		for i := range o.Nodes {
			if phaseOf(o, &o.Nodes[i]) == lowest {
				n = &o.Nodes[i]
				break
			}
		}
	}

	// RULE 8: a baseline to roll back to before a node's first step.
	if _, ok := o.Progress.LastKnownGood[n.Name]; !ok {
		return Step{Action: Confirm, Node: n.Name, Config: n.OnDisk, Reason: "record the healthy config as last-known-good before changing it"}
	}
	return forward(o, n, lowest)
}

// phase is where a node stands in the rollout; a node's phase is the first
// thing it still needs.
type phase int

const (
	phasePod phase = iota + 1
	phaseAddReadOnly
	phasePromote
	phaseRemoveProvider
	phaseRemovePod
	phaseDone
)

func (p phase) String() string {
	switch p {
	case phasePod:
		return "write the desired static pod"
	case phaseAddReadOnly:
		return "add the desired provider read-only"
	case phasePromote:
		return "promote the desired provider to write"
	case phaseRemoveProvider:
		return "remove the retired provider"
	case phaseRemovePod:
		return "remove the retired provider's static pod"
	}
	return "nothing"
}

// phaseOf is the first thing node n still needs.
func phaseOf(o Observed, n *lifecycle.Node) phase {
	d := o.Desired
	if p, ok := n.OnDisk.Pod(d.Provider); !ok || p != d {
		return phasePod
	}
	if !n.OnDisk.Lists(d.Provider) {
		return phaseAddReadOnly
	}
	if n.OnDisk.WriteProvider() != d.Provider {
		return phasePromote
	}
	if o.Retire != "" {
		if n.OnDisk.Lists(o.Retire) {
			return phaseRemoveProvider
		}
		if _, ok := n.OnDisk.Pod(o.Retire); ok {
			return phaseRemovePod
		}
	}
	return phaseDone
}

// pending names the nodes still in phase p.
func pending(o Observed, p phase) string {
	var names []string
	for i := range o.Nodes {
		if phaseOf(o, &o.Nodes[i]) == p {
			names = append(names, o.Nodes[i].Name)
		}
	}
	return fmt.Sprintf("%s on node %s", p, strings.Join(names, ", "))
}

// forward is the step of phase p for node n.
func forward(o Observed, n *lifecycle.Node, p phase) Step {
	d := o.Desired
	switch p {
	case phasePod:
		why := "new provider: its plugin runs beside the current one"
		if _, ok := n.OnDisk.Pod(d.Provider); ok {
			why = "in place: same provider, new image or flags"
		}
		return Step{Action: WritePod, Node: n.Name, Revision: d, Reason: why}
	case phaseAddReadOnly:
		return Step{Action: AddReadOnly, Node: n.Name, Provider: d.Provider, After: n.OnDisk.WriteProvider(),
			Reason: "every node runs the new plugin; it reads before it writes"}
	case phasePromote:
		// Rules 6 and 7 already hold this; the invariant is checked where
		// it is used, so a change elsewhere cannot silently drop it.
		for _, m := range o.Nodes {
			if !m.OnDisk.Lists(d.Provider) || m.APIServer.LoadedConfigHash != m.ConfigHash {
				return Step{Action: Wait, Node: m.Name, Reason: fmt.Sprintf("node %s's API server has not loaded a config listing %s", m.Name, d.Provider)}
			}
		}
		return Step{Action: Promote, Node: n.Name, Provider: d.Provider,
			Reason: "every API server has loaded the provider read-only"}
	case phaseRemoveProvider:
		return Step{Action: RemoveProvider, Node: n.Name, Provider: o.Retire,
			Reason: "the etcd scan found nothing stored under it"}
	case phaseRemovePod:
		return Step{Action: RemovePod, Node: n.Name, Provider: o.Retire,
			Reason: "no API server lists the provider any more"}
	}
	return done(o, n.Name)
}

// done is rule 10's answer.
func done(o Observed, node string) Step {
	var old []string
	for _, n := range o.Nodes {
		for _, p := range n.OnDisk.Providers {
			if p.KMS && p.Name != o.Desired.Provider && !slices.Contains(old, p.Name) {
				old = append(old, p.Name)
			}
		}
	}
	why := fmt.Sprintf("revision %s runs on every node and %s writes", o.Desired.Name, o.Desired.Provider)
	if len(old) > 0 {
		why += fmt.Sprintf("; %s stay listed for reading until a scan shows nothing stored under them", strings.Join(old, ", "))
	}
	return Step{Action: Done, Node: node, Reason: why}
}

// NothingWritesWith reports whether no API server can write with provider:
// no node's file makes it the write provider, and every node's API server
// was observed running the file on its disk. Rule 9 reads
// Observed.OldProviderEmpty only then, so a driver need scan etcd only once
// it holds: a scan taken earlier could miss a write that lands after it.
func NothingWritesWith(nodes []lifecycle.Node, provider string) bool {
	for _, n := range nodes {
		if n.OnDisk.WriteProvider() == provider || n.ConfigHash == "" || n.APIServer.LoadedConfigHash != n.ConfigHash {
			return false
		}
	}
	return true
}

// checkRetire is rule 9's refusals. The scan's verdict only counts once no
// API server can write with the provider any more: no node's file makes it
// the write provider, and every API server runs the file on its disk. An
// API server still running an older file could store an object under it
// after the scan, so until every one has loaded its file, retiring waits.
func checkRetire(o Observed, only string) (Step, bool) {
	r := o.Retire
	if r == o.Desired.Provider {
		return refuse(fmt.Sprintf("cannot retire %s: it is the desired provider", r)), false
	}
	for _, n := range o.Nodes {
		if n.OnDisk.WriteProvider() == r {
			return refuse(fmt.Sprintf("cannot retire %s: node %s still writes with it", r, n.Name)), false
		}
	}
	for _, n := range o.Nodes {
		if n.APIServer.LoadedConfigHash != n.ConfigHash {
			why := fmt.Sprintf("cannot retire %s yet: the API server of node %s has not loaded the EncryptionConfiguration on its disk, and may still write with it", r, n.Name)
			if only != "" && only != n.Name {
				return refuse(why), false
			}
			return Step{Action: Wait, Node: n.Name, Reason: why}, false
		}
	}
	if !o.OldProviderEmpty {
		return refuse(fmt.Sprintf("cannot retire %s: an etcd scan finds objects stored under it: rewrite them with `kmsctl migrate --from-provider %s`, then run again", r, r)), false
	}
	return Step{}, true
}

// finish is rule 2: the step in flight.
func finish(o Observed, in Step, n *lifecycle.Node, only string) Step {
	if !in.changesNode() {
		return refuse(fmt.Sprintf("the persisted step in flight (%s) is not one that changes a node", in))
	}
	timeout := o.StepTimeout
	if timeout <= 0 {
		timeout = DefaultStepTimeout
	}
	elapsed := o.Now.Sub(o.Progress.StartedAt)

	if !applied(in, n.OnDisk) {
		// RULE 2a: killed before the write landed.
		if in.Action == RollBack {
			return Step{Action: RollBack, Node: in.Node, Config: in.Config, Reason: "resume: " + in.Reason}
		}
		o.Progress.InFlight = nil
		fresh := plan(o, only)
		switch {
		case fresh.same(in):
			fresh.Reason = "resume: " + fresh.Reason
			return fresh
		case fresh.Action == Wait:
			return fresh
		}
		return refuse(fmt.Sprintf("the step in flight (%s) never reached node %s and is no longer the next step (now: %s); clear the progress to go on", in, in.Node, fresh))
	}

	why := unhealthy(n)
	if why == "" {
		// RULE 2b.
		r := "healthy"
		if in.Action == RollBack {
			r = "rolled back: " + in.Reason
		}
		return Step{Action: Confirm, Node: n.Name, Config: n.OnDisk, Reason: r}
	}
	if elapsed <= timeout {
		// RULE 2c.
		return Step{Action: Wait, Node: n.Name, Reason: fmt.Sprintf("%s %s on node %s: %s (%s of %s)", in.Action, target(in), n.Name, why, elapsed, timeout)}
	}
	if in.Action == RollBack {
		// RULE 2e.
		return refuse(fmt.Sprintf("node %s is not healthy %s after rolling back to its last-known-good config: %s; it needs an operator (the rollback was for: %s)", n.Name, timeout, why, in.Reason))
	}
	// RULE 2d.
	lkg, ok := o.Progress.LastKnownGood[n.Name]
	if !ok {
		return refuse(fmt.Sprintf("%s %s on node %s is not healthy after %s (%s), and the node has no last-known-good config to roll back to", in.Action, target(in), n.Name, timeout, why))
	}
	for _, m := range o.Nodes {
		if wp := m.OnDisk.WriteProvider(); wp != "" && !lkg.Lists(wp) {
			return refuse(fmt.Sprintf("%s %s on node %s is not healthy after %s (%s), and its last-known-good config does not list %s, which node %s writes with", in.Action, target(in), n.Name, timeout, why, wp, m.Name))
		}
	}
	return Step{Action: RollBack, Node: n.Name, Config: lkg,
		Reason: fmt.Sprintf("%s %s not healthy after %s: %s", in.Action, target(in), timeout, why)}
}

// target names what a step acts on.
func target(s Step) string {
	switch {
	case !s.Revision.IsZero():
		return s.Revision.String()
	case s.Provider != "":
		return s.Provider
	}
	return "[" + s.Config.String() + "]"
}

// applied reports whether the node's files show the step done.
func applied(s Step, disk lifecycle.NodeConfig) bool {
	switch s.Action {
	case WritePod:
		p, ok := disk.Pod(s.Revision.Provider)
		return ok && p == s.Revision
	case AddReadOnly:
		return disk.Lists(s.Provider)
	case Promote:
		return disk.WriteProvider() == s.Provider
	case RemoveProvider:
		return !disk.Lists(s.Provider)
	case RemovePod:
		_, ok := disk.Pod(s.Provider)
		return !ok
	case RollBack:
		return disk.Equal(s.Config)
	}
	return false
}

// unhealthy says why node n is not healthy, or "" when it is: every
// static pod's plugin runs that revision and passes Status and the
// preflight, every listed KMS provider answers, and the API server is ready
// for kms-providers with the EncryptionConfiguration on disk loaded.
func unhealthy(n *lifecycle.Node) string {
	for _, p := range n.OnDisk.Pods {
		h, ok := n.Plugins[p.Provider]
		switch {
		case !ok:
			return fmt.Sprintf("plugin %s does not answer", p.Provider)
		case h.Running != p:
			running := "an unknown revision"
			if !h.Running.IsZero() {
				running = h.Running.String()
			}
			// The probe's error says why no Ready pod runs it: what an
			// operator needs when this ends in a rollback.
			return fmt.Sprintf("plugin %s runs %s, not %s%s", p.Provider, running, p, suffix(h.Err))
		case !h.StatusOK:
			return fmt.Sprintf("plugin %s Status not ok%s", p, suffix(h.Err))
		case !h.PreflightOK:
			return fmt.Sprintf("plugin %s failed the encrypt/decrypt preflight%s", p, suffix(h.Err))
		}
	}
	for _, p := range n.OnDisk.Providers {
		if _, hasPod := n.OnDisk.Pod(p.Name); !p.KMS || hasPod {
			continue
		}
		if h, ok := n.Plugins[p.Name]; !ok || !h.StatusOK {
			return fmt.Sprintf("listed provider %s does not answer Status ok", p.Name)
		}
	}
	a := n.APIServer
	if !a.ReadyzKMS {
		return "API server readyz kms-providers not ok" + suffix(a.Err)
	}
	if a.LoadedConfigHash != n.ConfigHash {
		loaded := a.LoadedConfigHash
		if loaded == "" {
			loaded = "an unknown config"
		}
		return fmt.Sprintf("API server runs EncryptionConfiguration %s, not %s on disk", short(loaded), short(n.ConfigHash))
	}
	return ""
}

func suffix(err string) string {
	if err == "" {
		return ""
	}
	return ": " + err
}

// short abbreviates a "sha256:<hex>" hash for reasons.
func short(h string) string {
	if len(h) > len("sha256:")+12 {
		return h[:len("sha256:")+12]
	}
	return h
}

func refuse(why string) Step { return Step{Action: Refuse, Reason: why} }
