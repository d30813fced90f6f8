// Package cluster runs a Kubernetes control plane on loopback for end-to-end
// tests: etcd, kube-apiserver and the vault-kms-plugin as real processes, each
// on random 127.0.0.1 ports with its own temporary directory, next to a real
// Vault from plugin/vaulttest.
//
// Everything a test starts is stopped when the test ends (t.Cleanup), and a
// child process dies with the test binary (Pdeathsig), so a crashed or
// interrupted run leaves nothing behind. Every process writes its output to
// a log file; when a test fails, the tail of each log is printed with it.
//
// The binaries are found through environment variables, else under
// .build/bin in the repository. A test that cannot
// find one fails and names the make target that provides it: a skipped
// end-to-end test would pass without testing anything.
package cluster
