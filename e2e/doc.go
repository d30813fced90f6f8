// Package e2e proves the plugin works for users: each test brings up a real
// control plane on loopback (Vault, etcd, kube-apiserver and the plugin as
// processes, see package cluster) and drives it through a scenario users hit
// in production. The scenarios are numbered as in the issue that asked for
// them:
//
//  1. TestSecretStoredEncrypted: a Secret is stored as k8s:enc:kms:v2 ciphertext.
//  2. TestAPIServerRestart: every Secret reads after an API server restart.
//  3. TestPluginKilledAndRestarted: the API server recovers without a restart.
//  4. TestVaultOutage: reads continue from the DEK cache; health reports it.
//  5. TestShortLivedTokens: minutes of writes across many token expiries.
//  6. TestSecretIDRotatedOnDisk: a rotated secret ID is used at the next login.
//  7. TestVaultHALeaderKilled: the plugin fails over to the new active node.
//  8. TestTransitKeyRotation: every API server moves to the new key_id.
//  9. TestThreeAPIServers: Secrets written through one read through the others.
//  10. TestBadConfiguration: each mistake is named in one log line and shows in
//     /readyz, and nothing stored becomes unreadable once it is fixed.
//
// And the deployment as users run it (kmsctl, part 1):
//
//   - TestRenderedStaticPodOnARealKubelet: the image `make image` built, signed
//     with the real cosign CLI, verified and pinned by `kmsctl verify-image`,
//     rendered by `kmsctl render`, set up in Vault by the rendered script and
//     run unchanged as a static pod by a real kubelet with containerd; the API
//     server stores Secrets through it, the mirror pod shows Ready, Vault
//     paused makes it not Ready, and a killed plugin is restarted by the
//     kubelet.
//
// And key rotation (kmsctl, part 3):
//
//   - TestRotate: `kmsctl rotate` on two API servers rotates the transit
//     key, waits until both report the plugin's new key_id, then rewrites
//     (--engine=direct) every Secret still under the old transit version, and
//     a fresh etcd scan shows none left. With the real kube-controller-manager
//     running, a second rotation with --engine=auto picks
//     StorageVersionMigration and migrates every Secret again; a
//     StorageVersionMigration created by hand right after a rotation reports
//     Succeeded with the Secrets left under the old version (kmsctl status:
//     needed), and kmsctl rotate --observe-only finishes the job.
package e2e
