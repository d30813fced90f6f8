package render

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

// Labels on the rendered pods.
const (
	LabelRevision = "kmsctl.vaultkms.io/revision"
	LabelProvider = "kmsctl.vaultkms.io/provider"
)

// Names inside the rendered pods.
const (
	pluginContainer  = "vault-kms-plugin"
	prepareContainer = "prepare-socket-dir"
	kubeAPIServer    = "kube-apiserver" // kubeadm's container and pod name
)

// PodName is the static pod's name: one per provider, so the pods of two
// keys can run side by side during a key migration.
func PodName(cfg *config.Config) string { return podName(cfg.ProviderName()) }

func podName(provider string) string { return "vault-kms-plugin-" + provider }

// PluginArgs are the plugin's arguments: the flag set OpenShift's KMS
// plugin lifecycle passes to a Vault KMS sidecar (contract.RenderedFlags),
// so one image serves both. None carries a secret: the role ID is not one,
// and the secret ID is read from a file.
func PluginArgs(cfg *config.Config) []string {
	v := &cfg.Vault
	args := []string{
		arg("listen-address", cfg.Endpoint()),
		arg("vault-address", strings.Join(v.Addresses(), ",")),
		arg("vault-key-path", v.VaultKeyPath),
		arg("approle-role-id", v.Authentication.AppRole.RoleID),
		arg("approle-secret-id-path", v.Authentication.AppRole.SecretIDPath),
	}
	for _, opt := range []struct{ name, value string }{
		{"tls-ca-file", v.TLS.CABundlePath},
		{"tls-sni", v.TLS.ServerName},
		{"vault-namespace", v.VaultNamespace},
		{"vault-auth-namespace", v.VaultAuthNamespace},
	} {
		if opt.value != "" {
			args = append(args, arg(opt.name, opt.value))
		}
	}
	return append(args, arg("metrics-port", strconv.Itoa(int(cfg.Node.MetricsPort))))
}

// PrepareArgs run the plugin's one-shot preparation mode
// (contract.PrepareFlags): create the socket directory and hand it to the
// plugin's user.
func PrepareArgs(cfg *config.Config) []string {
	return []string{
		arg("prepare-socket-dir", cfg.Node.SocketDir),
		arg("prepare-socket-dir-owner", fmt.Sprintf("%d:%d", cfg.Node.PluginUID, cfg.Node.PluginGID)),
	}
}

// arg spells one argument as the plugin's Go flag package reads it.
func arg(name, value string) string { return "-" + name + "=" + value }

// pluginSecurityContext is the plugin container's: its own non-root user,
// nothing writable but its mounts, no capabilities, the runtime's seccomp
// profile.
func pluginSecurityContext(cfg *config.Config) *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser:                ptr(cfg.Node.PluginUID),
		RunAsGroup:               ptr(cfg.Node.PluginGID),
		RunAsNonRoot:             ptr(true),
		ReadOnlyRootFilesystem:   ptr(true),
		AllowPrivilegeEscalation: ptr(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// prepareSecurityContext is the socket directory's init container: root,
// because kubelet creates a DirectoryOrCreate hostPath as root 0755, but
// with CAP_CHOWN alone (no DAC override, no setuid), read-only, and it
// exits before the plugin starts.
func prepareSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser:                ptr(int64(0)),
		RunAsGroup:               ptr(int64(0)),
		RunAsNonRoot:             ptr(false),
		ReadOnlyRootFilesystem:   ptr(true),
		AllowPrivilegeEscalation: ptr(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"CHOWN"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func probe(cfg *config.Config, p string) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Host: "127.0.0.1",
			Path: p,
			Port: intstr.FromInt32(cfg.Node.MetricsPort),
		}},
		PeriodSeconds:    10,
		TimeoutSeconds:   3,
		FailureThreshold: 3,
	}
}

