package cluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// binary describes one program the harness runs.
type binary struct {
	env      string // environment variable that overrides the path
	fallback string // path used when env is unset; relative to the repository root unless absolute
	target   string // how to get it
}

var (
	kubeAPIServerBinary = binary{env: "KUBE_APISERVER_BIN", fallback: ".build/bin/kube-apiserver", target: "run `make kube-apiserver`"}
	etcdBinary          = binary{env: "ETCD_BIN", fallback: ".build/bin/etcd", target: "run `make etcd` (etcd v3.7.0 from the Go module proxy)"}
	pluginBinary        = binary{env: "PLUGIN_BIN", fallback: ".build/bin/vault-kms-plugin", target: "run `make build`"}
	// vaultBinary is found by plugin/vaulttest the same way; it is checked
	// here too so that a missing Vault is reported before anything starts.
	vaultBinary = binary{env: "VAULT_BIN", fallback: ".build/bin/vault", target: "run `make vault`"}
)

// RepoRoot is the repository's top directory, found from this source file so
// that tests and `go run` work from any directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func (b binary) path() string {
	if p := os.Getenv(b.env); p != "" {
		return p
	}
	if filepath.IsAbs(b.fallback) {
		return b.fallback
	}
	return filepath.Join(RepoRoot(), b.fallback)
}

// find returns the binary's path or fails the test, saying how to build it.
func (b binary) find(t testing.TB) string {
	t.Helper()
	p := b.path()
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s not found at %s ($%s overrides the path): %s; this end-to-end test needs the real binary", filepath.Base(b.fallback), p, b.env, b.target)
	}
	return p
}

// CheckBinaries fails the test unless every binary the harness runs is
// present (Vault, etcd, kube-apiserver, the plugin), so a missing build is
// reported, with the make target that provides it, before anything starts.
func CheckBinaries(t testing.TB) {
	t.Helper()
	for _, b := range []binary{vaultBinary, etcdBinary, kubeAPIServerBinary, pluginBinary} {
		b.find(t)
	}
}

var (
	kmsctlBinary  = binary{env: "KMSCTL_BIN", fallback: ".build/bin/kmsctl", target: "run `make kmsctl`"}
	cosignBinary  = binary{env: "COSIGN_BIN", fallback: ".build/bin/cosign", target: "run `make cosign`"}
	kubectlBinary = binary{env: "KUBECTL_BIN", fallback: ".build/bin/kubectl", target: "run `make kubectl`"}
)

// Kubectl is the real kubectl's path, or fails the test naming `make
// kubectl`.
func Kubectl(t testing.TB) string {
	t.Helper()
	return kubectlBinary.find(t)
}

// CheckNodeBinaries fails the test unless what a kubelet node and the
// operator's tools need is present: kubelet, containerd, runc, kmsctl, cosign
// and the plugin image's OCI layout.
func CheckNodeBinaries(t testing.TB) {
	t.Helper()
	for _, b := range []binary{kubeletBinary, containerdBinary, runcBinary, kmsctlBinary, cosignBinary} {
		b.find(t)
	}
	if _, err := os.Stat(filepath.Join(pluginImageLayout.path(), "index.json")); err != nil {
		t.Fatalf("plugin image layout not found at %s ($%s overrides the path): %s", pluginImageLayout.path(), pluginImageLayout.env, pluginImageLayout.target)
	}
}

// Kmsctl runs the real kmsctl binary and returns its stdout and stderr.
func Kmsctl(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return run(kmsctlBinary.find(t), nil, args...)
}

// KmsctlEnv is Kmsctl with extra environment variables (VAULT_TOKEN).
func KmsctlEnv(t testing.TB, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return run(kmsctlBinary.find(t), env, args...)
}

// KmsctlCommand is the real kmsctl, not started, with extra environment
// variables: for a test that kills it midway.
func KmsctlCommand(t testing.TB, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(kmsctlBinary.find(t), args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// Cosign runs the real cosign CLI with extra environment variables.
func Cosign(t testing.TB, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return run(cosignBinary.find(t), env, args...)
}

func run(bin string, env []string, args ...string) (string, string, error) {
	var stdout, stderr strings.Builder
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}
