package render

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
)

// NodeManifestFile is the name of provider's static pod in a node's
// manifest directory (kubelet's staticPodPath): one file per provider, so
// the pods of two keys run side by side during a key migration. It is the
// pod's name plus ".yaml". StaticPodFile is only Render's output name.
func NodeManifestFile(provider string) string { return podName(provider) + ".yaml" }

// Revision is the lifecycle.Revision that cfg renders: what a rollout
// deploys, and what PodRevision reads back from StaticPodObject(cfg).
func Revision(cfg *config.Config) lifecycle.Revision {
	return lifecycle.Revision{
		Name:        cfg.Revision,
		Provider:    cfg.ProviderName(),
		ImageDigest: imageDigest(cfg.Vault.KMSPluginImage),
		ArgsHash:    lifecycle.ArgsHash(PluginArgs(cfg)),
	}
}

// PodRevision reads the revision back from a plugin static pod: the
// revision and provider labels, and the plugin container's image digest and
// arguments. It is the inverse of Revision for StaticPodObject, so a pod on
// disk and kms.yaml compare field by field. An image not pinned by digest
// reads as ImageDigest "": such a pod was not rendered by kmsctl, and the
// rollout then sees another revision, never the desired one.
func PodRevision(pod *corev1.Pod) (lifecycle.Revision, error) {
	provider, revision := pod.Labels[LabelProvider], pod.Labels[LabelRevision]
	switch {
	case provider == "":
		return lifecycle.Revision{}, fmt.Errorf("pod %s has no %s label: it is not a plugin static pod that kmsctl renders", pod.Name, LabelProvider)
	case revision == "":
		return lifecycle.Revision{}, fmt.Errorf("pod %s has no %s label: kmsctl renders both labels; render the pod again", pod.Name, LabelRevision)
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == pluginContainer {
			return lifecycle.Revision{
				Name:        revision,
				Provider:    provider,
				ImageDigest: imageDigest(c.Image),
				ArgsHash:    lifecycle.ArgsHash(c.Args),
			}, nil
		}
	}
	return lifecycle.Revision{}, fmt.Errorf("pod %s has no container named %s: render the pod again", pod.Name, pluginContainer)
}

// imageDigest is "sha256:<hex>" of an image reference pinned by digest,
// or "" when it is not.
func imageDigest(image string) string {
	i := strings.LastIndex(image, "@")
	if i < 0 || !strings.HasPrefix(image[i+1:], "sha256:") {
		return ""
	}
	return image[i+1:]
}

// MetricsPort is the port a plugin static pod serves /metrics, /livez and
// /readyz on, read from its plugin container's -metrics-port argument; ok is
// false when the pod names none. Plugin pods run on the host network, so
// two pods on one node (the old and the new provider during a key change)
// must not share it.
func MetricsPort(pod *corev1.Pod) (port int32, ok bool) {
	prefix := arg("metrics-port", "")
	for _, c := range pod.Spec.Containers {
		if c.Name != pluginContainer {
			continue
		}
		for _, a := range c.Args {
			if v, found := strings.CutPrefix(a, prefix); found {
				n, err := strconv.ParseInt(v, 10, 32)
				return int32(n), err == nil
			}
		}
	}
	return 0, false
}
