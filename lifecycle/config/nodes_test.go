package config

import (
	"strings"
	"testing"
)

const validNodes = `apiVersion: kmsctl.vaultkms.io/v1alpha1
kind: Nodes
stateDir: /var/lib/kmsctl
nodes:
- name: cp-1
  manifestDir: /etc/kubernetes/manifests
  encryptionConfig: /etc/kubernetes/enc/encryption-config.yaml
  socketDir: /var/run/kmsplugin
  apiServer: https://10.0.0.11:6443
- name: cp-2
  manifestDir: /mnt/cp-2/etc/kubernetes/manifests
  encryptionConfig: /mnt/cp-2/etc/kubernetes/enc/encryption-config.yaml
  socketDir: /mnt/cp-2/var/run/kmsplugin
  apiServer: https://10.0.0.12:6443
`

func TestParseNodes(t *testing.T) {
	n, err := ParseNodes([]byte(validNodes))
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Nodes) != 2 || n.Nodes[1].Name != "cp-2" || n.StateDir != "/var/lib/kmsctl" {
		t.Fatalf("parsed %+v", n)
	}
	tests := []struct {
		name, from, to, want string
	}{
		{name: "unknown field => named with its path", from: "  socketDir: /var/run/kmsplugin\n", to: "  socketDir: /var/run/kmsplugin\n  sockteDir: x\n", want: "nodes[0].sockteDir: unknown field"},
		{name: "duplicate name => listed twice", from: "name: cp-2", to: "name: cp-1", want: `nodes[1].name: "cp-1" is listed twice`},
		{name: "relative path => absolute", from: "manifestDir: /etc/kubernetes/manifests", to: "manifestDir: manifests", want: "nodes[0].manifestDir: must be an absolute path"},
		{name: "http API server => https", from: "https://10.0.0.11:6443", to: "http://10.0.0.11:6443", want: "nodes[0].apiServer: must be the node's API server as https://host:port"},
		{name: "no state dir => stateDir", from: "stateDir: /var/lib/kmsctl\n", to: "", want: "stateDir: must be an absolute directory"},
		{name: "wrong kind => kind", from: "kind: Nodes", to: "kind: KMSConfig", want: `kind: must be Nodes, not "KMSConfig"`},
		{name: "a number for a path => type named", from: "socketDir: /var/run/kmsplugin", to: "socketDir: 3", want: "must be a string, not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(validNodes, tt.from, tt.to, 1)
			if doc == validNodes {
				t.Fatalf("fixture edit %q not applied", tt.from)
			}
			_, err := ParseNodes([]byte(doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
