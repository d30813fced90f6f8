package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
)

// TestRenderedStaticPodOnARealKubelet deploys the plugin the way users do
// (cluster.Deploy: the image `make image` built, pushed to a real registry,
// signed with the real cosign CLI, pinned by `kmsctl verify-image`, rendered
// by `kmsctl render`, Vault set up by the rendered script, the static pod
// copied unchanged into a real kubelet's manifest directory), then checks
// what users rely on: Secrets stored through the pod, the mirror pod Ready,
// and the kubelet's probes acting on Vault trouble and a crashed plugin.
func TestRenderedStaticPodOnARealKubelet(t *testing.T) {
	d := cluster.Deploy(t, cluster.DeployOptions{Progress: t.Logf})
	api, ctx := d.APIServer, t.Context()

	mirror := d.WaitPluginPod(2*time.Minute, "Ready", cluster.PodReady)
	if got := mirror.Spec.Containers[0].Image; got != d.Image {
		t.Fatalf("mirror pod runs image %q, want the verified %q", got, d.Image)
	}
	// The rendered prepare step handed kubelet's root 0755 directory to the
	// plugin's user, and vault-setup.sh wrote the secret ID for it alone.
	assertOwned(t, d.SocketDir, 0o750, 65532)
	assertOwned(t, d.SecretIDPath, 0o400, 65532)

	secrets := map[string]string{"through-the-pod": secretValue("through-the-pod")}
	if err := tryCreateSecret(ctx, api, "through-the-pod", secrets["through-the-pod"]); err != nil {
		t.Fatal(err)
	}
	assertStoredBy(t, d.Etcd, d.Provider, "through-the-pod", secrets["through-the-pod"])

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
		value := secretValue("after-restart")
		if err := tryCreateSecret(ctx, api, "after-restart", value); err != nil {
			t.Fatal(err)
		}
		assertStoredBy(t, d.Etcd, d.Provider, "after-restart", value)
	})

	secretID := readFile(t, d.SecretIDPath)
	for _, p := range []*cluster.Process{d.Node.Kubelet, d.Node.Containerd, api.Proc} {
		if strings.Contains(p.Log(), secretID) {
			t.Errorf("%s logged the secret ID", p.Name)
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
