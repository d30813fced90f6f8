// Package clusterstate keeps the rollout's shared state in the cluster, the
// way kubeadm keeps its own (the kubeadm-config ConfigMap): one ConfigMap,
// kube-system/kmsctl-rollout, that every kmsctl reads and writes, whichever
// node it runs on. It holds:
//
//   - progress.json: the planner's rollout.Progress (the step in flight and
//     when it started, each node's last-known-good config, the revision
//     last rolled back), as nodes.yaml's stateDir/progress.json held it
//     before;
//   - nodes.json: per node, what kmsctl last observed of that node's files
//     (its lifecycle.NodeConfig on disk and the sha256 of its
//     EncryptionConfiguration) and when.
//
// Why the cluster and not the state directory: `kmsctl rollout node` runs
// on one node and reaches that node's files only, yet the planner decides
// from every node's files and from the one Progress of the whole rollout.
// The ConfigMap is the only place every node reaches. It is the one source
// of the Progress for `rollout apply` too (which reaches every node's
// files), so that the two can be mixed: an admin starts with apply and
// finishes node by node, or the other way round, and two copies of the
// Progress can never disagree. The state directory (package nodefs) keeps
// what only the node's own kmsctl needs: the lock, and the last-known-good
// files' bytes that a rollback restores.
//
// Writes are optimistic: Save sends the resourceVersion that Load read,
// and the API server refuses it (ErrConflict) if another kmsctl wrote in
// between. The caller then observes again and decides again; it never
// overwrites blindly, so two nodes cannot both put a step in flight.
//
// The package decides nothing about the rollout and reads no clock: the
// caller says when an observation was taken.
package clusterstate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
)

// Where the state lives, and how kmsctl marks it as its own.
const (
	Namespace      = "kube-system"
	Name           = "kmsctl-rollout"
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "kmsctl"

	progressKey = "progress.json"
	nodesKey    = "nodes.json"
)

// ErrConflict is what Save returns when another kmsctl changed the state
// since it was loaded: observe again and decide again.
var ErrConflict = errors.New("another kmsctl changed the rollout state since it was read")

// NodeState is what kmsctl last observed of one node's files.
type NodeState struct {
	// OnDisk is the node's static pods and provider list.
	OnDisk lifecycle.NodeConfig `json:"onDisk"`
	// ConfigHash is "sha256:<hex>" of the node's EncryptionConfiguration,
	// which the planner compares with what the node's API server loaded.
	ConfigHash string `json:"configHash"`
	// ObservedAt is when kmsctl observed these files.
	ObservedAt time.Time `json:"observedAt"`
}

// State is the shared state as read at one version of the ConfigMap.
type State struct {
	// Progress is the rollout's progress; LastKnownGood is never nil.
	Progress rollout.Progress
	// Nodes is, by node name, what kmsctl last observed of its files; a
	// node absent here was never observed. Never nil.
	Nodes map[string]NodeState
	// ResourceVersion is the version read, which Save sends back; "" when
	// the ConfigMap does not exist yet (Save creates it).
	ResourceVersion string

	// meta is the ConfigMap's metadata as read, kept on Save so that
	// labels and annotations others added survive.
	meta metav1.ObjectMeta
}

// Empty is the state of a rollout never begun: no ConfigMap yet.
func Empty() State {
	return State{Progress: rollout.Progress{LastKnownGood: map[string]lifecycle.NodeConfig{}}, Nodes: map[string]NodeState{}}
}

// Publish records what kmsctl observed of node n's files at time at, and
// reports whether that changed the state, so that it must be saved. The
// same files observed again change nothing: a driver polling every few
// seconds does not write the ConfigMap every few seconds.
func (s *State) Publish(n lifecycle.Node, at time.Time) bool {
	if s.Nodes == nil {
		s.Nodes = map[string]NodeState{}
	}
	if prev, ok := s.Nodes[n.Name]; ok && prev.ConfigHash == n.ConfigHash && prev.OnDisk.Equal(n.OnDisk) {
		return false
	}
	s.Nodes[n.Name] = NodeState{OnDisk: n.OnDisk, ConfigHash: n.ConfigHash, ObservedAt: at}
	return true
}

// Store reads and writes the ConfigMap through the API server. It needs
// get, create and update on configmaps in kube-system.
type Store struct {
	client dynamic.ResourceInterface
}

// New returns the Store of the cluster kube talks to. The dynamic client:
// client-go's typed clientset would pull its fakes' dependencies in for
// three calls.
func New(kube dynamic.Interface) *Store {
	return &Store{client: kube.Resource(corev1.SchemeGroupVersion.WithResource("configmaps")).Namespace(Namespace)}
}

