// Package svm is kmsctl migrate's --engine=svm: Kubernetes' own
// StorageVersionMigration (storagemigration.k8s.io/v1, GA in 1.37, run by
// kube-controller-manager's storage-version-migrator-controller) rewrites
// each encrypted resource, and kmsctl follows it with etcd scans.
//
// The scans are not decoration. A StorageVersionMigration sends one no-op
// PATCH per object and reports Succeeded when the requests were sent: an API
// server that does not yet use the new key_id finds nothing stale, writes
// nothing, and the migration still Succeeds with every object under the old
// key. Only the scan says whether anything is left, so Next decides from
// both, and a migration that Succeeded while the scan still finds stale
// objects is followed by another one, a few times at most.
//
// Next is the decision, a pure function; Run is the loop that observes,
// decides and acts, over two narrow interfaces (Client: the
// StorageVersionMigrations; Scanner: the etcd scan), so it imports no
// Kubernetes code. Package migrate/kube has the client-go Client.
//
// The ordering contract of Run, per pass:
//
//  1. Observe every followed migration (Client.Get), then scan etcd once.
//     Scanning after observing is what makes "Succeeded, and the scan
//     still finds stale objects" mean stragglers: every write the
//     migration made happened before it reported Succeeded, so before the
//     scan.
//  2. Decide per resource with Next, and apply the one step it returns.
//  3. Report progress, sleep Options.Every, and start over until every
//     resource is Done or gave up.
package svm

import (
	"fmt"
	"time"
)

// State is where a StorageVersionMigration is, from its conditions.
type State string

// The states. A migration of kube-controller-manager 1.37 keeps Running
// true until its controller sets it false next to Succeeded or Failed, so
// Failed and Succeeded win over Running.
const (
	// StatePending: no condition yet. The controller runs one migration
	// per resource at a time; a later one waits, without conditions.
	StatePending State = "Pending"
	// StateRunning: the Running condition is true.
	StateRunning State = "Running"
	// StateSucceeded: the Succeeded condition is true: every PATCH was
	// sent, which proves nothing about the key the objects are under.
	StateSucceeded State = "Succeeded"
	// StateFailed: the Failed condition is true; Message says why.
	StateFailed State = "Failed"
)

// Finished reports whether the migration will not change any more.
func (s State) Finished() bool { return s == StateSucceeded || s == StateFailed }

// Migration is one StorageVersionMigration as observed.
type Migration struct {
	Name string `json:"name"`
	// Resource is the EncryptionConfiguration name it migrates (secrets,
	// deployments.apps).
	Resource string `json:"resource"`
	State    State  `json:"state"`
	// Message is the Failed condition's message when it failed, else the
	// Running condition's, if any.
	Message string `json:"message,omitempty"`
}

// Observed is what Next decides from, for one resource.
type Observed struct {
	// Resource is the EncryptionConfiguration name (secrets, deployments.apps).
	Resource string
	// Migration is the migration the run follows for Resource: the last one
	// it created, or a pending or running one of an earlier run that it
	// adopted (so that a rerun after kill -9 creates no duplicate); nil
	// when there is none yet.
	Migration *Migration
	// Rounds counts the migrations the run has followed for Resource,
	// Migration included.
	Rounds int
	// Stale is Resource's stale objects in an etcd scan read after
	// Migration was observed.
	Stale int
	// Idle is how long Migration's state has not changed and Stale has
	// not gone down.
	Idle time.Duration
}

// Limits bound how long and how often Next keeps trying.
type Limits struct {
	// MaxRounds is how many migrations are followed per resource (default
	// DefaultMaxRounds).
	MaxRounds int
	// IdleTimeout is how long a pending or running migration may go
	// without progress (default DefaultIdleTimeout).
	IdleTimeout time.Duration
}

// Defaults of Limits.
const (
	// DefaultMaxRounds: a first migration and two for stragglers. More
	// would not help: what is still stale after the third is being written
	// under the old key by an API server, which needs fixing first.
	DefaultMaxRounds = 3
	// DefaultIdleTimeout: a migration that neither changes state nor lowers
	// the stale count for this long is not being worked on (no
	// storage-version-migrator-controller, or one stuck on its cache).
	DefaultIdleTimeout = 5 * time.Minute
)

