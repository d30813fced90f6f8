package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

var (
	kubeletBinary    = binary{env: "KUBELET_BIN", fallback: ".build/bin/kubelet", target: "run `make kubelet`"}
	containerdBinary = binary{env: "CONTAINERD_BIN", fallback: "/usr/bin/containerd", target: "run `make node-packages` (installs the Debian packages containerd and runc)"}
	runcBinary       = binary{env: "RUNC_BIN", fallback: "/usr/sbin/runc", target: "run `make node-packages` (installs the Debian packages containerd and runc)"}
)

// NodeOptions describe a kubelet node.
type NodeOptions struct {
	// Name is the node's name (--hostname-override).
	Name string
	// APIServerURL is the API server the kubelet registers with, through
	// PKI; the kubelet runs standalone if empty. The API server need not be
	// up yet: a kubelet runs its static pods before it can register.
	APIServerURL string
	PKI          *PKI
	// SandboxImage is containerd's pause image (see PushPauseImage).
	SandboxImage string
	// InsecureRegistries are host:port registries pulled over plain http.
	InsecureRegistries []string
	// Isolated gives the node mount and network namespaces of its own (see
	// Namespaces), so that several nodes on this host can run the same
	// static pod. Binds and Forward are only used then.
	Isolated bool
	// Binds maps a path as the node sees it to the host directory bound
	// there: for example kms.yaml's node.socketDir to a directory of this
	// node's, where kmsctl and the tests reach its sockets.
	Binds map[string]string
	// Forward lists the host's 127.0.0.1 ports the node reaches at the same
	// address (the registry, Vault); the API server of APIServerURL is
	// forwarded anyway.
	Forward []int
}

// Node is a real kubelet with its own containerd (own root, state and
// socket) on loopback. Pods must use hostNetwork: there is no CNI here.
type Node struct {
	Name string
	Dir  string
	// ManifestDir is the kubelet's staticPodPath.
	ManifestDir string
	// PodLogsDir holds the containers' logs (<namespace>_<pod>_<uid>/<container>/N.log).
	PodLogsDir string
	Containerd *Process
	Kubelet    *Process

	// NS are the node's own namespaces; nil unless Isolated.
	NS *Namespaces

	containerdSock string
	containerdRoot string
	containerdRun  string
	kubeletRoot    string
	// cgroupRoot is the kubelet's cgroupRoot, "/<node dir's name>".
	cgroupRoot string
	t          testing.TB
}

// StartNode starts containerd and a kubelet and waits until the kubelet's
// healthz answers. Everything it started, containers included, is stopped
// and unmounted when the test ends.
//
// The recipe (../shared/DESIGN.md, "A real kubelet"): containerd with
// restrict_oom_score_adj (no CAP_SYS_RESOURCE here), runc, cgroupfs on
// cgroup v1 with failCgroupV1 false, swap allowed, no node allocatable
// enforcement, no local storage isolation.
func StartNode(t testing.TB, opts NodeOptions) *Node {
	t.Helper()
	kubelet := kubeletBinary.find(t)
	containerd := containerdBinary.find(t)
	runc := runcBinary.find(t)
	if os.Geteuid() != 0 {
		t.Fatal("a real kubelet and containerd need root; run the e2e tests as root (CI does)")
	}
	// Short paths: containerd's and the shims' unix sockets live under
	// these directories, and socket paths are limited to ~100 bytes.
	dir, err := os.MkdirTemp("", "node-")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{
		Name:           opts.Name,
		Dir:            dir,
		ManifestDir:    filepath.Join(dir, "manifests"),
		PodLogsDir:     filepath.Join(dir, "pod-logs"),
		containerdSock: filepath.Join(dir, "containerd.sock"),
		containerdRoot: filepath.Join(dir, "containerd"),
		containerdRun:  filepath.Join(dir, "run"),
		kubeletRoot:    filepath.Join(dir, "kubelet"),
		t:              t,
	}
	// Registered first so it runs last: after both processes stopped.
	t.Cleanup(n.teardown)
	for _, d := range []string{n.ManifestDir, n.PodLogsDir, filepath.Join(dir, "certs.d"), n.kubeletRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, reg := range opts.InsecureRegistries {
		if err := os.MkdirAll(filepath.Join(dir, "certs.d", reg), 0o755); err != nil {
			t.Fatal(err)
		}
		hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+reg, "http://"+reg)
		writeFile(t, filepath.Join(dir, "certs.d", reg), "hosts.toml", []byte(hosts))
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, n.containerdRoot, n.containerdRun, n.containerdSock, n.containerdSock+".ttrpc", opts.SandboxImage, runc, filepath.Join(dir, "certs.d"))
	configPath := writeFile(t, dir, "containerd.toml", []byte(config))
	if opts.Isolated {
		forward := slices.Clone(opts.Forward)
		if opts.APIServerURL != "" {
			forward = append(forward, portOf(t, opts.APIServerURL))
		}
		n.NS = NewNamespaces(t, opts.Name, dir, opts.Binds, forward)
	}
	n.Containerd = n.newProcess("containerd-"+opts.Name, containerd, []string{"--config=" + configPath})
	n.Containerd.Start()
	waitFor(t, 30*time.Second, n.Containerd, "containerd socket", func() error {
		_, err := os.Stat(n.containerdSock)
		return err
	})

	// Each kubelet gets its own cgroup root: a kubelet removes the pod
	// cgroups under its root that it does not know, which, under a shared
	// root, kills another kubelet's containers on the same host.
	n.cgroupRoot = "/" + filepath.Base(dir)
	for _, d := range n.cgroupDirs() {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("cgroup root for node %s: %v", opts.Name, err)
		}
	}
	healthz := vaulttest.FreePort(t)
	kubeletConfig := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: %s
