package cluster

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/registrytest"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// DeployOptions say how many nodes Deploy runs and how it reports progress.
type DeployOptions struct {
	// Progress, if set, is told about each step as it starts.
	Progress func(format string, args ...any)
	// Nodes is the number of control-plane nodes (1 if zero), cp-1, cp-2,
	// ...: each a kubelet with its own containerd running the rendered
	// static pod, and a kube-apiserver of its own, all on one etcd. Several
	// nodes each get namespaces of their own (see Namespaces), so that the
	// same static pod runs on every one as on identical hosts; a single
	// node runs in the host's, where `make demo`'s user reaches it.
	Nodes int
}

// DeployedNode is one control-plane node of a Deployment.
type DeployedNode struct {
	*Node
	APIServer *APIServer
	// SocketDir is the node's socket directory (kms.yaml's node.socketDir)
	// as this host reaches it, and Endpoint the rendered provider's socket
	// in it: where kmsctl and the tests dial the node's plugins.
	SocketDir, Endpoint string
}

// Deployment is the product deployed the way users run it: the plugin as a
// static pod under a real kubelet, next to a kube-apiserver on the host.
type Deployment struct {
	Vault    *vaulttest.Server
	Registry *registrytest.Registry
	// Image is what kmsctl verify-image printed: repo@sha256:<index digest>.
	Image string
	// PauseImage is the node's sandbox image, also a container that does
	// nothing.
	PauseImage string
	// CosignPub is the public key the image was signed for.
	CosignPub string
	cosignKey string
	// ConfigPath is the kms.yaml the deployment was rendered from, and
	// RenderedDir what kmsctl render wrote.
	ConfigPath, RenderedDir string
	// Provider and Endpoint name the KMS provider in the rendered
	// EncryptionConfiguration.
	Provider, Endpoint string
	// SocketDir is kms.yaml's node.socketDir, as the nodes see it.
	SocketDir string
	// CredDir holds the role ID and secret ID that vault-setup.sh wrote;
	// SecretIDPath is the secret ID's file in it, RoleID the role ID.
	CredDir      string
	SecretIDPath string
	RoleID       string
	// MetricsPort is the plugin's /metrics, /livez and /readyz port.
	MetricsPort int
	// PodName is the static pod's name; its mirror pod is PodName-<node>.
	PodName string
	Etcd    *Etcd
	PKI     *PKI
	Nodes   []*DeployedNode
	// Node and APIServer are the first node's.
	Node      *Node
	APIServer *APIServer
}

