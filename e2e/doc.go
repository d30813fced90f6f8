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
//     run unchanged as a static pod by three real kubelets with containerd,
//     each node with its own kube-apiserver; the API servers store Secrets
//     through it, the mirror pods show Ready, Vault paused makes one not
//     Ready, and a killed plugin is restarted by its kubelet.
//
// And rollouts (kmsctl, part 2), on those three nodes under a load of reads
// and writes through every API server that fails the test on any failed
// call (rollout_test.go): an unsigned image refused before any file
// changes; plan; an in-place image change; a new provider whose plugin
// cannot reach Vault, rolled back by itself; a new provider on a second
// transit key refused on the current metrics port, then rolled out with
// `rollout node` on two nodes and `rollout apply` killed with SIGKILL at
// every step and rerun, after which every API server restarts and reads
// every Secret back; and the old provider's retirement, refused while
// Secrets are stored under it, done after kmsctl migrate --from-provider.
//
// And key rotation (kmsctl, part 3):
//
//   - TestRotate: three API servers and kube-controller-manager, 10,000
//     Secrets and 1,000 ConfigMaps, a load of reads and writes through every
//     API server during each rotation, with no failure allowed. kmsctl rotate
//     --engine=direct killed half way through its migration and resumed by
//     rotate --observe-only; status and retire; rotate --engine=auto choosing
//     StorageVersionMigration; a StorageVersionMigration made too early
//     (Succeeded, nothing migrated, status warns) and repaired by rotate
//     --observe-only, killed once and rerun; retire refused while one object
//     is left under the old version (written by an API server rotate was not
//     told about, then an old value restored into etcd), migrate, retire, and
//     every object read back through every API server after a restart.
//   - BenchmarkMigrationEngines (make bench): the direct engine, SVM and
//     kubectl replace against the API server's ceiling, one cluster, one run.
package e2e
