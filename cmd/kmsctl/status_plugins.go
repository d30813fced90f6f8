package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/probe"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/nodefs"
)

// PluginStatus is one plugin socket's answers, an entry of `kmsctl status
// -o json`'s "plugins".
type PluginStatus struct {
	// Node and Provider are set for the sockets found through --nodes:
	// the node, and the provider whose socket it is.
	Node     string `json:"node,omitempty"`
	Provider string `json:"provider,omitempty"`
	// Socket is the unix socket's path.
	Socket string `json:"socket"`
	// Healthz and KeyID are what the plugin's Status answered, as the API
	// server sees them.
	Healthz string `json:"healthz,omitempty"`
	KeyID   string `json:"keyID,omitempty"`
	// KeyVersion is the transit key version KeyID names; 0 when the
	// transit key section is absent or KeyID is not one of the key's
	// metadata key_ids.
	KeyVersion int `json:"keyVersion,omitempty"`
	// PreflightOK: an Encrypt then Decrypt round trip through the socket
	// returned the plaintext (kmsctl rollout's health check).
	PreflightOK bool `json:"preflightOK"`
	// Error says what failed; the plugin is reported, status exits 0.
	Error string `json:"error,omitempty"`
}

// pluginTargets are the sockets to ask: --plugin-sockets as given, then
// every node's of --nodes. A node whose files cannot be read is one row
// with the error.
func (o *statusOptions) pluginTargets() ([]PluginStatus, error) {
	var out []PluginStatus
	for _, s := range o.pluginSockets {
		out = append(out, PluginStatus{Socket: s})
	}
	if o.nodesPath == "" {
		return out, nil
	}
	nodes, err := config.LoadNodes(o.nodesPath)
	if err != nil {
		return nil, fmt.Errorf("--nodes: %w", err)
	}
	for _, n := range nodes.Nodes {
		onDisk, _, err := nodefs.Observe(nodefs.NodeFiles{Name: n.Name, ManifestDir: n.ManifestDir, EncryptionConfigPath: n.EncryptionConfig})
		if err != nil {
			out = append(out, PluginStatus{Node: n.Name, Error: fmt.Sprintf("node %s: %v: its plugin sockets are not known", n.Name, err)})
			continue
		}
		out = append(out, nodeSockets(n, onDisk)...)
	}
	return out, nil
}

// nodeSockets are the plugin sockets of node n whose files hold onDisk:
// each KMS provider of its EncryptionConfiguration, in file order, then
// each kmsctl static pod's provider not listed there yet (a new key's
// plugin before its provider is added), at <socketDir>/<provider>.sock, the
// rule the rollout's observe and kms.yaml's node.socketDir follow.
func nodeSockets(n config.NodeFiles, onDisk lifecycle.NodeConfig) []PluginStatus {
	var out []PluginStatus
	seen := map[string]bool{}
	add := func(provider string) {
		if seen[provider] {
			return
		}
		seen[provider] = true
		out = append(out, PluginStatus{Node: n.Name, Provider: provider, Socket: filepath.Join(n.SocketDir, provider+".sock")})
	}
	for _, p := range onDisk.Providers {
		if p.KMS {
			add(p.Name)
		}
	}
	for _, r := range onDisk.Pods {
		add(r.Provider)
	}
	return out
}

// askPlugin fills row t from the plugin at t.Socket: its Status, then the
// Encrypt/Decrypt preflight (probe.Plugin, the rollout's health check).
// keyVersions maps the transit key's metadata key_ids to their versions.
func askPlugin(ctx context.Context, t PluginStatus, keyVersions map[string]int) PluginStatus {
	if t.Error != "" {
		return t
	}
	return pluginRow(t, probe.Plugin(ctx, t.Socket), keyVersions)
}

// pluginRow is row t given probe.Plugin's verdict h.
func pluginRow(t PluginStatus, h lifecycle.PluginHealth, keyVersions map[string]int) PluginStatus {
	t.Healthz, t.KeyID, t.KeyVersion = h.Healthz, h.KeyID, keyVersions[h.KeyID]
	t.PreflightOK, t.Error = h.PreflightOK, h.Err
	return t
}
