package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/clusterstate"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// testRollouts is kmsctl rollout (issue 9) on the deployment's three
// nodes, each a real kubelet with containerd running the plugin's static
// pod next to its own kube-apiserver. A load of writes and reads through
// every API server runs during each rollout, and any failed call fails the
// test. In order:
//
//  1. an unsigned image is refused by apply and by node before any file
//     changes;
//  2. plan prints a write for each node and changes nothing; an in-place
//     image change (another signed digest) rolls across the three nodes;
//  3. a new provider whose plugin cannot reach Vault (wrong address) rolls
//     back by itself on the first node, and is refused when asked again;
//  4. a new provider on a second transit key: refused on the current
//     plugin's metrics port; then phase 1 on cp-1 and cp-2 by
//     `rollout node` on each, the rest by `rollout apply` killed with SIGKILL
//     at every step (before and after its write, alternately) and rerun
//     until it is done; then every API server restarts and reads every
//     Secret back;
//  5. retiring the old provider is refused while Secrets are stored under
//     it; after kmsctl migrate --from-provider it is removed from every
//     EncryptionConfiguration, then its static pods, and every API server,
//     restarted, reads every Secret back.
func testRollouts(t *testing.T, d *cluster.Deployment, secrets map[string]string) {
	r := newRolloutEnv(t, d, secrets)

	t.Run("an unsigned image is refused before any file changes", func(t *testing.T) {
		r.t = t
		unsigned := cluster.PushPluginImageAs(t, d.Registry.Host+"/vault-kms-plugin:unsigned", map[string]string{"org.opencontainers.image.version": "e2e-unsigned"})
		cfg := r.config("unsigned", map[string]string{"revision": `"u"`, "kmsPluginImage": unsigned})
		before := r.files()
		for _, args := range [][]string{r.applyArgs(cfg), r.nodeArgs("cp-1", cfg)} {
			stdout, stderr, err := cluster.Kmsctl(t, args...)
			t.Logf("kmsctl rollout %s with an unsigned image: %v\n%s%s", args[1], err, stdout, stderr)
			if err == nil || !strings.Contains(stderr, "refused, nothing changed") || !strings.Contains(stderr, "signature") {
				t.Errorf("kmsctl rollout %s: want a refusal naming the signature, with nothing changed; got %v", args[1], err)
			}
		}
		r.assertUnchanged(before, "after refusing an unsigned image")
	})

	t.Run("an in-place image change rolls across three nodes without a failed read or write", func(t *testing.T) {
		r.t = t
		image := cluster.PushPluginImageAs(t, d.Registry.Host+"/vault-kms-plugin:e2e-2", map[string]string{"org.opencontainers.image.version": "e2e-2"})
		d.Sign(t, image)
		cfg := r.config("image-2", map[string]string{"revision": `"2"`, "kmsPluginImage": image})
		if out := mustKmsctl(t, "rollout", "plan", "--nodes", r.nodes, "--config", r.current, "--kubeconfig", r.kube); !strings.Contains(out, "1. done") {
			t.Errorf("kmsctl rollout plan of the running revision:\n%s\nwant done at once", out)
		}
		before := r.files()
		plan := mustKmsctl(t, "rollout", "plan", "--nodes", r.nodes, "--config", cfg, "--kubeconfig", r.kube)
		t.Logf("kmsctl rollout plan:\n%s", plan)
		for _, n := range d.Nodes {
			if want := "write-pod node=" + n.Name + " revision=2/"; !strings.Contains(plan, want) {
				t.Errorf("plan lacks %q", want)
			}
		}
		r.assertUnchanged(before, "after kmsctl rollout plan")
		r.underLoad("the in-place image change", func() {
			out, err := r.apply(cfg)
			if err != nil || !strings.Contains(out, "] done") {
				t.Fatalf("kmsctl rollout apply: %v", err)
			}
		})
		for _, n := range d.Nodes {
			pod := n.WaitMirrorPod(d.APIServer, "kube-system", d.PodName, time.Minute, "Ready at revision 2", func(p *corev1.Pod) bool {
				return cluster.PodReady(p) && p.Labels[render.LabelRevision] == "2"
			})
			if got := pod.Spec.Containers[0].Image; got != image {
				t.Errorf("node %s runs %s, want %s", n.Name, got, image)
			}
		}
		r.current = cfg
	})

	t.Run("a revision whose plugin cannot reach Vault rolls back by itself", func(t *testing.T) {
		r.t = t
		// Another address is another Vault cluster, so another provider:
		// its plugin starts beside the current one on cp-1 and never
		// passes the preflight.
		cfg := r.config("bad-vault", map[string]string{
			"revision":     `"3"`,
			"vaultAddress": fmt.Sprintf("http://127.0.0.1:%d", vaulttest.FreePort(t)),
			"metricsPort":  fmt.Sprint(vaulttest.FreePort(t)),
		})
		before := r.files()
		r.underLoad("the rollout to an unreachable Vault and its rollback", func() {
			out, err := r.apply(cfg, "--step-timeout", "40s")
			if err == nil || !strings.Contains(out, "roll-back node=cp-1") || !strings.Contains(err.Error(), "rolled back") {
				t.Fatalf("kmsctl rollout apply of a plugin that cannot reach Vault: %v; want a roll-back of cp-1 and an error saying so", err)
			}
		})
		r.assertUnchanged(before, "after the rollback")
		out, err := r.apply(cfg)
		if err == nil || !strings.Contains(out, "render a new revision") {
			t.Errorf("kmsctl rollout apply of the rolled-back revision again: %v, want a refusal asking for a new revision", err)
		}
		r.assertUnchanged(before, "after refusing the rolled-back revision")
	})

	t.Run("a new provider on a second transit key, kmsctl killed at every step, every Secret read after every API server restarts", func(t *testing.T) {
		r.t = t
		credDir := filepath.Join(filepath.Dir(d.CredDir), "vault-kms-2")
		if err := os.MkdirAll(credDir, 0o755); err != nil {
			t.Fatal(err)
		}
		set := map[string]string{
			"revision":     `"4"`,
			"vaultKeyPath": "transit/keys/kubernetes-2",
			"roleName":     "kms-plugin-2", // a role and policy of its own: vault-setup.sh refuses to take over the running key's
			"roleID":       "e2e-node-role-id-2",
			"secretIDPath": filepath.Join(credDir, "secret-id"),
		}
		// The new plugin runs beside the old one on the host network: the
		// old one's metrics port is refused before anything changes.
		before := r.files()
		samePort := r.config("key-2-same-port", set)
		if out, err := r.apply(samePort); err == nil || !strings.Contains(err.Error(), "node.metricsPort refused, nothing changed") {
			t.Errorf("kmsctl rollout apply of a new provider on the current plugin's metrics port: %v\n%s\nwant a refusal naming node.metricsPort", err, out)
		}
		r.assertUnchanged(before, "after refusing a new provider on the current metrics port")
		set["metricsPort"] = fmt.Sprint(vaulttest.FreePort(t))
		cfg := r.config("key-2", set)
		rendered := filepath.Join(r.dir, "rendered-key-2")
		mustKmsctl(t, "render", "--config", cfg, "--out", rendered)
		d.SetUpVault(t, rendered)
		parsed, err := config.Load(cfg)
		if err != nil {
			t.Fatal(err)
		}
		newProvider := parsed.ProviderName()

		r.underLoad("the new provider's rollout", func() {
			// Phase 1 on cp-1 and cp-2 the kubeadm way, each from its node.
			for _, node := range []string{"cp-1", "cp-2"} {
				start := time.Now()
				stdout, stderr, err := cluster.Kmsctl(t, r.nodeArgs(node, cfg)...)
				t.Logf("kmsctl rollout node --node %s (%.0fs):\n%s", node, time.Since(start).Seconds(), stdout)
				if err != nil || !strings.Contains(stdout, "write-pod node="+node) || !strings.Contains(stdout, "] done node="+node) {
					t.Fatalf("kmsctl rollout node --node %s: %v\n%s", node, err, stderr)
				}
			}
			r.applyKilledAtEveryStep(cfg)
		})

		for _, n := range d.Nodes {
			enc := readFile(t, n.APIServer.EncryptionConfigPath)
			if i, j := strings.Index(enc, "name: "+newProvider), strings.Index(enc, "name: "+d.Provider); i < 0 || j < i {
				t.Errorf("node %s's EncryptionConfiguration does not list %s first and %s after it for reading:\n%s", n.Name, newProvider, d.Provider, enc)
			}
		}
		r.assertPublished()
		for _, n := range d.Nodes {
			name := "key-2-through-" + n.Name
			value := secretValue(name)
			if err := tryCreateSecret(t.Context(), n.APIServer, name, value); err != nil {
				t.Fatal(err)
			}
			assertStoredBy(t, d.Etcd, newProvider, name, value)
			r.secrets[name] = value
		}

		// Restarted, an API server has no DEK cache: each Secret written
		// under either provider reads through that provider's plugin.
		r.restartAndReadAll()
		r.current = cfg
	})

	t.Run("the old provider is retired only once an etcd scan finds nothing under it", func(t *testing.T) {
		r.t = t
		old := d.Provider
		retire := func() (string, error) {
			return r.apply(r.current, "--retire-provider", old, "--etcd-endpoints", d.Etcd.Endpoint)
		}
		before := r.files()
		if out, err := retire(); err == nil || !strings.Contains(err.Error(), "an etcd scan finds objects stored under it") {
			t.Fatalf("kmsctl rollout apply --retire-provider with Secrets still under %s: %v\n%s\nwant a refusal naming the scan", old, err, out)
		}
		r.assertUnchanged(before, "after refusing to retire a provider objects are stored under")

		start := time.Now()
		out := mustKmsctl(t, "migrate", "--from-provider", old, "--etcd-endpoints", d.Etcd.Endpoint, "--resources", "secrets", "--kubeconfig", r.kube)
		t.Logf("kmsctl migrate --from-provider %s (%.0fs):\n%s", old, time.Since(start).Seconds(), out)

		r.underLoad("the old provider's retirement", func() {
			if out, err := retire(); err != nil || !strings.Contains(out, "] done") {
				t.Fatalf("kmsctl rollout apply --retire-provider %s after migrate: %v\n%s", old, err, out)
			}
		})
		for _, n := range d.Nodes {
			if enc := readFile(t, n.APIServer.EncryptionConfigPath); strings.Contains(enc, "name: "+old) {
				t.Errorf("node %s's EncryptionConfiguration still lists %s:\n%s", n.Name, old, enc)
			}
			paths, _ := filepath.Glob(filepath.Join(n.ManifestDir, "*"))
			for _, p := range paths {
				if strings.Contains(readFile(t, p), render.LabelProvider+": "+old) {
					t.Errorf("node %s: the old provider's static pod %s is still there", n.Name, p)
				}
			}
		}
		r.assertPublished()

		// Nothing needs the old plugin any more: restarted with no DEK
		// cache, every API server reads every Secret through the new one.
		r.restartAndReadAll()
	})
}

