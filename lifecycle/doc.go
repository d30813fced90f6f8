// Package lifecycle holds the operator-side vocabulary and decisions for
// running the plugin on control-plane nodes: revisions, providers, key
// versions, and the pure planners that decide the next rollout or rotation
// step from observed state. It imports no Kubernetes, Vault or cosign code.
package lifecycle
