package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"time"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/clusterstate"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/nodefs"
)

// nodeFiles is what the driver does to the files it reaches: nodefs.Store.
type nodeFiles interface {
	Apply(f nodefs.NodeFiles, step rollout.Step, r nodefs.Rendered) error
	LastKnownGood(node string) (lifecycle.NodeConfig, bool, error)
}

var _ nodeFiles = (*nodefs.Store)(nil)

// driver applies the planner's steps following package rollout's driver
// contract. `rollout apply` and `rollout node` share it; they differ in
// which nodes' files this kmsctl reaches (local) and which planner call
// decides (Next, or NextFor of the one node). The shared progress lives in
// the cluster (clusterstate) in both.
type driver struct {
	// only is the node of `rollout node`; "" for `rollout apply`.
	only string
	// observe returns the observations and the shared state they were
	// read at (publishing the local nodes' files first).
	observe func(context.Context) (rollout.Observed, clusterstate.State, error)
	// save writes the shared state if nobody wrote since it was read.
	save func(context.Context, clusterstate.State) (clusterstate.State, error)
	// files changes the local nodes' files and keeps their last-known-good.
	files nodeFiles
	// local are the nodes whose files this kmsctl reaches, by name.
	local map[string]nodefs.NodeFiles
	// stateDir names where the last-known-good files are kept, in errors.
	stateDir string
	rendered nodefs.Rendered
	poll     time.Duration
	out      io.Writer
}

// decide is the planner's call for this run.
func (d *driver) decide(o rollout.Observed) rollout.Step {
	if d.only == "" {
		return rollout.Next(o)
	}
	return rollout.NextFor(o, d.only)
}