// credentialMounts are the volumes and mounts of the node files the plugin
// reads, each at its path on the node so the flags name the same path in
// and out of the pod: the credentials directory (which vault-setup.sh
// makes 0750 root:<pluginGID> with 0400 <pluginUID> files), and the CA
// bundle when it lives elsewhere.
func credentialMounts(cfg *config.Config, prefix string) ([]corev1.Volume, []corev1.VolumeMount) {
	dir := cfg.Vault.Authentication.AppRole.CredentialsDir()
	vols := []corev1.Volume{hostPathVolume(prefix+"credentials", dir, corev1.HostPathDirectory)}
	mounts := []corev1.VolumeMount{{Name: prefix + "credentials", MountPath: dir, ReadOnly: true}}
	if ca := cfg.Vault.TLS.CABundlePath; ca != "" && path.Dir(ca) != dir && !strings.HasPrefix(ca, dir+"/") {
		vols = append(vols, hostPathVolume(prefix+"ca-bundle", ca, corev1.HostPathFile))
		mounts = append(mounts, corev1.VolumeMount{Name: prefix + "ca-bundle", MountPath: ca, ReadOnly: true})
	}
	return vols, mounts
}

func hostPathVolume(name, p string, t corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p, Type: ptr(t)}}}
}

// plugin is the plugin container, shared by the static pod and the sidecar.
func plugin(cfg *config.Config, name string, mounts []corev1.VolumeMount) corev1.Container {
	return corev1.Container{
		Name:                     name,
		Image:                    cfg.Vault.KMSPluginImage,
		Args:                     PluginArgs(cfg),
		ImagePullPolicy:          corev1.PullIfNotPresent,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("50m"),
				corev1.ResourceMemory: resource.MustParse("32Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		SecurityContext: pluginSecurityContext(cfg),
		VolumeMounts:    mounts,
	}
}

// StaticPodObject is the plugin's static pod: its own pod, so kubeadm
// upgrade, which rewrites kube-apiserver.yaml, leaves it alone.
//
// The socket directory is a DirectoryOrCreate hostPath shared with the API
// server's pod. kubelet creates it root 0755, where the non-root plugin
// cannot create its socket; the init container, the same image in its
// prepare mode, makes it 0750 and the plugin user's, then exits. The API
// server runs as root and still reaches the socket.
func StaticPodObject(cfg *config.Config) *corev1.Pod {
	socketMount := corev1.VolumeMount{Name: "socket-dir", MountPath: cfg.Node.SocketDir}
	credVols, credMounts := credentialMounts(cfg, "")
	main := plugin(cfg, pluginContainer, append([]corev1.VolumeMount{socketMount}, credMounts...))
	main.LivenessProbe = probe(cfg, "/livez")
	main.ReadinessProbe = probe(cfg, "/readyz")

	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      PodName(cfg),
			Namespace: "kube-system",
			Labels: map[string]string{
				"component":   "vault-kms-plugin",
				"tier":        "control-plane",
				LabelRevision: cfg.Revision,
				LabelProvider: cfg.ProviderName(),
			},
		},
		Spec: corev1.PodSpec{
			HostNetwork: true,
			// The node's resolver, never cluster DNS: CoreDNS needs the API
			// server, which needs this plugin to read Secrets.
			DNSPolicy:         corev1.DNSDefault,
			PriorityClassName: "system-node-critical",
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			InitContainers: []corev1.Container{{
				Name:  prepareContainer,
				Image: cfg.Vault.KMSPluginImage,
				// No command: the image's entrypoint is the plugin.
				Args:                     PrepareArgs(cfg),
				ImagePullPolicy:          corev1.PullIfNotPresent,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{
						corev1.ResourceCPU:    resource.MustParse("10m"),
						corev1.ResourceMemory: resource.MustParse("16Mi"),
					},
					Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
				},
				SecurityContext: prepareSecurityContext(),
				VolumeMounts:    []corev1.VolumeMount{socketMount},
			}},
			Containers: []corev1.Container{main},
			Volumes: append([]corev1.Volume{
				hostPathVolume("socket-dir", cfg.Node.SocketDir, corev1.HostPathDirectoryOrCreate),
			}, credVols...),
		},
	}
}