// Deploy builds nothing and mocks nothing: it pushes the image `make image`
// built to a real registry, signs it with the real cosign CLI, pins its
// digest with `kmsctl verify-image`, renders kms.yaml with `kmsctl render`,
// runs the rendered vault-setup.sh as root against a dev Vault, copies the
// rendered static pod unchanged into a real kubelet's manifest directory, and
// starts kube-apiserver with the rendered EncryptionConfiguration once the
// pod serves. It returns when the API server is ready.
func Deploy(t testing.TB, opts DeployOptions) *Deployment {
	t.Helper()
	CheckBinaries(t)
	CheckNodeBinaries(t)
	say := opts.Progress
	if say == nil {
		say = func(string, ...any) {}
	}
	d := &Deployment{}
	say("starting Vault (dev server) and an OCI registry (docker-registry)")
	d.Vault = vaulttest.StartDev(t)
	d.Registry = registrytest.Start(t)
	say("pushing the pause image and the plugin image from `make image` to %s", d.Registry.Host)
	d.PauseImage = PushPauseImage(t, d.Registry.Host)
	pushed := PushPluginImage(t, d.Registry.Host+"/vault-kms-plugin")

	// Sign the index digest as a release pipeline would; kmsctl resolves the
	// tag and checks the signature, and its answer is what gets deployed.
	keys := t.TempDir()
	say("signing %s with cosign (key pair in %s)", pushed, keys)
	mustRun(t, "cosign generate-key-pair", func() (string, string, error) {
		return Cosign(t, cosignEnv, "generate-key-pair", "--output-key-prefix", filepath.Join(keys, "cosign"))
	})
	d.CosignPub = filepath.Join(keys, "cosign.pub")
	d.cosignKey = filepath.Join(keys, "cosign.key")
	d.Sign(t, pushed)
	say("kmsctl verify-image --key cosign.pub %s/vault-kms-plugin:e2e", d.Registry.Host)
	d.Image = strings.TrimSpace(mustRun(t, "kmsctl verify-image", func() (string, string, error) {
		return Kmsctl(t, "verify-image", "--key", d.CosignPub, "--allow-insecure-registry", d.Registry.Host+"/vault-kms-plugin:e2e")
	}))
	if d.Image != pushed {
		t.Fatalf("kmsctl verify-image printed %q, want the pushed digest %q", d.Image, pushed)
	}

	// The node's directories, as on a control-plane host. The socket
	// directory does not exist yet on a single node: kubelet creates it root
	// 0755, and the rendered prepare step must hand it to the plugin's user.
	// Several nodes each bind a directory of their own (root 0755 too) over
	// it.
	nodes := max(opts.Nodes, 1)
	base, err := os.MkdirTemp("", "kmsnode-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	d.SocketDir = filepath.Join(base, "kmsplugin")
	d.CredDir = filepath.Join(base, "vault-kms")
	d.SecretIDPath = filepath.Join(d.CredDir, "secret-id")
	d.RoleID = "e2e-node-role-id"
	if err := os.MkdirAll(d.CredDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if nodes > 1 {
		if err := os.MkdirAll(d.SocketDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d.MetricsPort = vaulttest.FreePort(t)
	config := fmt.Sprintf(`apiVersion: kmsctl.vaultkms.io/v1alpha1
kind: KMSConfig
revision: "1"
vault:
  kmsPluginImage: %s
  vaultAddress: %s
  insecureAllowHTTPLoopback: true
  vaultKeyPath: transit/keys/kubernetes
  authentication:
    type: AppRole
    appRole:
      roleName: kms-plugin
      roleID: %s
      secretIDPath: %s
node:
  socketDir: %s
  metricsPort: %d
encryption:
  resources: [secrets]
  allowUnencrypted: true
`, d.Image, d.Vault.Addr, d.RoleID, d.SecretIDPath, d.SocketDir, d.MetricsPort)
	work := t.TempDir()
	d.ConfigPath = filepath.Join(work, "kms.yaml")
	if err := os.WriteFile(d.ConfigPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	d.RenderedDir = filepath.Join(work, "rendered")
	say("kmsctl render --config %s --out %s", d.ConfigPath, d.RenderedDir)
	mustRun(t, "kmsctl render", func() (string, string, error) {
		return Kmsctl(t, "render", "--config", d.ConfigPath, "--out", d.RenderedDir)
	})
	podManifest := readRendered(t, d.RenderedDir, "vault-kms-plugin.yaml")
	encConfig := readRendered(t, d.RenderedDir, "encryption-config.yaml")
	d.Provider, d.Endpoint = kmsProvider(t, encConfig)
	d.PodName = podName(t, podManifest)

	say("running the rendered vault-setup.sh as root against %s", d.Vault.Addr)
	d.SetUpVault(t, d.RenderedDir)

	say("starting etcd")
	d.Etcd = StartEtcd(t)
	d.PKI = NewPKI(t, t.TempDir())
	forward := []int{portOf(t, "http://"+d.Registry.Host), portOf(t, d.Vault.Addr)}
	apiPorts := make([]int, nodes)
	written := make([]time.Time, nodes)
	for i := range nodes {
		dn := &DeployedNode{SocketDir: d.SocketDir}
		name := fmt.Sprintf("cp-%d", i+1)
		opts := NodeOptions{
			Name:               name,
			PKI:                d.PKI,
			SandboxImage:       d.PauseImage,
			InsecureRegistries: []string{d.Registry.Host},
		}
		if nodes > 1 {
			dn.SocketDir = filepath.Join(base, "nodes", name, "kmsplugin")
			if err := os.MkdirAll(dn.SocketDir, 0o755); err != nil {
				t.Fatal(err)
			}
			opts.Isolated = true
			opts.Binds = map[string]string{d.SocketDir: dn.SocketDir}
			opts.Forward = forward
		}
		dn.Endpoint = "unix://" + filepath.Join(dn.SocketDir, d.Provider+".sock")
		apiPorts[i] = vaulttest.FreePort(t)
		opts.APIServerURL = fmt.Sprintf("https://127.0.0.1:%d", apiPorts[i])
		say("starting containerd and kubelet (node %s), and copying the rendered static pod into its manifest directory", name)
		dn.Node = StartNode(t, opts)
		dn.Node.AddStaticPod("vault-kms-plugin.yaml", podManifest)
		written[i] = time.Now()
		d.Nodes = append(d.Nodes, dn)
	}
	for i, dn := range d.Nodes {
		WaitKMSStatusOK(t, dn.Endpoint, 3*time.Minute, dn.Kubelet)
		say("node %s: the kubelet pulled %s; the plugin answered Status ok on %s %.1fs after its manifest appeared", dn.Name, d.Image, dn.Endpoint, time.Since(written[i]).Seconds())
		say("starting kube-apiserver on node %s with the rendered EncryptionConfiguration", dn.Name)
		dn.APIServer = StartAPIServerWith(t, "kube-apiserver-"+dn.Name, d.Etcd, d.PKI, APIServerOptions{
			EncryptionConfig: encConfig, Port: apiPorts[i], Namespaces: dn.NS,
		})
	}
	for _, dn := range d.Nodes {
		dn.APIServer.WaitReady(2 * time.Minute)
	}
	d.Node, d.APIServer = d.Nodes[0].Node, d.Nodes[0].APIServer
	return d
}

// portOf returns the port of an http(s)://host:port address.
func portOf(t testing.TB, addr string) int {
	t.Helper()
	u, err := url.Parse(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("address %q has no port", addr)
	}
	return port
}

// cosignEnv holds the password of the key pair Deploy generates.
var cosignEnv = []string{"COSIGN_PASSWORD=e2e"}

// Sign signs image (repo@sha256:...) with the deployment's cosign key, as a
// release pipeline would, with the real cosign CLI.
func (d *Deployment) Sign(t testing.TB, image string) {
	t.Helper()
	mustRun(t, "cosign sign", func() (string, string, error) {
		return Cosign(t, cosignEnv, "sign", "--key", d.cosignKey, "--tlog-upload=false", "--allow-insecure-registry", "--yes", image)
	})
}

// SetUpVault runs the vault-setup.sh that kmsctl render wrote in dir, as
// root, against the deployment's Vault, as an operator would.
func (d *Deployment) SetUpVault(t testing.TB, dir string) {
	t.Helper()
	mustRun(t, "vault-setup.sh", func() (string, string, error) {
		cmd := exec.Command("bash", filepath.Join(dir, "vault-setup.sh"))
		cmd.Env = append(os.Environ(), "VAULT_ADDR="+d.Vault.Addr, "VAULT_TOKEN="+d.Vault.RootToken,
			"PATH="+filepath.Dir(vaulttest.Binary(t))+":"+os.Getenv("PATH"))
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	})
}

// WaitPluginPod waits until the plugin's mirror pod satisfies cond.
func (d *Deployment) WaitPluginPod(timeout time.Duration, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	return d.Node.WaitMirrorPod(d.APIServer, "kube-system", d.PodName, timeout, what, cond)
}

// kmsProvider returns the name and endpoint of the KMS provider in a rendered
// EncryptionConfiguration.
func kmsProvider(t testing.TB, data []byte) (name, endpoint string) {
	t.Helper()
	var ec apiserverv1.EncryptionConfiguration
	if err := yaml.Unmarshal(data, &ec); err != nil {
		t.Fatalf("rendered EncryptionConfiguration: %v", err)
	}
	for _, r := range ec.Resources {
		for _, p := range r.Providers {
			if p.KMS != nil {
				return p.KMS.Name, p.KMS.Endpoint
			}
		}
	}
	t.Fatalf("rendered EncryptionConfiguration has no KMS provider:\n%s", data)
	return "", ""
}

func podName(t testing.TB, manifest []byte) string {
	t.Helper()
	var pod corev1.Pod
	if err := yaml.Unmarshal(manifest, &pod); err != nil || pod.Name == "" {
		t.Fatalf("rendered static pod has no name (%v)", err)
	}
	return pod.Name
}

func readRendered(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("kmsctl render wrote no %s: %v", name, err)
	}
	return b
}

// mustRun runs f and fails the test with its output unless it succeeded;
// it returns stdout.
func mustRun(t testing.TB, what string, f func() (string, string, error)) string {
	t.Helper()
	stdout, stderr, err := f()
	if err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", what, err, stdout, stderr)
	}
	return stdout
}
