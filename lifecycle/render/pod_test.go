package render

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
)

var digestImage = regexp.MustCompile(`^[^@:]+(:[0-9]+)?(/[^@:]+)+@sha256:[a-f0-9]{64}$`)

// parsePod reads a rendered file back as a Pod, refusing any field the
// API types do not have.
func parsePod(t *testing.T, data []byte) *corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		t.Fatalf("rendered pod does not parse as a v1 Pod: %v", err)
	}
	return &pod
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// assertLockedDown checks the plugin container's security: its own
// non-root user, no writable root, no capabilities, no escalation, the
// runtime's seccomp profile, a digest-pinned image, and no secret in argv.
func assertLockedDown(t *testing.T, cfg *config.Config, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("no securityContext")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Error("runAsNonRoot is not true")
	case sc.RunAsUser == nil || *sc.RunAsUser != cfg.Node.PluginUID || *sc.RunAsUser == 0:
		t.Errorf("runAsUser = %v, want %d", sc.RunAsUser, cfg.Node.PluginUID)
	case sc.RunAsGroup == nil || *sc.RunAsGroup != cfg.Node.PluginGID:
		t.Errorf("runAsGroup = %v, want %d", sc.RunAsGroup, cfg.Node.PluginGID)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("capabilities = %+v, want drop [ALL] and nothing added", sc.Capabilities)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile = %+v, want RuntimeDefault", sc.SeccompProfile)
	}
	if !digestImage.MatchString(c.Image) || c.Image != cfg.Vault.KMSPluginImage {
		t.Errorf("image %q is not the configured digest-pinned image", c.Image)
	}
	assertNoSecretInArgs(t, c)
	// Every file the flags name is under a read-only mount.
	for _, p := range []string{cfg.Vault.Authentication.AppRole.SecretIDPath, cfg.Vault.TLS.CABundlePath} {
		if p != "" && !underMount(c.VolumeMounts, p, true) {
			t.Errorf("%s is not under a read-only mount of the container", p)
		}
	}
	if !underMount(c.VolumeMounts, cfg.SocketPath(), false) {
		t.Errorf("the socket %s is not under a writable mount", cfg.SocketPath())
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want cpu and memory requests and a memory limit", c.Resources)
	}
}

// assertNoSecretInArgs: a flag about a secret or token may only name a file.
func assertNoSecretInArgs(t *testing.T, c corev1.Container) {
	t.Helper()
	if len(c.Command) != 0 {
		t.Errorf("command %q set: the image's entrypoint is the plugin", c.Command)
	}
	for _, a := range c.Args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		for _, word := range []string{"secret", "token", "password"} {
			if strings.Contains(name, word) && !strings.HasSuffix(name, "-path") && !strings.HasSuffix(name, "-file") {
				t.Errorf("argument %q carries a %s; only a file path may", a, word)
			}
		}
	}
	if len(c.Env) != 0 || len(c.EnvFrom) != 0 {
		t.Errorf("environment set: %+v %+v", c.Env, c.EnvFrom)
	}
}

func underMount(mounts []corev1.VolumeMount, p string, readOnly bool) bool {
	for _, m := range mounts {
		if (p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/")) && m.ReadOnly == readOnly {
			return true
		}
	}
	return false
}