func (l Limits) withDefaults() Limits {
	if l.MaxRounds <= 0 {
		l.MaxRounds = DefaultMaxRounds
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	return l
}

// Action is what to do next for one resource.
type Action string

// The actions.
const (
	// Create a new StorageVersionMigration for the resource.
	Create Action = "create"
	// Wait for the followed migration.
	Wait Action = "wait"
	// Done: the scan finds nothing stale.
	Done Action = "done"
	// GiveUp: stop following the resource; Step.Reason is the error.
	GiveUp Action = "give up"
)

// Step is Next's answer: an action and, as one line, why.
type Step struct {
	Action Action
	Reason string
}

// Next decides the next step for one resource. The rules, in order:
//
//  1. The followed migration Failed => GiveUp, naming it and its Failed
//     condition's message.
//  2. It is pending or running and has been idle for Limits.IdleTimeout
//     => GiveUp: a pending one was never started (is kube-controller-
//     manager's storage-version-migrator-controller running?), a running
//     one moves nothing.
//  3. It is pending or running => Wait. A running migration is waited for
//     even when the scan finds nothing stale any more: it is still
//     sending requests, and its outcome is reported.
//  4. The scan finds nothing stale => Done (with or without a migration:
//     nothing to migrate is done too).
//  5. No migration yet => Create the first.
//  6. It Succeeded but the scan still finds stale objects, and fewer than
//     Limits.MaxRounds were followed => Create another, for the
//     stragglers: objects written under the old key while it ran, or that
//     it sent to an API server not yet on the new key_id.
//  7. It Succeeded, objects are still stale, and Limits.MaxRounds were
//     followed => GiveUp: some API server still writes under the old key.
func Next(o Observed, l Limits) Step {
	l = l.withDefaults()
	m := o.Migration
	switch {
	// STEP 1
	case m != nil && m.State == StateFailed:
		msg := m.Message
		if msg == "" {
			msg = "no message"
		}
		return Step{GiveUp, fmt.Sprintf("%s: StorageVersionMigration %s failed: %s", o.Resource, m.Name, msg)}
	// STEP 2
	case m != nil && m.State == StatePending && o.Idle >= l.IdleTimeout:
		return Step{GiveUp, fmt.Sprintf("%s: StorageVersionMigration %s not started after %s: is kube-controller-manager running its storage-version-migrator-controller? (--engine=direct needs no controller)", o.Resource, m.Name, o.Idle.Round(time.Second))}
	case m != nil && m.State == StateRunning && o.Idle >= l.IdleTimeout:
		return Step{GiveUp, fmt.Sprintf("%s: StorageVersionMigration %s running for %s without any of %d stale objects migrated: check kube-controller-manager's log, or use --engine=direct", o.Resource, m.Name, o.Idle.Round(time.Second), o.Stale)}
	// STEP 3
	case m != nil && !m.State.Finished():
		return Step{Wait, fmt.Sprintf("%s: StorageVersionMigration %s %s", o.Resource, m.Name, m.State)}
	// STEP 4
	case o.Stale == 0:
		return Step{Done, fmt.Sprintf("%s: nothing stale", o.Resource)}
	// STEP 5
	case m == nil:
		return Step{Create, fmt.Sprintf("%s: %d objects stale", o.Resource, o.Stale)}
	// STEP 6
	case o.Rounds < l.MaxRounds:
		return Step{Create, fmt.Sprintf("%s: StorageVersionMigration %s Succeeded but %d objects are still stale", o.Resource, m.Name, o.Stale)}
	}
	// STEP 7
	return Step{GiveUp, fmt.Sprintf("%s: %d objects still stale after %d StorageVersionMigrations Succeeded: an API server still writes under the old key; check that every one reports the new key_id (kmsctl status), then run migrate again", o.Resource, o.Stale, o.Rounds)}
}
