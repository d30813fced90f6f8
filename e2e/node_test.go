package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/apiserver"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/observe"
)

// TestRenderedStaticPodOnARealKubelet deploys the plugin the way users do
// (cluster.Deploy: the image `make image` built, pushed to a real registry,
// signed with the real cosign CLI, pinned by `kmsctl verify-image`, rendered
// by `kmsctl render`, Vault set up by the rendered script, the static pod
// copied unchanged into a real kubelet's manifest directory), then checks
// what users rely on: Secrets stored through the pod, the mirror pod Ready,
// and the kubelet's probes acting on Vault trouble and a crashed plugin.
func TestRenderedStaticPodOnARealKubelet(t *testing.T) {
	d := cluster.Deploy(t, cluster.DeployOptions{Progress: t.Logf, Nodes: 3})
	api := d.APIServer

	mirror := d.WaitPluginPod(2*time.Minute, "Ready", cluster.PodReady)
	if got := mirror.Spec.Containers[0].Image; got != d.Image {
		t.Fatalf("mirror pod runs image %q, want the verified %q", got, d.Image)
	}
	// The rendered prepare step handed kubelet's root 0755 directory to the
	// plugin's user, and vault-setup.sh wrote the secret ID for it alone.
	assertOwned(t, d.Nodes[0].SocketDir, 0o750, 65532)
	assertOwned(t, d.SecretIDPath, 0o400, 65532)

	// What kmsctl rollout observes before each step (lifecycle/rollout/
	// observe): kmsctl's files on the node, the plugin's socket passing
	// Status and the Encrypt/Decrypt preflight, the revision its mirror pod
	// runs, and the API server ready with the file on disk loaded. On that,
	// the planner has nothing to do.
	cfg, err := config.Load(d.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	kube, err := dynamic.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := apiserver.New(api.Config, api.URL)
	if err != nil {
		t.Fatal(err)
	}
	files := config.NodeFiles{Name: d.Node.Name, ManifestDir: d.Node.ManifestDir, EncryptionConfig: api.EncryptionConfigPath, SocketDir: d.Nodes[0].SocketDir, APIServer: api.URL}
	desired := render.Revision(cfg)
	var seen lifecycle.Node
	if !waitFor(time.Minute, func() bool {
		seen, err = observe.Node(t.Context(), files, kube, obs)
		h := seen.Plugins[d.Provider]
		return err == nil && h.Running == desired && h.StatusOK && h.PreflightOK && seen.APIServer.ReadyzKMS && seen.APIServer.LoadedConfigHash == seen.ConfigHash
	}) {
		t.Errorf("observed node %+v (err %v), want the plugin at %s healthy and the API server on the file on disk", seen, err, desired)
	}
	if step := rollout.Next(rollout.Observed{Desired: desired, Nodes: []lifecycle.Node{seen}, Now: time.Now(),
		Progress: rollout.Progress{LastKnownGood: map[string]lifecycle.NodeConfig{seen.Name: seen.OnDisk}}}); step.Action != rollout.Done {
		t.Errorf("the planner on the deployed node says %s, want done", step)
	}

	secrets := map[string]string{}
	createStoredBy(t, d, secrets, "through-the-pod")

	t.Run("Vault not answering makes the pod not Ready, and Ready again after", func(t *testing.T) {
		d.Vault.Pause()
		paused := true
		defer func() {
			if paused {
				d.Vault.Resume()
			}
		}()
		d.WaitPluginPod(2*time.Minute, "not Ready", func(p *corev1.Pod) bool { return !cluster.PodReady(p) })
		// The API server keeps reading with its cached DEKs.
		assertReads(t, api, secrets)
		d.Vault.Resume()
		paused = false
		d.WaitPluginPod(2*time.Minute, "Ready again", cluster.PodReady)
	})

	t.Run("a killed plugin is restarted by the kubelet and Secrets stay readable", func(t *testing.T) {
		before := cluster.RestartCount(d.WaitPluginPod(time.Minute, "Ready", cluster.PodReady))
		pids := d.Node.ContainerPIDs("-listen-address=" + d.Endpoint)
		if len(pids) != 1 {
			t.Fatalf("found %d plugin processes serving %s, want 1", len(pids), d.Endpoint)
		}
		if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		d.WaitPluginPod(2*time.Minute, "restarted and Ready", func(p *corev1.Pod) bool {
			return cluster.RestartCount(p) > before && cluster.PodReady(p)
		})
		// A restarted API server has no DEK cache: reading needs the plugin.
		api.Restart()
		api.WaitReady(2 * time.Minute)
		assertReads(t, api, secrets)
		createStoredBy(t, d, secrets, "after-restart")
	})

	t.Run("OpenShift's argument list in a native sidecar with its socket on an emptyDir serves the API server", func(t *testing.T) {
		testOpenShiftStyleSidecar(t, d, secrets)
	})

	t.Run("kmsctl rollout", func(t *testing.T) {
		testRollouts(t, d, secrets)
	})

	secretID := readFile(t, d.SecretIDPath)
	for _, n := range d.Nodes {
		for _, p := range []*cluster.Process{n.Kubelet, n.Containerd, n.APIServer.Proc} {
			if strings.Contains(p.Log(), secretID) {
				t.Errorf("%s logged the secret ID", p.Name)
			}
		}
	}
}

// assertStoredBy checks a Secret's raw etcd value: written through the KMSv2
// provider named provider, and without its plaintext.
func assertStoredBy(t *testing.T, etcd *cluster.Etcd, provider, name, plaintext string) {
	t.Helper()
	raw, err := etcd.Get(t.Context(), cluster.SecretKey(namespace, name))
	if err != nil || raw == nil {
		t.Fatalf("etcd value of secret %s: %v (present: %v)", name, err, raw != nil)
	}
	if strings.Contains(string(raw), plaintext) {
		t.Fatalf("etcd value of secret %s contains its plaintext", name)
	}
	if _, err := cluster.ParseStoredBy(raw, provider); err != nil {
		t.Fatalf("secret %s: %v", name, err)
	}
}

func assertOwned(t *testing.T, path string, mode os.FileMode, uid uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != mode || st.Uid != uid {
		t.Fatalf("%s: mode %v owner %d, want %v owned by %d", path, fi.Mode().Perm(), st.Uid, mode, uid)
	}
}

// testOpenShiftStyleSidecar runs the plugin the way OpenShift's KMS plugin
// lifecycle does (openshift/library-go
// pkg/operator/encryption/kms/pluginlifecycle/vault.go): a native sidecar
// (an init container with restartPolicy: Always) of the kube-apiserver pod,
// exactly OpenShift's argument list, the socket on an emptyDir, and the
// Vault policy vault-setup.sh wrote, HashiCorp's documented minimum. The pod's
// main container stands in for kube-apiserver, which runs on the host here
// and reaches the emptyDir the kubelet made; it is pointed at the sidecar's
// socket under the provider name it already uses (same key), so it reads
// everything written before and writes through the sidecar.
func testOpenShiftStyleSidecar(t *testing.T, d *cluster.Deployment, secrets map[string]string) {
	api := d.APIServer
	policy := readFile(t, filepath.Join(d.RenderedDir, "vault-policy.hcl"))
	if strings.Contains(policy, "/hmac/") {
		t.Fatalf("the rendered policy grants more than HashiCorp's minimum (encrypt, decrypt, read the key):\n%s", policy)
	}
	// OpenShift always passes -tls-ca-file and -tls-sni; the e2e's Vault is
	// plain HTTP on loopback, so they are accepted and unused here (TLS with
	// exactly these flags is covered by plugin/'s TestOpenShiftsExactArgumentListOverTLS).
	caPEM, err := os.ReadFile(d.PKI.CA.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.CredDir, "vault-ca.pem"), caPEM, 0o444); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"-listen-address=unix:///var/run/kmsplugin/kms.sock",
		"-vault-address=" + d.Vault.Addr,
		"-vault-key-path=transit/keys/kubernetes",
		"-approle-role-id=" + d.RoleID,
		"-approle-secret-id-path=/etc/vault-kms/secret-id",
		"-tls-ca-file=/etc/vault-kms/vault-ca.pem",
		"-tls-sni=vault.openshift.internal",
		"-vault-namespace=",
		"-vault-auth-namespace=",
		"-metrics-port=0",
	}
	var argLines strings.Builder
	for _, a := range args {
		fmt.Fprintf(&argLines, "    - %q\n", a)
	}
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver-openshift-style
  namespace: kube-system