func volume(t *testing.T, pod *corev1.Pod, name string) corev1.Volume {
	t.Helper()
	for _, v := range pod.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

func TestStaticPod(t *testing.T) {
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			cfg := load(t, filepath.Join("testdata", name, "kms.yaml"))
			data, err := StaticPod(cfg)
			if err != nil {
				t.Fatal(err)
			}
			pod := parsePod(t, data)

			if pod.Name != PodName(cfg) || pod.Namespace != "kube-system" {
				t.Errorf("pod %s/%s", pod.Namespace, pod.Name)
			}
			wantLabels := map[string]string{
				"component": "vault-kms-plugin", "tier": "control-plane",
				LabelRevision: cfg.Revision, LabelProvider: cfg.ProviderName(),
			}
			if !reflect.DeepEqual(pod.Labels, wantLabels) {
				t.Errorf("labels %v, want %v", pod.Labels, wantLabels)
			}
			if !pod.Spec.HostNetwork || pod.Spec.PriorityClassName != "system-node-critical" || pod.Spec.DNSPolicy != corev1.DNSDefault {
				t.Errorf("hostNetwork %v, priorityClassName %q, dnsPolicy %q", pod.Spec.HostNetwork, pod.Spec.PriorityClassName, pod.Spec.DNSPolicy)
			}
			if psc := pod.Spec.SecurityContext; psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod securityContext %+v, want seccomp RuntimeDefault", psc)
			}
			if len(pod.Spec.Containers) != 1 || len(pod.Spec.InitContainers) != 1 {
				t.Fatalf("%d containers and %d init containers, want 1 and 1", len(pod.Spec.Containers), len(pod.Spec.InitContainers))
			}

			c := container(t, pod.Spec.Containers, "vault-kms-plugin")
			assertLockedDown(t, cfg, c)
			if !slices.Equal(c.Args, PluginArgs(cfg)) {
				t.Errorf("args %q, want %q", c.Args, PluginArgs(cfg))
			}
			for _, p := range []struct {
				probe *corev1.Probe
				path  string
			}{{c.LivenessProbe, "/livez"}, {c.ReadinessProbe, "/readyz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path ||
					p.probe.HTTPGet.Host != "127.0.0.1" || p.probe.HTTPGet.Port.IntVal != cfg.Node.MetricsPort {
					t.Errorf("probe on %s: %+v, want http://127.0.0.1:%d%s", p.path, p.probe, cfg.Node.MetricsPort, p.path)
				}
			}

			// The init container: root with CAP_CHOWN alone, hands the
			// socket directory over and exits.
			ic := container(t, pod.Spec.InitContainers, "prepare-socket-dir")
			sc := ic.SecurityContext
			if ic.Image != cfg.Vault.KMSPluginImage || len(ic.Command) != 0 || !slices.Equal(ic.Args, PrepareArgs(cfg)) {
				t.Errorf("init container image %q command %q args %q", ic.Image, ic.Command, ic.Args)
			}
			if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.RunAsNonRoot == nil || *sc.RunAsNonRoot ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
				!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN"}) ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("init container securityContext %+v, want root with CAP_CHOWN only, read-only, no escalation, RuntimeDefault", sc)
			}
			if len(ic.VolumeMounts) != 1 || ic.VolumeMounts[0].MountPath != cfg.Node.SocketDir || ic.VolumeMounts[0].ReadOnly {
				t.Errorf("init container mounts %+v, want the socket directory alone, writable", ic.VolumeMounts)
			}
			wantPrepare := []string{"-prepare-socket-dir=" + cfg.Node.SocketDir, "-prepare-socket-dir-owner=" + strconv.FormatInt(cfg.Node.PluginUID, 10) + ":" + strconv.FormatInt(cfg.Node.PluginGID, 10)}
			if !slices.Equal(ic.Args, wantPrepare) {
				t.Errorf("init container args %q, want %q", ic.Args, wantPrepare)
			}

			sock := volume(t, pod, "socket-dir")
			if sock.HostPath == nil || sock.HostPath.Path != cfg.Node.SocketDir || *sock.HostPath.Type != corev1.HostPathDirectoryOrCreate {
				t.Errorf("socket volume %+v, want hostPath %s DirectoryOrCreate", sock.VolumeSource, cfg.Node.SocketDir)
			}
			creds := volume(t, pod, "credentials")
			if creds.HostPath == nil || creds.HostPath.Path != cfg.Vault.Authentication.AppRole.CredentialsDir() || *creds.HostPath.Type != corev1.HostPathDirectory {
				t.Errorf("credentials volume %+v, want hostPath Directory", creds.VolumeSource)
			}
		})
	}
}

