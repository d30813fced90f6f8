// Package observe assembles what the rollout planner decides from, for one
// control-plane node: the kmsctl files on disk (nodefs), each KMS
// provider's plugin socket (Status and the Encrypt/Decrypt preflight), the
// revision each plugin pod actually runs (its mirror pod, as the kubelet
// reports it), and the node's API server (kms-providers readiness and the
// EncryptionConfiguration it loaded). It decides nothing.
//
// Node observes a node whose files and sockets this kmsctl reaches. Remote
// observes one it does not (`kmsctl rollout node` runs on another node):
// its files as the kmsctl on that node last published them (clusterstate),
// its plugins through their mirror pods, its API server at its own
// address.
package observe

import (
	"context"
	"fmt"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/apiserver"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/probe"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/clusterstate"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/nodefs"
)

// PodNamespace is where static pods' mirror pods are.
const PodNamespace = "kube-system"

// Node observes one node. kube reads the mirror pods (any API server
// will do); api is the node's own API server. Only the files' errors are
// returned: an unreachable plugin or API server is an observation (an
// unhealthy node), not a failure to observe.
func Node(ctx context.Context, f config.NodeFiles, kube dynamic.Interface, api *apiserver.Observer) (lifecycle.Node, error) {
	onDisk, hash, err := nodefs.Observe(nodefs.NodeFiles{Name: f.Name, ManifestDir: f.ManifestDir, EncryptionConfigPath: f.EncryptionConfig})
	if err != nil {
		return lifecycle.Node{}, err
	}
	n := lifecycle.Node{Name: f.Name, OnDisk: onDisk, ConfigHash: hash, Plugins: map[string]lifecycle.PluginHealth{}}
	running, runErr := RunningRevisions(ctx, kube, f.Name)
	for _, p := range onDisk.Providers {
		if !p.KMS {
			continue
		}
		h := probe.Plugin(ctx, filepath.Join(f.SocketDir, p.Name+".sock"))
		h.Running = running[p.Name]
		if h.Running.IsZero() && h.Err == "" {
			h.Err = fmt.Sprintf("no Ready pod of provider %s on node %s", p.Name, f.Name)
			if runErr != nil {
				h.Err = runErr.Error()
			}
		}
		n.Plugins[p.Name] = h
	}
	// A pod on disk whose provider is not listed yet (phase 1 of a new
	// provider) must answer too before the planner goes on.
	for _, r := range onDisk.Pods {
		if _, ok := n.Plugins[r.Provider]; ok {
			continue
		}
		h := probe.Plugin(ctx, filepath.Join(f.SocketDir, r.Provider+".sock"))
		h.Running = running[r.Provider]
		n.Plugins[r.Provider] = h
	}
	n.APIServer = probe.APIServer(ctx, api)
	return n, nil
}

// Remote observes node name from afar: published is what kmsctl last
// observed of its files on that node. Nothing here fails: an unreachable
// API server or pod list is an observation (an unhealthy node).
func Remote(ctx context.Context, name string, published clusterstate.NodeState, kube dynamic.Interface, api *apiserver.Observer) lifecycle.Node {
	n := lifecycle.Node{Name: name, OnDisk: published.OnDisk, ConfigHash: published.ConfigHash}
	n.APIServer = probe.APIServer(ctx, api)
	running, err := RunningRevisions(ctx, kube, name)
	n.Plugins = remotePlugins(name, published.OnDisk, running, err, n.APIServer)
	return n
}

// remotePlugins is the plugins' health of a node whose sockets cannot be
// dialled from here, from what can be seen of it:
//   - a static pod's plugin is healthy when its mirror pod is Ready at the
//     revision on disk. Ready means the pod's readiness probe (/readyz: the
//     plugin's own Status check of Vault) passes, which stands for Status
//     ok; the Encrypt/Decrypt preflight cannot be made from afar, but the
//     kmsctl on that node made it before confirming the pod's step;
//   - a listed provider that no kmsctl pod serves (a sidecar of the API
//     server's own pod) answers Status when the node's API server passes
//     its kms-providers check, which calls every provider it loaded; the
//     planner separately requires that it loaded the file on disk.
func remotePlugins(node string, onDisk lifecycle.NodeConfig, running map[string]lifecycle.Revision, runErr error, api lifecycle.APIServerHealth) map[string]lifecycle.PluginHealth {
	out := map[string]lifecycle.PluginHealth{}
	for _, r := range onDisk.Pods {
		rev, ok := running[r.Provider]
		switch {
		case runErr != nil:
			out[r.Provider] = lifecycle.PluginHealth{Err: runErr.Error()}
		case !ok:
			out[r.Provider] = lifecycle.PluginHealth{Err: fmt.Sprintf("no Ready pod of provider %s on node %s", r.Provider, node)}
		default:
			out[r.Provider] = lifecycle.PluginHealth{Running: rev, StatusOK: true, PreflightOK: true}
		}
	}
	for _, p := range onDisk.Providers {
		if _, hasPod := out[p.Name]; !p.KMS || hasPod {
			continue
		}
		h := lifecycle.PluginHealth{StatusOK: api.ReadyzKMS}
		if !api.ReadyzKMS {
			h.Err = fmt.Sprintf("node %s's API server does not pass kms-providers", node)
		}
		out[p.Name] = h
	}
	return out
}

// RunningRevisions maps each provider to the revision its plugin pod runs
// on node, from the Ready mirror pods the kubelet publishes: a pod that is
// not Ready yet, or still the old one, says nothing about the new revision.
func RunningRevisions(ctx context.Context, kube dynamic.Interface, node string) (map[string]lifecycle.Revision, error) {
	// The dynamic client: client-go's typed clientset would pull in its
	// fakes' dependencies for one list call.
	list, err := kube.Resource(corev1.SchemeGroupVersion.WithResource("pods")).Namespace(PodNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: render.LabelProvider,
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("list the plugin pods on node %s: %w", node, err)
	}
	out := map[string]lifecycle.Revision{}
	for i := range list.Items {
		pod := &corev1.Pod{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, pod); err != nil {
			return nil, fmt.Errorf("decode pod %s: %w", list.Items[i].GetName(), err)
		}
		if !ready(pod) {
			continue
		}
		r, err := render.PodRevision(pod)
		if err != nil {
			continue // not one kmsctl renders; the planner sees no revision
		}
		out[r.Provider] = r
	}
	return out, nil
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