// rolloutEnv is what the rollout scenarios share: the operator's files
// (kubeconfig, nodes.yaml, a state directory for apply and one per node for
// `rollout node`) and the kms.yaml the cluster runs now.
type rolloutEnv struct {
	t       *testing.T
	d       *cluster.Deployment
	dir     string
	kube    string
	nodes   string
	current string
	secrets map[string]string
}

func newRolloutEnv(t *testing.T, d *cluster.Deployment, secrets map[string]string) *rolloutEnv {
	dir := t.TempDir()
	kubeconfig, nodes := writeNodesYAML(t, d, dir, filepath.Join(dir, "state"))
	return &rolloutEnv{t: t, d: d, dir: dir, kube: kubeconfig, nodes: nodes, current: d.ConfigPath, secrets: secrets}
}

// config writes a kms.yaml named name: the current one with each field in
// set given another value, and returns its path.
func (r *rolloutEnv) config(name string, set map[string]string) string {
	r.t.Helper()
	text := readFile(r.t, r.current)
	for field, value := range set {
		re := regexp.MustCompile(`(?m)^(\s*` + field + `:) .*$`)
		if !re.MatchString(text) {
			r.t.Fatalf("kms.yaml has no field %s:\n%s", field, text)
		}
		text = re.ReplaceAllStringFunc(text, func(line string) string {
			return line[:strings.Index(line, ":")+1] + " " + value
		})
	}
	path := filepath.Join(r.dir, name+".yaml")
	writeTestFile(r.t, path, text)
	return path
}

