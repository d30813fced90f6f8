// Package nodefs is the rollout's driver for a node's files: it observes
// the plugin static pods and the EncryptionConfiguration that kmsctl owns
// on one node, applies the one file change a rollout.Step asks for, keeps
// the node's last-known-good files, and persists the planner's Progress.
// It decides nothing: rollout.Next does, from what Observe returns.
//
// What kmsctl owns on a node:
//   - the static pods in the manifest directory that carry render's
//     provider label (render.LabelProvider), whatever their file name; a
//     kube-apiserver pod patched with the sidecar carries the revision
//     label only and is left alone. A new pod is written as
//     render.NodeManifestFile(provider); an existing one is replaced where
//     it is, so the change is one rename and kubelet, which derives a
//     static pod's UID from its file path, restarts the plugin once;
//   - in the EncryptionConfiguration, the provider list of the resource
//     entries that list a KMS provider (every entry, before the first KMS
//     provider is added). Those entries must list the same providers: a
//     node has one provider list (lifecycle.NodeConfig). Other entries,
//     the other fields of every provider and the comment lines at the top
//     of the file are kept; the file is written back in render's layout
//     (keys sorted), so comments further down are not kept.
//
// Every write is atomic: a temp file in the same directory, whose name
// starts with a dot so kubelet never reads it as a manifest, fsynced,
// renamed over the target, then the directory fsynced. A write that fails
// leaves the old file as it was.
//
// The state directory (nodes.yaml stateDir):
//
//	kmsctl.lock                 flock held by the one kmsctl that may write
//	progress.json               rollout.Progress, 0600
//	nodes/<node>/lkg            symlink to the last-known-good set below
//	nodes/<node>/lkg.<random>/  encryption-config.yaml, manifests/<file>
//
// Confirm writes a new lkg.<random> directory and then swaps the lkg
// symlink with one rename, so a node's last-known-good set is always whole.
// Node directories live under nodes/ so that no node name can collide with
// the lock or the progress file.
//
// Locking: Open takes the lock and fails at once, naming the process that
// holds it, rather than wait: the waiting process would then apply a step
// it decided from files the other one has since changed (rollout contract,
// rule 5). Open before observing, and hold the Store until the run ends.
// Reading (Observe, LoadProgress) needs no lock: every file is replaced
// whole.
//
// The driver's order, per rollout's contract: Open; LoadProgress and
// Observe every node; rollout.Next. For a step that changes a node:
// SaveProgress with the step in flight, then Apply. For Confirm: Apply
// (which records the node's current files as its last-known-good), then
// SaveProgress with LastKnownGood[node] set and nothing in flight, in that
// order, so that progress never names a last-known-good config whose files
// were not kept.
//
// kmsctl itself keeps the Progress in the cluster (package clusterstate),
// where a kmsctl on every node reaches it, in the same order; it reads
// progress.json only to refuse one left with a step in flight by a kmsctl
// that kept it here. The last-known-good files stay here: LastKnownGood
// tells a driver whether this directory holds the set the shared progress
// records, before it changes a node that may have been confirmed elsewhere.
package nodefs