spec:
  hostNetwork: true
  initContainers:
  - name: vault-kms-plugin
    image: %s
    restartPolicy: Always
    args:
%s    securityContext:
      runAsUser: 65532
      runAsGroup: 65532
      runAsNonRoot: true
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
    volumeMounts:
    - {name: kms-socket, mountPath: /var/run/kmsplugin}
    - {name: vault-kms, mountPath: /etc/vault-kms, readOnly: true}
  containers:
  - name: kube-apiserver
    image: %s
    volumeMounts:
    - {name: kms-socket, mountPath: /var/run/kmsplugin}
  volumes:
  - {name: kms-socket, emptyDir: {}}
  - {name: vault-kms, hostPath: {path: %s, type: Directory}}
`, d.Image, argLines.String(), d.PauseImage, d.CredDir)
	d.Node.AddStaticPod("kube-apiserver-openshift-style.yaml", []byte(manifest))

	var sockDir string
	found := waitFor(3*time.Minute, func() bool {
		for _, dir := range d.Node.EmptyDirs("kms-socket") {
			if _, err := os.Stat(filepath.Join(dir, "kms.sock")); err == nil {
				sockDir = dir
				return true
			}
		}
		return false
	})
	if !found {
		t.Fatalf("no socket on the sidecar's emptyDir after 3 minutes; kubelet log:\n%s", d.Node.Kubelet.LogTail(30))
	}
	// The kubelet's path is longer than a unix socket address may be (108
	// bytes); a short symlink to the directory reaches the same socket.
	link := filepath.Join(t.TempDir(), "kms")
	if err := os.Symlink(sockDir, link); err != nil {
		t.Fatal(err)
	}
	endpoint := "unix://" + link + "/kms.sock"
	cluster.WaitKMSStatusOK(t, endpoint, 2*time.Minute, d.Node.Kubelet)
	mirror := d.Node.WaitMirrorPod(api, "kube-system", "kube-apiserver-openshift-style", 2*time.Minute, "sidecar started",
		func(p *corev1.Pod) bool {
			return len(p.Status.InitContainerStatuses) == 1 && p.Status.InitContainerStatuses[0].Started != nil && *p.Status.InitContainerStatuses[0].Started
		})
	t.Logf("sidecar %s started; socket %s", mirror.Status.InitContainerStatuses[0].Name, filepath.Join(sockDir, "kms.sock"))

	enc, err := os.ReadFile(api.EncryptionConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(enc), d.Endpoint) {
		t.Fatalf("the API server's EncryptionConfiguration does not name %s:\n%s", d.Endpoint, enc)
	}
	if err := os.WriteFile(api.EncryptionConfigPath, []byte(strings.ReplaceAll(string(enc), d.Endpoint, endpoint)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A restart starts with no DEK cache: every read below goes through
	// the sidecar.
	api.Restart()
	api.WaitReady(2 * time.Minute)
	assertReads(t, api, secrets)
	createStoredBy(t, d, secrets, "through-the-sidecar")
	assertReads(t, api, secrets)

	// Back to the static pod kmsctl rendered, for the rollouts that follow.
	if err := os.WriteFile(api.EncryptionConfigPath, enc, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(d.Node.ManifestDir, "kube-apiserver-openshift-style.yaml")); err != nil {
		t.Fatal(err)
	}
	api.Restart()
	api.WaitReady(2 * time.Minute)
	assertReads(t, api, secrets)
}

// createStoredBy creates Secret name through the deployment's API server,
// checks etcd holds it under the deployment's provider, and adds it to
// secrets for later reads.
func createStoredBy(t *testing.T, d *cluster.Deployment, secrets map[string]string, name string) {
	t.Helper()
	value := secretValue(name)
	if err := tryCreateSecret(t.Context(), d.APIServer, name, value); err != nil {
		t.Fatal(err)
	}
	assertStoredBy(t, d.Etcd, d.Provider, name, value)
	secrets[name] = value
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeNodesYAML writes, in dir, a kubeconfig for d's API server and a
// nodes.yaml listing d's one node with its state in stateDir, as an
// operator would for kmsctl rollout; it returns their paths.
func writeNodesYAML(t *testing.T, d *cluster.Deployment, dir, stateDir string) (kubeconfig, nodes string) {
	t.Helper()
	api := d.APIServer
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := api.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	nodes = filepath.Join(dir, "nodes.yaml")
	doc := fmt.Sprintf("apiVersion: kmsctl.vaultkms.io/v1alpha1\nkind: Nodes\nstateDir: %s\nnodes:\n", stateDir)
	for _, n := range d.Nodes {
		doc += fmt.Sprintf("- {name: %s, manifestDir: %s, encryptionConfig: %s, socketDir: %s, apiServer: %q}\n",
			n.Name, n.ManifestDir, n.APIServer.EncryptionConfigPath, n.SocketDir, n.APIServer.URL)
	}
	writeTestFile(t, nodes, doc)
	return kubeconfig, nodes
}