func (r *rolloutEnv) common() []string {
	return []string{"--kubeconfig", r.kube, "--key", r.d.CosignPub, "--allow-insecure-registry", "--poll-interval", "1s"}
}

func (r *rolloutEnv) applyArgs(cfg string, extra ...string) []string {
	return append(append([]string{"rollout", "apply", "--nodes", r.nodes, "--config", cfg}, r.common()...), extra...)
}

// nodeArgs runs `rollout node` as on node, with that node's own state
// directory.
func (r *rolloutEnv) nodeArgs(node, cfg string) []string {
	dir := filepath.Join(r.dir, "on-"+node)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.t.Fatal(err)
	}
	nodes := filepath.Join(dir, "nodes.yaml")
	if _, err := os.Stat(nodes); err != nil {
		_, nodes = writeNodesYAML(r.t, r.d, dir, filepath.Join(dir, "state"))
	}
	return append([]string{"rollout", "node", "--node", node, "--nodes", nodes, "--config", cfg}, r.common()...)
}

// apply runs kmsctl rollout apply to the end, logs its output and how long
// it took, and returns its output and error (with stderr).
func (r *rolloutEnv) apply(cfg string, extra ...string) (string, error) {
	r.t.Helper()
	start := time.Now()
	stdout, stderr, err := cluster.Kmsctl(r.t, r.applyArgs(cfg, extra...)...)
	r.t.Logf("kmsctl rollout apply --config %s (%.0fs): %v\n%s%s", filepath.Base(cfg), time.Since(start).Seconds(), err, stdout, stderr)
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr))
	}
	return stdout, err
}

