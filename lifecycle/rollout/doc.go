// Package rollout decides, one step at a time, how a plugin revision rolls
// across the control-plane nodes. Next and NextFor are pure: the caller
// observes every node, calls one of them, applies the one step it returns
// and observes again. Nothing here reads a file, dials a socket or reads a
// clock.
//
// Two kinds of revision go through the same phases:
//   - in place (same provider, so same socket and name; a new image or new
//     flags): only phase 1 has work, node by node;
//   - new provider (a new key, mount or Vault cluster; names are never
//     reused): phase 1 runs its plugin beside the old one, phase 2 adds it
//     read-only after the write provider, phase 3 promotes it to write.
//
// Each phase is finished on every node before the next begins, and within a
// phase the nodes go in the order given.
//
// The ordering contract between a driver and the planner:
//
//  1. Observe every node (Observed.Nodes, in nodes.yaml order), load the
//     persisted Progress, set Now, and call Next (or NextFor for one node).
//  2. WritePod, AddReadOnly, Promote, RemoveProvider, RemovePod, RollBack:
//     persist Progress.InFlight = the step and Progress.StartedAt = Now
//     first (for RollBack also Progress.Failed), then change the node's
//     files atomically (temp file, fsync, rename, fsync dir, under a lock).
//     A crash between the two leaves a step in flight that Next resumes.
//  3. Confirm: persist Progress.LastKnownGood[node] = the node's on-disk
//     config (the step's Config) and clear InFlight, as one write. Keep the
//     node's file bytes as they are now: they are what RollBack restores.
//  4. Wait: observe again later. Done: stop, the rollout is complete.
//     Refuse: stop, and show the reason; nothing was changed.
//  5. Apply at most one step between two observations, and never a step
//     that NextFor or Next did not return for these observations.
//  6. Bound the whole run: Wait has no deadline of its own unless a step is
//     in flight (then Observed.StepTimeout turns it into a RollBack).
package rollout