failCgroupV1: false
failSwapOn: false
staticPodPath: %s
podLogsDir: %s
fileCheckFrequency: 2s
syncFrequency: 5s
containerRuntimeEndpoint: unix://%s
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
nodeStatusUpdateFrequency: 2s
imageGCHighThresholdPercent: 100
evictionHard: {}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
`, n.cgroupRoot, n.ManifestDir, n.PodLogsDir, n.containerdSock, vaulttest.FreePort(t), healthz)
	args := []string{
		"--config=" + writeFile(t, dir, "kubelet.yaml", []byte(kubeletConfig)),
		"--root-dir=" + n.kubeletRoot,
		"--cert-dir=" + filepath.Join(dir, "kubelet-pki"),
		"--hostname-override=" + opts.Name,
		"--v=2",
	}
	if n.NS != nil {
		args = append(args, "--node-ip="+n.NS.NodeIP)
	}
	if opts.APIServerURL != "" {
		cert := opts.PKI.CA.IssueClient(t, "kubelet-"+opts.Name, "system:node:"+opts.Name, "system:nodes")
		kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: %q, certificate-authority: %q}
users:
- name: node
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: e2e
  context: {cluster: e2e, user: node}
current-context: e2e
`, opts.APIServerURL, opts.PKI.CA.CertPath, cert.CertPath, cert.KeyPath)
		args = append(args, "--kubeconfig="+writeFile(t, dir, "kubelet.kubeconfig", []byte(kubeconfig)))
	}
	n.Kubelet = n.newProcess("kubelet-"+opts.Name, kubelet, args)
	n.Kubelet.Start()
	waitFor(t, 90*time.Second, n.Kubelet, "kubelet healthz", func() error {
		_, err := n.HTTPGet(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz))
		return err
	})
	return n
}

// newProcess describes one of the node's processes, run inside its
// namespaces if it has its own.
func (n *Node) newProcess(name, bin string, args []string) *Process {
	if n.NS != nil {
		args = n.NS.Enter(true, bin, args...)
		bin = "nsenter"
	}
	return newProcess(n.t, name, n.Dir, bin, args, nil)
}

// HTTPGet is httpGet from the node's network: the kubelet's healthz and a
// plugin's metrics port listen on the node's loopback.
func (n *Node) HTTPGet(url string) (string, error) {
	if n.NS == nil {
		return httpGet(url)
	}
	return httpGetWith(&http.Transport{DialContext: n.NS.DialContext}, url)
}

// AddStaticPod copies a manifest into the kubelet's staticPodPath as name,
// atomically, as an operator (or kmsctl) would.
func (n *Node) AddStaticPod(name string, manifest []byte) {
	n.t.Helper()
	if err := WriteFileAtomic(filepath.Join(n.ManifestDir, name), manifest); err != nil {
		n.t.Fatalf("write static pod %s: %v", name, err)
	}
}

// MirrorPod returns the API server's mirror of a static pod on this node:
// kubelet names it <pod name>-<node name>.
func (n *Node) MirrorPod(ctx context.Context, a *APIServer, namespace, podName string) (*corev1.Pod, error) {
	return a.Client.CoreV1().Pods(namespace).Get(ctx, podName+"-"+n.Name, metav1.GetOptions{})
}