// stepLine is a step kmsctl printed: "[  12.3s] <action> node=<node> ...:
// reason"; its key is what comes before the reason.
var stepLine = regexp.MustCompile(`^\[\s*[0-9.]+s\] ((confirm|write-pod|add-read-only|promote|remove-provider|remove-pod|roll-back) node=[^:]*)`)

// applyKilledAtEveryStep runs kmsctl rollout apply and kills it with
// SIGKILL as each step it has not been killed at yet begins, alternately at
// once (before the step's write, or during it) and 1.5s later (after it),
// then runs it again, until a run finishes. No run may end on its own
// otherwise than done.
func (r *rolloutEnv) applyKilledAtEveryStep(cfg string) {
	t := r.t
	t.Helper()
	killedAt := map[string]bool{}
	start := time.Now()
	for run := 1; ; run++ {
		if run > 40 {
			t.Fatalf("kmsctl rollout apply did not finish in 40 runs")
		}
		cmd := cluster.KmsctlCommand(t, nil, r.applyArgs(cfg)...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		killed := ""
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			m := stepLine.FindStringSubmatch(line)
			if killed != "" || m == nil || killedAt[m[1]] {
				continue
			}
			killed = m[1]
			killedAt[killed] = true
			if len(killedAt)%2 == 0 {
				time.Sleep(1500 * time.Millisecond)
				killed += " (1.5s in)"
			}
			_ = cmd.Process.Kill()
			break
		}
		_, _ = io.Copy(io.Discard, stdout)
		werr := cmd.Wait()
		if killed != "" {
			t.Logf("run %d, killed with SIGKILL at %s:\n%s", run, killed, out.String())
			continue
		}
		t.Logf("run %d, not killed (%v):\n%s%s", run, werr, out.String(), stderr.String())
		if werr != nil || !strings.Contains(out.String(), "] done") {
			t.Fatalf("kmsctl rollout apply, rerun after a SIGKILL, ended without done: %v", werr)
		}
		t.Logf("kmsctl rollout apply finished in run %d, killed at %d steps, %.0fs in all", run, len(killedAt), time.Since(start).Seconds())
		return
	}
}

// underLoad runs f with a load of writes and reads through every API
// server, logs the figures and fails the test on any failed call.
func (r *rolloutEnv) underLoad(what string, f func()) {
	t := r.t
	t.Helper()
	var apis []*cluster.APIServer
	for _, n := range r.d.Nodes {
		apis = append(apis, n.APIServer)
	}
	ld := startLoad("rollout-"+randomHex(3), 300*time.Millisecond, apis, nil)
	from := time.Now()
	defer func() {
		ld.Stop()
		t.Logf("load during %s (%.0fs):", what, time.Since(from).Seconds())
		if failures := ld.report(t, from, time.Now()); failures > 0 {
			t.Errorf("%d reads or writes failed during %s", failures, what)
		}
		for k, v := range ld.Written() {
			r.secrets[k] = v
		}
	}()
	f()
}