// where names the ConfigMap in errors.
const where = "ConfigMap " + Namespace + "/" + Name

// Load reads the state. A missing ConfigMap is a rollout never begun
// (Empty). A ConfigMap that kmsctl did not create, or whose data does not
// decode, is an error and is left alone: it may record a step in flight.
func (s *Store) Load(ctx context.Context) (State, error) {
	u, err := s.client.Get(ctx, Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Empty(), nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read %s, where kmsctl keeps the rollout's state (it needs get, create and update on configmaps in %s): %w", where, Namespace, err)
	}
	return decode(u)
}

// Save writes st (creating the ConfigMap when st.ResourceVersion is "")
// only if nobody wrote since st was loaded; otherwise it returns an error
// wrapping ErrConflict and changes nothing. It returns st at its new
// version, to save again from.
func (s *Store) Save(ctx context.Context, st State) (State, error) {
	u, err := encode(st)
	if err != nil {
		return State{}, err
	}
	var out *unstructured.Unstructured
	if st.ResourceVersion == "" {
		out, err = s.client.Create(ctx, u, metav1.CreateOptions{})
	} else {
		out, err = s.client.Update(ctx, u, metav1.UpdateOptions{})
	}
	switch {
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		return State{}, fmt.Errorf("save %s: %w", where, ErrConflict)
	case err != nil:
		return State{}, fmt.Errorf("save %s (kmsctl needs create and update on configmaps in %s): %w", where, Namespace, err)
	}
	return decode(out)
}

// encode is st as the ConfigMap to send.
func encode(st State) (*unstructured.Unstructured, error) {
	progress, err := json.MarshalIndent(st.Progress, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode the rollout progress: %w", err)
	}
	nodes := st.Nodes
	if nodes == nil {
		nodes = map[string]NodeState{}
	}
	observed, err := json.MarshalIndent(nodes, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode the nodes' observations: %w", err)
	}
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: *st.meta.DeepCopy(),
		Data:       map[string]string{progressKey: string(progress) + "\n", nodesKey: string(observed) + "\n"},
	}
	cm.Name, cm.Namespace, cm.ResourceVersion = Name, Namespace, st.ResourceVersion
	// Left out, the API server keeps them as they are.
	cm.ManagedFields = nil
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels[ManagedByLabel] = ManagedBy
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cm)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", where, err)
	}
	return &unstructured.Unstructured{Object: obj}, nil
}

// decode is the state a ConfigMap holds.
func decode(u *unstructured.Unstructured) (State, error) {
	cm := &corev1.ConfigMap{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, cm); err != nil {
		return State{}, fmt.Errorf("decode %s: %w", where, err)
	}
	if cm.Labels[ManagedByLabel] != ManagedBy {
		return State{}, fmt.Errorf("%s exists but kmsctl did not create it (no label %s=%s): kmsctl keeps the rollout's state there and will not overwrite it; move it away", where, ManagedByLabel, ManagedBy)
	}
	corrupt := func(key, why string) error {
		return fmt.Errorf("%s, key %s, is corrupt (%s): it may record a step in flight, so kmsctl will not start over; inspect it and every node's files, then fix it or delete the ConfigMap", where, key, why)
	}
	st := State{ResourceVersion: cm.ResourceVersion, meta: cm.ObjectMeta}
	if err := decodeKey(cm.Data, progressKey, &st.Progress); err != nil {
		return State{}, corrupt(progressKey, err.Error())
	}
	if st.Progress.InFlight != nil && st.Progress.StartedAt.IsZero() {
		return State{}, corrupt(progressKey, "a step in flight without startedAt")
	}
	if st.Progress.LastKnownGood == nil {
		st.Progress.LastKnownGood = map[string]lifecycle.NodeConfig{}
	}
	if err := decodeKey(cm.Data, nodesKey, &st.Nodes); err != nil {
		return State{}, corrupt(nodesKey, err.Error())
	}
	if st.Nodes == nil {
		st.Nodes = map[string]NodeState{}
	}
	for name, n := range st.Nodes {
		if name == "" || n.ConfigHash == "" || n.ObservedAt.IsZero() {
			return State{}, corrupt(nodesKey, fmt.Sprintf("node %q lacks a name, a configHash or an observedAt", name))
		}
	}
	return st, nil
}

// decodeKey decodes data[key], which must be there (kmsctl writes every
// key each time), into v, refusing fields this kmsctl does not know: a
// newer kmsctl's field would be lost on the next save.
func decodeKey(data map[string]string, key string, v any) error {
	s, ok := data[key]
	if !ok {
		return errors.New("missing")
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}
