// Command demo brings up the whole product for `make demo`, the way a user
// runs it (cluster.Deploy): Vault (dev server), a registry, the plugin image
// signed with cosign and verified by kmsctl, the files kmsctl renders, a real
// kubelet with containerd running the plugin's static pod, etcd, and a
// kube-apiserver that encrypts Secrets through it. It creates a Secret, shows the ciphertext etcd holds,
// writes a kubeconfig, prints what to try next, and runs until SIGINT or
// SIGTERM. `demo -down` (make demo-down) stops a running demo; `demo -dump
// namespace/name` prints a Secret's raw etcd value.
//
// The binaries are built by make; the demo only finds them, the same way
// the end-to-end tests do.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
)

// state is what a running demo writes to state.json for -down and -dump.
type state struct {
	PID           int               `json:"pid"`
	VaultAddr     string            `json:"vault_addr"`
	EtcdEndpoint  string            `json:"etcd_endpoint"`
	APIServerURL  string            `json:"apiserver_url"`
	PluginSocket  string            `json:"plugin_socket"`
	PluginMetrics string            `json:"plugin_metrics"`
	Rendered      string            `json:"rendered"`
	Kubeconfig    string            `json:"kubeconfig"`
	PIDs          map[string]int    `json:"pids"`
	Logs          map[string]string `json:"logs"`
}