// run drives the planner until it is done or refuses: observe, decide,
// apply at most one step, observe again.
func (d *driver) run(ctx context.Context) error {
	start := time.Now()
	printf := func(format string, args ...any) {
		fmt.Fprintf(d.out, "[%6.1fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	var waits waitLog
	var progressed, rolledBack bool
	for {
		obs, st, err := d.observe(ctx)
		if errors.Is(err, clusterstate.ErrConflict) {
			printf("%v: observing again", err)
			continue
		}
		if err != nil {
			return err
		}
		s := d.decide(obs)
		switch s.Action {
		case rollout.Done:
			printf("%s", s)
			return nil
		case rollout.Refuse:
			return d.refused(obs, s, progressed, rolledBack, printf)
		case rollout.Wait:
			if waits.show(s.Reason, time.Now()) {
				printf("%s", s)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w while waiting: %s (run the same command again to continue)", ctx.Err(), s.Reason)
			case <-time.After(d.poll):
			}
			continue
		}
		waits = waitLog{}
		printf("%s", s)
		err = d.act(ctx, obs, st, s, printf)
		if errors.Is(err, clusterstate.ErrConflict) {
			printf("%v: observing again", err)
			continue
		}
		if err != nil {
			return err
		}
		rolledBack = rolledBack || s.Action == rollout.RollBack
		progressed = progressed || (s.Action != rollout.RollBack && s.Action != rollout.Confirm)
	}
}

// waitLog shows one line per distinct wait, and one every 15s while it
// lasts.
type waitLog struct {
	reason string
	at     time.Time
}

func (w *waitLog) show(reason string, now time.Time) bool {
	// A wait's reason may end with the time spent, which always changes.
	if i := strings.LastIndex(reason, " ("); i > 0 {
		reason = reason[:i]
	}
	if reason == w.reason && now.Sub(w.at) < 15*time.Second {
		return false
	}
	w.reason, w.at = reason, now
	return true
}

// act applies a change or Confirm step s, to a node whose files this
// kmsctl reaches, after making sure a rollback could restore the node.
func (d *driver) act(ctx context.Context, obs rollout.Observed, st clusterstate.State, s rollout.Step, printf func(string, ...any)) error {
	f, ok := d.local[s.Node]
	if !ok {
		// NextFor returns steps for its node only; this guards the
		// contract's "apply only steps for this node".
		return fmt.Errorf("the planner asks for %s, on a node whose files this kmsctl does not reach; nothing changed", s)
	}
	if s.Action != rollout.Confirm {
		kept, err := d.checkLastKnownGood(f, obs, s)
		if err != nil {
			return err
		}
		if kept {
			printf("kept node %s's current files in %s as the last-known-good the shared progress records for it, for a rollback to restore", s.Node, d.stateDir)
		}
	}
	return d.apply(ctx, f, st, s, obs)
}

// apply applies step s in the contract's order: a change is persisted in
// flight before the files change; Confirm keeps the files before the
// progress names them.
func (d *driver) apply(ctx context.Context, f nodefs.NodeFiles, st clusterstate.State, s rollout.Step, obs rollout.Observed) error {
	st.Progress = recorded(obs.Progress, s, obs.Now, obs.Desired)
	if s.Action == rollout.Confirm {
		if err := d.files.Apply(f, s, d.rendered); err != nil {
			return err
		}
		_, err := d.save(ctx, st)
		return err
	}
	if _, err := d.save(ctx, st); err != nil {
		return err
	}
	return d.files.Apply(f, s, d.rendered)
}

// refused ends a run on a refusal.
func (d *driver) refused(obs rollout.Observed, s rollout.Step, progressed, rolledBack bool, printf func(string, ...any)) error {
	if d.only != "" && !rolledBack {
		if next := rollout.Next(obs); doneForNow(d.only, next, progressed) {
			printf("done node=%s: nothing more on this node for now (%s); the cluster's next step: %s", d.only, s.Reason, next)
			return nil
		}
	}
	printf("%s", s)
	if rolledBack {
		return fmt.Errorf("rolled back to the last-known-good files: %s", s.Reason)
	}
	return fmt.Errorf("rollout refused: %s", s.Reason)
}

// doneForNow decides how `rollout node` ends when the planner refuses the
// node's next step: once this run has moved the node forward, a refusal
// because the cluster's next step is on another node (the node is a phase
// ahead) means the node has done its part for now, and the run succeeds,
// as `kubeadm upgrade node` does once its node is done. Before any step,
// or when the cluster itself is refused, the refusal stands: nothing was
// changed, or something needs an operator.
func doneForNow(node string, cluster rollout.Step, progressed bool) bool {
	return progressed && cluster.Action != rollout.Refuse && cluster.Node != "" && cluster.Node != node
}

// recorded is the progress to persist for step s, per rollout's contract:
// a change is put in flight with its start time (a rollback also records
// the revision that failed); Confirm records the node's last-known-good
// config and clears the step in flight. p is not modified.
func recorded(p rollout.Progress, s rollout.Step, now time.Time, desired lifecycle.Revision) rollout.Progress {
	p.LastKnownGood = maps.Clone(p.LastKnownGood)
	if p.LastKnownGood == nil {
		p.LastKnownGood = map[string]lifecycle.NodeConfig{}
	}
	if s.Action == rollout.Confirm {
		p.LastKnownGood[s.Node], p.InFlight, p.StartedAt = s.Config, nil, time.Time{}
		return p
	}
	step := s
	p.InFlight, p.StartedAt = &step, now
	if s.Action == rollout.RollBack {
		p.Failed = &rollout.Failure{Revision: desired, Node: s.Node, Reason: s.Reason}
	}
	return p
}

// checkLastKnownGood makes sure, before step s changes node f, that this
// state directory holds the last-known-good files the shared progress
// records for the node, which a rollback restores byte for byte. They may
// be missing when another kmsctl, with another state directory, confirmed
// them (`rollout apply` from an admin host, then `rollout node` on the
// node). kept reports that it kept the node's current files for that.
func (d *driver) checkLastKnownGood(f nodefs.NodeFiles, obs rollout.Observed, s rollout.Step) (kept bool, err error) {
	want, recordedOK := obs.Progress.LastKnownGood[s.Node]
	have, haveOK, err := d.files.LastKnownGood(s.Node)
	if err != nil {
		return false, err
	}
	var onDisk lifecycle.NodeConfig
	for _, n := range obs.Nodes {
		if n.Name == s.Node {
			onDisk = n.OnDisk
		}
	}
	switch lkgVerdict(want, recordedOK, have, haveOK, onDisk) {
	case lkgKept:
		return false, nil
	case lkgKeepNow:
		return true, d.files.Apply(f, rollout.Step{Action: rollout.Confirm, Node: s.Node, Config: want}, d.rendered)
	}
	return false, fmt.Errorf("%s needs node %s's last-known-good files [%s], which are not in %s/nodes/%s: another kmsctl kept them in its state directory; copy that node directory here, then run again. Nothing changed", s.Action, s.Node, want, d.stateDir, s.Node)
}

// lkgState is what a driver does about a node's last-known-good files
// before changing the node.
type lkgState int

const (
	// lkgKept: the files kept here are what the progress records (or it
	// records none yet, and the planner confirms a baseline first).
	lkgKept lkgState = iota
	// lkgKeepNow: they are not kept here, but the node's files on disk
	// are them (a step in flight has not landed, or nothing is in
	// flight): keep those now. Only kmsctl changes these files, so files
	// that match the recorded config are the bytes confirmed then.
	lkgKeepNow
	// lkgMissing: not kept here, and the node has moved on from them;
	// no rollback could restore them from here.
	lkgMissing
)

// lkgVerdict decides lkgState from what the progress records for the node
// (want, if recorded), what this state directory keeps (have, if kept) and
// the node's files on disk.
func lkgVerdict(want lifecycle.NodeConfig, recorded bool, have lifecycle.NodeConfig, kept bool, onDisk lifecycle.NodeConfig) lkgState {
	switch {
	case !recorded, kept && have.Equal(want):
		return lkgKept
	case onDisk.Equal(want):
		return lkgKeepNow
	}
	return lkgMissing
}

// legacyInFlight refuses a progress.json, from a kmsctl that kept the
// progress in the state directory, that records a step in flight while the
// cluster has no shared state: ignoring it would forget a step half done.
func legacyInFlight(p rollout.Progress, stateDir string) error {
	if p.InFlight == nil {
		return nil
	}
	return fmt.Errorf("%s/progress.json records a step in flight (%s), but the cluster has no %s/%s ConfigMap, where kmsctl now keeps the rollout's progress: finish that step with the kmsctl that started it, or check node %s's files by hand and move progress.json away", stateDir, p.InFlight, clusterstate.Namespace, clusterstate.Name, p.InFlight.Node)
}