// restartAndReadAll stops every API server, starts them again (with no
// DEK cache, each decrypts through the plugins) and reads every Secret
// written so far through each.
func (r *rolloutEnv) restartAndReadAll() {
	t := r.t
	t.Helper()
	start := time.Now()
	for _, n := range r.d.Nodes {
		n.APIServer.Stop()
	}
	for _, n := range r.d.Nodes {
		n.APIServer.Start()
	}
	for _, n := range r.d.Nodes {
		n.APIServer.WaitReady(2 * time.Minute)
		assertListed(t, n.APIServer, r.secrets)
	}
	t.Logf("all %d API servers restarted and read the %d Secrets back in %.0fs", len(r.d.Nodes), len(r.secrets), time.Since(start).Seconds())
}

// assertListed lists the Secrets through a, 500 a page, and checks that
// every one written reads back its plaintext: the same proof as a GET of
// each (the API server decrypts each to serve it) in a few requests
// instead of thousands.
func assertListed(t *testing.T, a *cluster.APIServer, secrets map[string]string) {
	t.Helper()
	got := map[string]string{}
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := a.Client.CoreV1().Secrets(namespace).List(t.Context(), opts)
		if err != nil {
			t.Fatalf("list Secrets through %s: %v", a.Name, err)
		}
		for _, s := range list.Items {
			got[s.Name] = string(s.Data["password"])
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	bad := 0
	for name, want := range secrets {
		if g, ok := got[name]; !ok || g != want {
			if bad++; bad <= 5 {
				t.Errorf("Secret %s through %s: listed %v, read %q, wrote %q", name, a.Name, ok, g, want)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d Secrets did not read back through %s", bad, len(secrets), a.Name)
	}
}

// files returns the sha256 of every file kmsctl may write on the nodes:
// their static pod manifests and EncryptionConfigurations.
func (r *rolloutEnv) files() map[string]string {
	r.t.Helper()
	out := map[string]string{}
	for _, n := range r.d.Nodes {
		paths, _ := filepath.Glob(filepath.Join(n.ManifestDir, "*"))
		for _, p := range append(paths, n.APIServer.EncryptionConfigPath) {
			b, err := os.ReadFile(p)
			if err != nil {
				r.t.Fatal(err)
			}
			sum := sha256.Sum256(b)
			out[p] = hex.EncodeToString(sum[:])
		}
	}
	return out
}

func (r *rolloutEnv) assertUnchanged(before map[string]string, when string) {
	r.t.Helper()
	after := r.files()
	for p, h := range before {
		if after[p] != h {
			r.t.Errorf("%s: %s changed (or is gone)", when, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			r.t.Errorf("%s: %s appeared", when, p)
		}
	}
}

// assertPublished checks the kube-system/kmsctl-rollout ConfigMap: nothing
// in flight, and for every node the files it has (the EncryptionConfiguration's
// sha256 as on disk) recorded as observed and as last-known-good.
func (r *rolloutEnv) assertPublished() {
	t := r.t
	t.Helper()
	kube, err := dynamic.NewForConfig(r.d.APIServer.Config)
	if err != nil {
		t.Fatal(err)
	}
	st, err := clusterstate.New(kube).Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Progress.InFlight != nil {
		t.Errorf("a step is still in flight: %s", st.Progress.InFlight)
	}
	for _, n := range r.d.Nodes {
		published, ok := st.Nodes[n.Name]
		if !ok {
			t.Errorf("ConfigMap %s/%s holds no state of node %s", clusterstate.Namespace, clusterstate.Name, n.Name)
			continue
		}
		raw, err := os.ReadFile(n.APIServer.EncryptionConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(raw) // the bytes as they are: readFile trims
		if want := "sha256:" + hex.EncodeToString(sum[:]); published.ConfigHash != want {
			t.Errorf("node %s: published configHash %s, want %s (the file on the node)", n.Name, published.ConfigHash, want)
		}
		var lkg lifecycle.NodeConfig
		if lkg, ok = st.Progress.LastKnownGood[n.Name]; !ok || !lkg.Equal(published.OnDisk) {
			t.Errorf("node %s: last-known-good [%s] (recorded %v), want the confirmed [%s]", n.Name, lkg, ok, published.OnDisk)
		}
	}
}

func mustKmsctl(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, err := cluster.Kmsctl(t, args...)
	if err != nil {
		t.Fatalf("kmsctl %s: %v\n%s%s", args[0], err, stdout, stderr)
	}
	return stdout
}
