package cluster

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kubeControllerManagerBinary is needed only by clusters started with
// Options.ControllerManager.
var kubeControllerManagerBinary = binary{env: "KUBE_CONTROLLER_MANAGER_BIN", fallback: ".build/bin/kube-controller-manager", target: "run `make kube-controller-manager`"}

// ControllerManager is one kube-controller-manager process. The e2e runs it
// for StorageVersionMigration (its storage-version-migrator-controller, GA
// and on by default in 1.37), which needs the garbage collector's cache, so
// it keeps the default controller set.
type ControllerManager struct {
	Dir  string
	Proc *Process

	t testing.TB
}

// svmControllerStarted is what kube-controller-manager logs once the
// storage-version-migrator-controller runs: a StorageVersionMigration
// created before that waits, which is fine, but a test that measures one
// should not count kube-controller-manager's start-up.
const svmControllerStarted = `"Starting" controller="storage-version-migrator-controller"`

// StartControllerManager starts kube-controller-manager against the API
// server a (as the admin user) and waits until its
// storage-version-migrator-controller has started.
func StartControllerManager(t testing.TB, a *APIServer) *ControllerManager {
	t.Helper()
	bin := kubeControllerManagerBinary.find(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := a.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatalf("kube-controller-manager kubeconfig: %v", err)
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		// One instance; leader election would only add a lease and a wait.
		"--leader-elect=false",
		// Controllers act as the admin user: no service-account tokens
		// (there is no token signer key here) and no RBAC to set up.
		"--use-service-account-credentials=false",
		// No serving endpoint: nothing here scrapes it, and it saves a port
		// and the authentication delegation set-up.
		"--secure-port=0",
		"--v=2",
	}
	m := &ControllerManager{Dir: dir, Proc: newProcess(t, "kube-controller-manager", dir, bin, args, nil), t: t}
	m.Proc.Start()
	m.waitLog(svmControllerStarted, 2*time.Minute)
	return m
}

// waitLog waits until the log contains s, failing the test if the process
// exits or timeout passes first.
func (m *ControllerManager) waitLog(s string, timeout time.Duration) {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(m.Proc.Log(), s) {
		select {
		case <-m.Proc.Exited():
			m.t.Fatalf("kube-controller-manager exited while starting:\n%s", m.Proc.LogTail(40))
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("kube-controller-manager: no %s in its log within %s:\n%s", s, timeout, m.Proc.LogTail(40))
		}
	}
}

// Stop stops kube-controller-manager gracefully.
func (m *ControllerManager) Stop() { m.Proc.Stop() }
