package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
)

// NodesKind identifies a nodes.yaml document, the list of control-plane
// nodes `kmsctl rollout` drives.
const NodesKind = "Nodes"

// Nodes is one nodes.yaml: every control-plane node, in the order a rollout
// takes them, and where kmsctl keeps its progress.
type Nodes struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// StateDir holds the rollout's progress and each node's last-known-good
	// files; it must survive kmsctl being killed (not a tmpfs).
	StateDir string      `json:"stateDir"`
	Nodes    []NodeFiles `json:"nodes"`
}

// NodeFiles is where one node's files are, as kmsctl reaches them (every
// node is local in the e2e; a single-node cluster; a shared mount), and its
// API server's own address.
type NodeFiles struct {
	Name string `json:"name"`
	// ManifestDir is the kubelet's staticPodPath.
	ManifestDir string `json:"manifestDir"`
	// EncryptionConfig is the file the API server's
	// --encryption-provider-config names.
	EncryptionConfig string `json:"encryptionConfig"`
	// SocketDir is where the node's plugin sockets are (node.socketDir of
	// kms.yaml, as kmsctl reaches it).
	SocketDir string `json:"socketDir"`
	// APIServer is this node's API server, https://host:port.
	APIServer string `json:"apiServer"`
}

// LoadNodes reads, parses and validates the nodes.yaml at path.
func LoadNodes(path string) (*Nodes, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	n, err := ParseNodes(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// ParseNodes decodes and validates a nodes.yaml document; every error names
// its field.
func ParseNodes(data []byte) (*Nodes, error) {
	n, err := decodeStrict(data, Nodes{}, "a "+NodesKind)
	if err != nil {
		return nil, err
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	return n, nil
}

// Validate checks the values: absolute paths, unique names, https API
// servers.
func (n *Nodes) Validate() error {
	var errs Errors
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if n.APIVersion != APIVersion {
		bad("apiVersion", "must be %s, not %q", APIVersion, n.APIVersion)
	}
	if n.Kind != NodesKind {
		bad("kind", "must be %s, not %q", NodesKind, n.Kind)
	}
	if !filepath.IsAbs(n.StateDir) {
		bad("stateDir", "must be an absolute directory that survives a restart, not %q", n.StateDir)
	}
	if len(n.Nodes) == 0 {
		bad("nodes", "must list at least one node")
	}
	seen := map[string]bool{}
	for i, node := range n.Nodes {
		at := fmt.Sprintf("nodes[%d]", i)
		switch {
		case node.Name == "":
			bad(at+".name", "is required")
		case seen[node.Name]:
			bad(at+".name", "%q is listed twice", node.Name)
		}
		seen[node.Name] = true
		for field, p := range map[string]string{"manifestDir": node.ManifestDir, "encryptionConfig": node.EncryptionConfig, "socketDir": node.SocketDir} {
			if !filepath.IsAbs(p) {
				bad(at+"."+field, "must be an absolute path, not %q", p)
			}
		}
		if u, err := url.Parse(node.APIServer); err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad(at+".apiServer", "must be the node's API server as https://host:port, not %q", node.APIServer)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}
