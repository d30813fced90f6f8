package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRolloutValidate(t *testing.T) {
	dir := t.TempDir()
	nodes := filepath.Join(dir, "nodes.yaml")
	if err := os.WriteFile(nodes, []byte(`apiVersion: kmsctl.vaultkms.io/v1alpha1
kind: Nodes
stateDir: /var/lib/kmsctl
nodes:
- {name: cp-1, manifestDir: /etc/kubernetes/manifests, encryptionConfig: /etc/kubernetes/enc.yaml, socketDir: /var/run/kmsplugin, apiServer: "https://10.0.0.1:6443"}
- {name: cp-2, manifestDir: /etc/kubernetes/manifests, encryptionConfig: /etc/kubernetes/enc.yaml, socketDir: /var/run/kmsplugin, apiServer: "https://10.0.0.2:6443"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "plan without --nodes", args: []string{"plan", "--config", "k.yaml"}, want: "--nodes is required"},
		{name: "plan without --config", args: []string{"plan", "--nodes", "n.yaml"}, want: "--config is required"},
		{name: "plan -o yaml", args: []string{"plan", "--nodes", "n.yaml", "--config", "k.yaml", "-o", "yaml"}, want: "-o must be table or json"},
		{name: "zero step timeout", args: []string{"plan", "--nodes", "n.yaml", "--config", "k.yaml", "--step-timeout", "0s"}, want: "--step-timeout must be positive"},
		{name: "apply without --key: no unverified image is ever written", args: []string{"apply", "--nodes", "n.yaml", "--config", "k.yaml"}, want: `"key" not set`},
		{name: "node without --node => required", args: []string{"node", "--nodes", nodes, "--config", "k.yaml", "--key", "cosign.pub"}, want: "--node is required"},
		{name: "node without --key: no unverified image is ever written", args: []string{"node", "--node", "cp-1", "--nodes", nodes, "--config", "k.yaml"}, want: `"key" not set`},
		{name: "node --node not in nodes.yaml => refused, naming the nodes listed", args: []string{"node", "--node", "cp-3", "--nodes", nodes, "--config", "k.yaml", "--key", "cosign.pub"},
			want: "--node cp-3 is not in " + nodes + ", which lists cp-1, cp-2"},
		{name: "node with a zero poll interval", args: []string{"node", "--node", "cp-1", "--nodes", nodes, "--config", "k.yaml", "--key", "cosign.pub", "--poll-interval", "0s"}, want: "--poll-interval and --apply-timeout must be positive"},
		{name: "--retire-provider without --etcd-endpoints => refused: the scan is required", args: []string{"plan", "--nodes", "n.yaml", "--config", "k.yaml", "--retire-provider", "vault-old"}, want: "--retire-provider needs --etcd-endpoints"},
		{name: "--etcd-endpoints without --retire-provider => refused", args: []string{"plan", "--nodes", "n.yaml", "--config", "k.yaml", "--etcd-endpoints", "https://10.0.0.1:2379"}, want: "--etcd-endpoints is for --retire-provider"},
		{name: "--etcd-cert without --etcd-key => refused", args: []string{"plan", "--nodes", "n.yaml", "--config", "k.yaml", "--retire-provider", "vault-old", "--etcd-endpoints", "https://10.0.0.1:2379", "--etcd-cert", "c.pem"}, want: "--etcd-cert and --etcd-key go together"},
		{name: "unreadable nodes.yaml => named", args: []string{"plan", "--nodes", filepath.Join(t.TempDir(), "missing.yaml"), "--config", "k.yaml"}, want: "read nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := execute(newRolloutCmd(), tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// Every command's flags register without clashing: a clash panics when
// kmsctl starts, whatever command is run.
func TestEveryCommandBuilds(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	for _, c := range root.Commands() {
		for _, sub := range append(c.Commands(), c) {
			root.SetOut(&out)
			root.SetArgs(append(strings.Fields(sub.CommandPath())[1:], "--help"))
			if err := root.Execute(); err != nil {
				t.Errorf("%s --help: %v", sub.CommandPath(), err)
			}
		}
	}
}
