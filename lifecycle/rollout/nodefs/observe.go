package nodefs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
)

// NodeFiles is where one node's files are, as kmsctl reaches them.
type NodeFiles struct {
	// Name is the node's name (nodes.yaml); it also names the node's
	// directory under the state directory.
	Name string
	// ManifestDir is the kubelet's staticPodPath.
	ManifestDir string
	// EncryptionConfigPath is the file the API server's
	// --encryption-provider-config names.
	EncryptionConfigPath string
}

// Observe reads what node f has on disk: the plugin static pods kmsctl
// owns and the provider list of its EncryptionConfiguration, and the
// file's hash, "sha256:<hex>" of its bytes, as the API server's
// apiserver_encryption_config_controller_last_config_info spells it. A file
// kmsctl owns that it cannot read is an error naming the file.
func Observe(f NodeFiles) (lifecycle.NodeConfig, string, error) {
	st, err := readNode(f)
	if err != nil {
		return lifecycle.NodeConfig{}, "", err
	}
	return st.nodeConfig(), configHash(st.config), nil
}

func configHash(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// manifest is one static pod file kmsctl owns.
type manifest struct {
	file string // name in the manifest directory
	data []byte
	rev  lifecycle.Revision
}

// nodeState is a node's files as read, bytes and parsed.
type nodeState struct {
	pods   map[string]manifest // by provider
	config []byte
	ec     *encryptionConfig
}

func (s *nodeState) nodeConfig() lifecycle.NodeConfig {
	var c lifecycle.NodeConfig
	for _, m := range s.pods {
		c.Pods = append(c.Pods, m.rev)
	}
	slices.SortFunc(c.Pods, func(a, b lifecycle.Revision) int { return strings.Compare(a.Provider, b.Provider) })
	_, c.Providers, _ = s.ec.managed() // parseEncryptionConfig checked it
	return c
}

func readNode(f NodeFiles) (*nodeState, error) {
	pods, err := scanManifests(f.ManifestDir)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(f.EncryptionConfigPath)
	if err != nil {
		return nil, fmt.Errorf("read EncryptionConfiguration of node %s: %w", f.Name, err)
	}
	ec, err := parseEncryptionConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.EncryptionConfigPath, err)
	}
	return &nodeState{pods: pods, config: data, ec: ec}, nil
}

// scanManifests reads the static pods kmsctl owns in dir, by provider.
// Like kubelet, it skips directories and names starting with a dot (which
// is how kmsctl's temp files stay out of kubelet's way).
func scanManifests(dir string) (map[string]manifest, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read manifest directory: %w", err)
	}
	pods := map[string]manifest{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			continue // a dangling link or a special file is no pod of ours
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read static pod: %w", err)
		}
		rev, ours, err := parseManifest(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if !ours {
			continue
		}
		if other, dup := pods[rev.Provider]; dup {
			return nil, fmt.Errorf("%s and %s are both the static pod of provider %s: remove one (kubelet runs one pod of a name)", filepath.Join(dir, other.file), p, rev.Provider)
		}
		pods[rev.Provider] = manifest{file: name, data: data, rev: rev}
	}
	return pods, nil
}

// parseManifest reads one manifest file. ours is false for a file that is
// not a plugin static pod (kube-apiserver.yaml, etcd.yaml, anything that
// is not YAML); a file that carries render's provider label but is not a
// pod render could have written is an error.
func parseManifest(data []byte) (rev lifecycle.Revision, ours bool, err error) {
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		if bytes.Contains(data, []byte(render.LabelProvider)) {
			return rev, false, fmt.Errorf("names label %s but does not parse: %s", render.LabelProvider, strings.Join(strings.Fields(err.Error()), " "))
		}
		return rev, false, nil
	}
	if _, ok := head.Metadata.Labels[render.LabelProvider]; !ok {
		return rev, false, nil
	}
	if head.Kind != "Pod" {
		return rev, false, fmt.Errorf("carries label %s but is a %q, not a Pod", render.LabelProvider, head.Kind)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		return rev, false, fmt.Errorf("carries label %s but is not a valid v1 Pod: %s", render.LabelProvider, strings.Join(strings.Fields(err.Error()), " "))
	}
	rev, err = render.PodRevision(&pod)
	if err != nil {
		return rev, false, err
	}
	return rev, true, nil
}

// CheckMetricsPort refuses to put provider's plugin on port on node f when
// another provider's plugin static pod there already listens on it. Plugin
// pods run on the host network, and during a key change the new provider's
// plugin runs beside the old one: with one port, the second could never
// bind it, its probes would answer for the first, and the step would only
// fail at its timeout. Said before anything changes, it names the fix.
func CheckMetricsPort(f NodeFiles, provider string, port int32) error {
	pods, err := scanManifests(f.ManifestDir)
	if err != nil {
		return fmt.Errorf("node %s: %w", f.Name, err)
	}
	for _, p := range slices.Sorted(maps.Keys(pods)) {
		if p == provider {
			continue
		}
		m := pods[p]
		var pod corev1.Pod
		if err := yaml.Unmarshal(m.data, &pod); err != nil {
			return fmt.Errorf("node %s: %s: %w", f.Name, filepath.Join(f.ManifestDir, m.file), err)
		}
		if got, ok := render.MetricsPort(&pod); ok && got == port {
			return fmt.Errorf("node %s: %s, the plugin of provider %s, already listens on metrics port %d, and the two plugins run side by side on the host network: set node.metricsPort in kms.yaml to a port free on every node",
				f.Name, filepath.Join(f.ManifestDir, m.file), p, port)
		}
	}
	return nil
}