func TestSidecarPatch(t *testing.T) {
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			cfg := load(t, filepath.Join("testdata", name, "kms.yaml"))
			data, err := SidecarPatch(cfg)
			if err != nil {
				t.Fatal(err)
			}
			patch := parsePod(t, data)
			static := parsePod(t, must(StaticPod(cfg)))
			sidecar := container(t, patch.Spec.InitContainers, cfg.ProviderName())
			assertLockedDown(t, cfg, sidecar)
			if sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("restartPolicy %v, want Always (a native sidecar)", sidecar.RestartPolicy)
			}
			if !reflect.DeepEqual(sidecar.SecurityContext, static.Spec.Containers[0].SecurityContext) {
				t.Errorf("sidecar securityContext differs from the static pod's plugin container")
			}
			if !slices.Equal(sidecar.Args, PluginArgs(cfg)) {
				t.Errorf("args %q, want %q", sidecar.Args, PluginArgs(cfg))
			}
			if sock := volume(t, patch, "vault-kms-socket"); sock.EmptyDir == nil {
				t.Errorf("socket volume %+v, want an emptyDir", sock.VolumeSource)
			}
			if len(patch.Spec.InitContainers) != 1 {
				t.Errorf("%d init containers, want the sidecar alone (an emptyDir needs no preparation)", len(patch.Spec.InitContainers))
			}

			// Applied the way kubeadm applies a strategic patch, it adds
			// the sidecar, the volumes and the socket mount and keeps
			// everything kubeadm wrote.
			merged := applyPatch(t, kubeadmAPIServerPod(), data)
			api := container(t, merged.Spec.Containers, "kube-apiserver")
			if !slices.Equal(api.Command, kubeadmAPIServerPod().Spec.Containers[0].Command) {
				t.Errorf("kube-apiserver command changed: %q", api.Command)
			}
			if !underMount(api.VolumeMounts, cfg.SocketPath(), false) || !underMount(api.VolumeMounts, "/etc/kubernetes/pki/ca.crt", true) {
				t.Errorf("kube-apiserver mounts %+v: want kubeadm's and the socket directory", api.VolumeMounts)
			}
			sc := container(t, merged.Spec.InitContainers, cfg.ProviderName())
			if !reflect.DeepEqual(sc, sidecar) {
				t.Errorf("merged sidecar differs from the patch's")
			}
			var names []string
			for _, v := range merged.Spec.Volumes {
				names = append(names, v.Name)
			}
			for _, want := range []string{"k8s-certs", "vault-kms-socket", "vault-kms-credentials"} {
				if !slices.Contains(names, want) {
					t.Errorf("merged volumes %q lack %s", names, want)
				}
			}
			if merged.Labels["component"] != "kube-apiserver" || merged.Labels[LabelRevision] != cfg.Revision {
				t.Errorf("merged labels %v", merged.Labels)
			}
		})
	}
}

// kubeadmAPIServerPod is the part of kubeadm's kube-apiserver.yaml that
// the patch must not disturb.
func kubeadmAPIServerPod() *corev1.Pod {
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-apiserver", Namespace: "kube-system", Labels: map[string]string{"component": "kube-apiserver", "tier": "control-plane"}},
		Spec: corev1.PodSpec{
			HostNetwork: true,
			Containers: []corev1.Container{{
				Name:    "kube-apiserver",
				Image:   "registry.k8s.io/kube-apiserver:v1.37.2",
				Command: []string{"kube-apiserver", "--advertise-address=10.0.0.1", "--etcd-servers=https://127.0.0.1:2379"},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "k8s-certs", MountPath: "/etc/kubernetes/pki", ReadOnly: true},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "k8s-certs", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc/kubernetes/pki", Type: &dirOrCreate}}},
			},
		},
	}
}

func applyPatch(t *testing.T, original *corev1.Pod, patchYAML []byte) *corev1.Pod {
	t.Helper()
	orig, err := json.Marshal(original)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := yaml.YAMLToJSON(patchYAML)
	if err != nil {
		t.Fatal(err)
	}
	out, err := strategicpatch.StrategicMergePatch(orig, patch, corev1.Pod{})
	if err != nil {
		t.Fatalf("strategic merge patch: %v", err)
	}
	var merged corev1.Pod
	if err := json.Unmarshal(out, &merged); err != nil {
		t.Fatal(err)
	}
	return &merged
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