// WaitMirrorPod waits until the mirror pod satisfies cond, and returns it.
func (n *Node) WaitMirrorPod(a *APIServer, namespace, podName string, timeout time.Duration, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		pod, err := n.MirrorPod(ctx, a, namespace, podName)
		cancel()
		if err == nil && cond(pod) {
			return pod
		}
		if err != nil {
			last = err.Error()
		} else {
			last = DescribePod(pod)
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("mirror pod %s/%s-%s not %s within %s; last seen: %s\n%s", namespace, podName, n.Name, what, timeout, last, n.Kubelet.LogTail(40))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// EmptyDirs returns the host directories of the emptyDir volumes named
// volume of every pod on the node.
func (n *Node) EmptyDirs(volume string) []string {
	dirs, _ := filepath.Glob(filepath.Join(n.kubeletRoot, "pods", "*", "volumes", "kubernetes.io~empty-dir", volume))
	return dirs
}

// PodReady reports the pod's Ready condition.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RestartCount sums the restarts of the pod's containers (init included).
func RestartCount(p *corev1.Pod) int32 {
	var n int32
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		n += s.RestartCount
	}
	return n
}

// DescribePod says in one line what a pod is doing, for failure messages.
func DescribePod(p *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s ready %v", p.Status.Phase, PodReady(p))
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		fmt.Fprintf(&b, "; %s ready=%v restarts=%d", s.Name, s.Ready, s.RestartCount)
		switch {
		case s.State.Waiting != nil:
			fmt.Fprintf(&b, " waiting %s: %s", s.State.Waiting.Reason, s.State.Waiting.Message)
		case s.State.Terminated != nil:
			fmt.Fprintf(&b, " terminated %s (exit %d): %s", s.State.Terminated.Reason, s.State.Terminated.ExitCode, s.State.Terminated.Message)
		}
	}
	return b.String()
}

// ContainerPIDs returns the host PIDs of processes this node's containers
// run whose command line contains match: children of this containerd's
// shims, found through /proc.
func (n *Node) ContainerPIDs(match string) []int {
	var pids []int
	for _, pid := range n.shimChildren() {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(strings.ReplaceAll(string(cmdline), "\x00", " "), match) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// shims are this containerd's runc shims: their command line names its
// socket. They outlive containerd by design, so teardown finds them here.
func (n *Node) shims() []int {
	return procs(func(pid int, cmdline string, _ int) bool {
		return strings.Contains(cmdline, "containerd-shim") && strings.Contains(cmdline, n.containerdSock)
	})
}

func (n *Node) shimChildren() []int {
	shim := map[int]bool{}
	for _, pid := range n.shims() {
		shim[pid] = true
	}
	return procs(func(_ int, _ string, ppid int) bool { return shim[ppid] })
}

// procs lists the PIDs in /proc that keep says to keep.
func procs(keep func(pid int, cmdline string, ppid int) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		ppid := 0
		// stat is "pid (comm) state ppid ..."; comm may hold spaces.
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
			if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
				ppid, _ = strconv.Atoi(f[1])
			}
		}
		if keep(pid, strings.ReplaceAll(string(cmdline), "\x00", " "), ppid) {
			out = append(out, pid)
		}
	}
	return out
}

// teardown kills what the node left running (containers and their shims
// outlive kubelet and containerd), unmounts what containerd mounted under
// the node's directory, and removes it.
func (n *Node) teardown() {
	if n.t.Failed() {
		n.logPodLogs()
	}
	// Either may be nil when starting the node failed half way.
	if n.Kubelet != nil {
		n.Kubelet.Stop()
	}
	for _, pid := range append(n.shimChildren(), n.shims()...) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if n.Containerd != nil {
		n.Containerd.Stop()
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	lines := strings.Split(string(mounts), "\n")
	// Innermost first: the reverse of mount order.
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) > 4 && strings.HasPrefix(f[4], n.Dir+"/") {
			_ = syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
	if err := os.RemoveAll(n.Dir); err != nil {
		n.t.Logf("remove node directory %s: %v", n.Dir, err)
	}
	// Empty once every container is gone; innermost first.
	for _, root := range n.cgroupDirs() {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}

// cgroupDirs are the node's cgroup root in every cgroup v1 hierarchy
// mounted under /sys/fs/cgroup; none before the root is chosen.
func (n *Node) cgroupDirs() []string {
	if n.cgroupRoot == "" {
		return nil
	}
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	var out []string
	for _, h := range hierarchies {
		if fi, err := os.Stat(h); err == nil && fi.IsDir() {
			out = append(out, filepath.Join(h, n.cgroupRoot))
		}
	}
	return out
}

// logPodLogs prints the end of every container log the kubelet kept, so a
// crash-looping container says why when a test fails.
func (n *Node) logPodLogs() {
	logs, _ := filepath.Glob(filepath.Join(n.PodLogsDir, "*", "*", "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		rel, _ := filepath.Rel(n.PodLogsDir, l)
		n.t.Logf("--- container log %s:\n%s", rel, strings.Join(lines, "\n"))
	}
}

// waitFor polls check until it returns nil, failing the test with the
// process's log if the process exits or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, p *Process, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-p.Exited():
			t.Fatalf("%s exited while waiting for %s:\n%s", p.Name, what, p.LogTail(40))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within %s (%v):\n%s", p.Name, what, timeout, err, p.LogTail(40))
		}
	}
}

// httpGet returns the body of a 200 answer, else an error with the body.
func httpGet(url string) (string, error) { return httpGetWith(nil, url) }

func httpGetWith(rt http.RoundTripper, url string) (string, error) {
	c := http.Client{Timeout: 3 * time.Second, Transport: rt}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}