// StaticPod renders StaticPodObject with its header.
func StaticPod(cfg *config.Config) ([]byte, error) {
	header := comment(
		fmt.Sprintf("Static pod of vault-kms-plugin for KMS provider %s (revision %s).", cfg.ProviderName(), cfg.Revision),
		generatedBy,
		"",
		fmt.Sprintf("Copy it to %s/ on each control-plane node. It is a pod of", cfg.Node.ManifestDir),
		"its own, so `kubeadm upgrade`, which rewrites kube-apiserver.yaml, keeps it.",
		"kube-apiserver reaches the plugin at",
		"  "+cfg.Endpoint(),
		fmt.Sprintf("so mount %s into the kube-apiserver pod too (kubeadm:", cfg.Node.SocketDir),
		"ClusterConfiguration apiServer.extraVolumes, which upgrades keep).",
		"Run vault-setup.sh on the node first: it writes the credentials this pod reads.",
		"Use this file or kube-apiserver-sidecar.yaml, not both.",
	)
	return marshalYAML(header, StaticPodObject(cfg))
}

// SidecarPatchObject is a strategic-merge patch of kubeadm's kube-apiserver
// static pod that adds the plugin as a native sidecar (an init container
// with restartPolicy Always), the shape OpenShift uses. The socket
// directory is an emptyDir, which is 0777, so the non-root plugin creates
// its socket without a preparation step; it is mounted into both
// containers at the same path.
func SidecarPatchObject(cfg *config.Config) *corev1.Pod {
	const socketVolume = "vault-kms-socket"
	socketMount := corev1.VolumeMount{Name: socketVolume, MountPath: cfg.Node.SocketDir}
	credVols, credMounts := credentialMounts(cfg, "vault-kms-")
	sidecar := plugin(cfg, cfg.ProviderName(), append([]corev1.VolumeMount{socketMount}, credMounts...))
	sidecar.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
	// Liveness only: a sidecar's readiness gates the API server pod's, and
	// the API server's own /readyz already reports the KMS provider.
	sidecar.LivenessProbe = probe(cfg, "/livez")

	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      kubeAPIServer,
			Namespace: "kube-system",
			Labels:    map[string]string{LabelRevision: cfg.Revision},
		},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{sidecar},
			Containers: []corev1.Container{{
				Name:         kubeAPIServer,
				VolumeMounts: []corev1.VolumeMount{socketMount},
			}},
			Volumes: append([]corev1.Volume{
				{Name: socketVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			}, credVols...),
		},
	}
}

// SidecarPatch renders SidecarPatchObject with its header.
func SidecarPatch(cfg *config.Config) ([]byte, error) {
	header := comment(
		fmt.Sprintf("Strategic-merge patch adding vault-kms-plugin (KMS provider %s, revision %s)", cfg.ProviderName(), cfg.Revision),
		"to the kube-apiserver static pod as a native sidecar: an init container with",
		"restartPolicy: Always, as OpenShift runs its Vault KMS plugin.",
		generatedBy,
		"",
		"kubeadm: save it as kube-apiserver+strategic.yaml in a directory and pass that",
		"directory with --patches to kubeadm init, join and upgrade, so every rewrite of",
		"kube-apiserver.yaml keeps the sidecar. The socket is on an emptyDir shared by both",
		fmt.Sprintf("containers at %s. A patch cannot append to the command, so", cfg.Node.SocketDir),
		"--encryption-provider-config and its file go in ClusterConfiguration",
		"(apiServer.extraArgs, apiServer.extraVolumes). Run vault-setup.sh on the node first.",
		"Use this file or vault-kms-plugin.yaml, not both.",
	)
	return marshalYAML(header, SidecarPatchObject(cfg))
}

// checkContract reports a flag that the plugin image's flag interface
// (plugin/contract) does not declare: the plugin would exit on it.
func checkContract(args, declared []string) error {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if !slices.Contains(declared, name) {
			return fmt.Errorf("flag -%s is not in the plugin's flag interface %s", name, contract.FlagInterfaceVersion)
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