func main() {
	stateDir := flag.String("state-dir", filepath.Join(cluster.RepoRoot(), ".build", "demo"), "directory for the demo's state, logs and kubeconfig")
	down := flag.Bool("down", false, "stop the demo running from -state-dir and exit")
	dump := flag.String("dump", "", "print the raw etcd value of Secret `namespace/name` of the running demo and exit")
	flag.Parse()
	var err error
	switch {
	case *down:
		err = stop(*stateDir)
	case *dump != "":
		err = dumpSecret(*stateDir, *dump)
	default:
		err = run(*stateDir)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func run(dir string) error {
	if pid, ok := runningPID(dir); ok {
		return fmt.Errorf("a demo is already running (pid %d); stop it with `make demo-down`", pid)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	pidFile := filepath.Join(dir, "demo.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	r := newRunner(dir)
	r.Cleanup(func() { os.Remove(pidFile) })
	defer r.Close()

	d := cluster.Deploy(r, cluster.DeployOptions{Progress: say})
	a := d.APIServer
	say("kube-apiserver is ready with KMSv2 provider %q, served by the static pod %s on node %s", d.Provider, d.PodName, d.Node.Name)
	d.WaitPluginPod(2*time.Minute, "Ready", cluster.PodReady)
	say("kubectl get pods -n kube-system shows the plugin's mirror pod %s-%s Ready", d.PodName, d.Node.Name)

	const name, value = "db-password", "correct-horse-battery-staple"
	say("creating Secret default/%s with password=%q", name, value)
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Data:       map[string][]byte{"password": []byte(value)},
	}
	if _, err := a.Client.CoreV1().Secrets("default").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		r.Fatalf("create Secret: %v", err)
	}
	raw, err := d.Etcd.Get(ctx, cluster.SecretKey("default", name))
	if err != nil || raw == nil {
		r.Fatalf("read %s from etcd: %v", cluster.SecretKey("default", name), err)
	}
	say("raw etcd value of %s:", cluster.SecretKey("default", name))
	printStored(raw, value)

	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := a.WriteKubeconfig(kubeconfig); err != nil {
		r.Fatalf("write kubeconfig: %v", err)
	}
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(d.Vault.RootToken), 0o600); err != nil {
		r.Fatalf("write Vault token file: %v", err)
	}
	st := state{
		PID:           os.Getpid(),
		VaultAddr:     d.Vault.Addr,
		EtcdEndpoint:  d.Etcd.Endpoint,
		APIServerURL:  a.URL,
		PluginSocket:  d.Endpoint,
		PluginMetrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", d.MetricsPort),
		Kubeconfig:    kubeconfig,
		Rendered:      d.RenderedDir,
		PIDs: map[string]int{
			"etcd": d.Etcd.Proc.PID(), a.Name: a.Proc.PID(),
			d.Node.Kubelet.Name: d.Node.Kubelet.PID(), d.Node.Containerd.Name: d.Node.Containerd.PID(),
		},
		Logs: map[string]string{
			"vault": d.Vault.LogPath, "etcd": d.Etcd.Proc.LogPath, a.Name: a.Proc.LogPath,
			d.Node.Kubelet.Name: d.Node.Kubelet.LogPath, d.Node.Containerd.Name: d.Node.Containerd.LogPath,
			"vault-kms-plugin (pod)": filepath.Join(d.Node.PodLogsDir, "kube-system_"+d.PodName+"-"+d.Node.Name+"_*", "vault-kms-plugin", "*.log"),
		},
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	stateFile := filepath.Join(dir, "state.json")
	if err := os.WriteFile(stateFile, b, 0o600); err != nil {
		r.Fatalf("write state: %v", err)
	}
	// The token is for a dev server that dies with the demo; the state
	// describes processes that are gone. Logs and kubeconfig stay.
	r.Cleanup(func() { os.Remove(stateFile); os.Remove(tokenFile) })
	printNext(dir, st, tokenFile)

	select {
	case <-ctx.Done():
		say("stopping the demo")
	case <-a.Proc.Exited():
		r.Fatalf("kube-apiserver exited; its log: %s", a.Proc.LogPath)
	case <-d.Node.Kubelet.Exited():
		r.Fatalf("kubelet exited; its log: %s", d.Node.Kubelet.LogPath)
	case <-d.Etcd.Proc.Exited():
		r.Fatalf("etcd exited; its log: %s", d.Etcd.Proc.LogPath)
	}
	r.Close()
	say("stopped; logs are under %s", rel(dir))
	return nil
}

// printStored shows what etcd holds: the prefix, the key_id, a hex dump,
// and whether the plaintext is anywhere in it.
func printStored(raw []byte, plaintext string) {
	provider, _ := cluster.ProviderOf(raw)
	stored, err := cluster.ParseStoredBy(raw, provider)
	if err != nil {
		fmt.Printf("    %v\n", err)
	} else {
		fmt.Printf("    prefix:  %q\n", "k8s:enc:kms:v2:"+provider+":")
		fmt.Printf("    key_id:  %s\n", stored.Object.KeyID)
		fmt.Printf("    wrapped DEK source (Vault transit ciphertext): %.60s…\n", stored.Object.EncryptedDEKSource)
		fmt.Printf("    encrypted data: %d bytes\n", len(stored.Object.EncryptedData))
	}
	shown := raw
	if len(shown) > 192 {
		shown = shown[:192]
	}
	for _, line := range strings.Split(strings.TrimRight(hex.Dump(shown), "\n"), "\n") {
		fmt.Printf("    %s\n", line)
	}
	if len(raw) > len(shown) {
		fmt.Printf("    … %d bytes in all\n", len(raw))
	}
	if plaintext != "" {
		found := "no"
		if strings.Contains(string(raw), plaintext) {
			found = "YES (not encrypted!)"
		}
		fmt.Printf("    plaintext %q in etcd: %s\n", plaintext, found)
	}
}

func printNext(dir string, st state, tokenFile string) {
	vault := rel(filepath.Join(cluster.RepoRoot(), ".build", "bin", "vault"))
	demo := rel(filepath.Join(cluster.RepoRoot(), ".build", "bin", "e2e-demo"))
	kubectl := rel(filepath.Join(cluster.RepoRoot(), ".build", "bin", "kubectl")) // v1.37.2, built by make demo
	fmt.Printf(`
The stack is running: the plugin is a static pod under a real kubelet, from the
image make image built, signed with cosign and verified by kmsctl. What kmsctl
rendered is in %[9]s. In another terminal, try:

  export KUBECONFIG=%[1]s
  %[8]s get pods -n kube-system -o wide       # the plugin's mirror pod
  %[8]s get secret db-password -o jsonpath='{.data.password}' | base64 -d; echo
  %[8]s create secret generic mine --from-literal=token=hello
  %[2]s -dump default/mine                  # raw etcd bytes: k8s:enc:kms:v2:<provider>:…
  %[8]s get --raw '/readyz?verbose' | grep kms
  curl -s %[6]s | grep ^vault_kms_plugin_

  # rotate the transit key; within a minute new writes carry key_id …:v2:…
  VAULT_ADDR=%[3]s VAULT_TOKEN=$(cat %[4]s) %[5]s write -f transit/keys/kubernetes/rotate

Logs: %[7]s (Vault, etcd, kube-apiserver), state.json lists every log
State: %[7]s/state.json
Stop with Ctrl-C, or from another terminal: make demo-down
`, rel(st.Kubeconfig), demo, st.VaultAddr, rel(tokenFile), vault, st.PluginMetrics, rel(dir), kubectl, rel(st.Rendered))
}

// rel shortens path relative to the working directory when it is inside it.
func rel(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	r, err := filepath.Rel(wd, path)
	if err != nil || strings.HasPrefix(r, "..") {
		return path
	}
	return r
}

func runningPID(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "demo.pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0, false
	}
	return pid, true
}

// stop sends SIGTERM to the running demo, which stops its processes, and
// waits for it to exit; after 60s it kills it (its children die with it).
func stop(dir string) error {
	pid, ok := runningPID(dir)
	if !ok {
		fmt.Println("no demo is running")
		return nil
	}
	fmt.Printf("stopping the demo (pid %d)\n", pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok := runningPID(dir); !ok {
			fmt.Println("stopped")
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	os.Remove(filepath.Join(dir, "demo.pid"))
	return fmt.Errorf("the demo did not stop within 60s; killed pid %d", pid)
}

func dumpSecret(dir, ref string) error {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" {
		return fmt.Errorf("-dump wants namespace/name, not %q", ref)
	}
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return fmt.Errorf("no running demo (%w); start one with `make demo`", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("read state.json: %w", err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{st.EtcdEndpoint}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := cluster.SecretKey(ns, name)
	resp, err := c.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("etcd get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("etcd has no %s", key)
	}
	fmt.Printf("%s:\n", key)
	printStored(resp.Kvs[0].Value, "")
	return nil
}
