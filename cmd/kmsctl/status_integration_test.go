//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	kmsv2api "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan/etcdtest"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan/scantest"
	"github.com/vaultkms/vault-kms-plugin/plugin"
	"github.com/vaultkms/vault-kms-plugin/plugin/server"
	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// storedKMSv2 is a value as kube-apiserver stores it through the plugin's
// provider, under transit version v.
func storedKMSv2(t *testing.T, v int) string {
	t.Helper()
	b, err := proto.Marshal(&kmsv2api.EncryptedObject{
		EncryptedData:          []byte("ciphertext"),
		KeyID:                  fmt.Sprintf("vault-transit:transit/kubernetes:v%d:0011223344", v),
		EncryptedDEKSource:     []byte(fmt.Sprintf("vault:v%d:c2VhbGVkIHNlZWQgc2VhbGVkIHNlZWQgc2VhbGVk", v)),
		EncryptedDEKSourceType: kmsv2api.EncryptedDEKSourceType_HKDF_SHA256_XNONCE_AES_GCM_SEED,
	})
	if err != nil {
		t.Fatal(err)
	}
	return "k8s:enc:kms:v2:vault-kubernetes-0a1b2c3d:" + string(b)
}

func TestStatusCommand(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := context.Background()
	var ops []clientv3.Op
	put := func(k, v string) { ops = append(ops, clientv3.OpPut(k, v)) }
	for i := range 30 {
		put(fmt.Sprintf("/registry/secrets/ns/new-%02d", i), storedKMSv2(t, 2))
	}
	put("/registry/secrets/ns/old-1", storedKMSv2(t, 1))
	put("/registry/secrets/kube-system/plain", "k8s\x00plain")
	put("/registry/secrets/ns/local", "k8s:enc:aescbc:v1:key1:xxxxxxxx")
	put("/registry/secrets/ns/broken", "k8s:enc:kms:v2:vault-kubernetes-0a1b2c3d:\xff")
	put("/registry/configmaps/ns/cm", "k8s\x00cm")
	if _, err := e.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}

	t.Run("table => totals per resource and one line per way of storage", func(t *testing.T) {
		out, err := runStatus(t, "--etcd-endpoints", e.Endpoint, "--resources", "secrets,configmaps")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, want := range []string{
			"RESOURCE    TOTAL  KMSV2  OTHER PROVIDERS  UNENCRYPTED  MALFORMED",
			"secrets     34     31     1                1            1",
			"configmaps  1      0      0                1            0",
		} {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		for _, want := range [][]string{
			{"secrets", "kms-v2", "vault-kubernetes-0a1b2c3d", "transit/kubernetes", "v1", "vault-transit:transit/kubernetes:v1:0011223344", "1", "ns/old-1"},
			{"secrets", "kms-v2", "vault-kubernetes-0a1b2c3d", "transit/kubernetes", "v2", "vault-transit:transit/kubernetes:v2:0011223344", "30", "ns/new-00,", "..."},
			{"secrets", "aescbc", "key1", "-", "-", "-", "1", "ns/local"},
			{"secrets", "identity", "-", "-", "-", "-", "1", "kube-system/plain"},
			{"secrets", "malformed", "vault-kubernetes-0a1b2c3d", "-", "-", "EncryptedObject", "does", "not", "decode", "1", "ns/broken"},
			{"configmaps", "identity", "-", "-", "-", "-", "1", "ns/cm"},
		} {
			if !hasLine(out, want) {
				t.Errorf("output lacks a line %q:\n%s", want, out)
			}
		}
	})

	t.Run("json => the documented shape with exact counts", func(t *testing.T) {
		out, err := runStatus(t, "--etcd-endpoints", e.Endpoint, "-o", "json")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var got StatusReport
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		if len(got.Scan.Resources) != 1 || got.Scan.Resources[0].Resource != "secrets" || got.Scan.Resources[0].Total != 34 || got.Scan.Revision == 0 {
			t.Fatalf("report %+v", got.Scan)
		}
		g := got.Scan.Resources[0].Groups[0]
		if g.TransitVersion != 1 || g.Count != 1 || g.Objects[0] != "ns/old-1" {
			t.Errorf("first group %+v", g)
		}
		// The field names are the contract for automation.
		for _, key := range []string{`"scan":`, `"revision":`, `"etcdPrefix": "/registry"`, `"keyPrefix": "/registry/secrets/"`,
			`"groups":`, `"class": "kms-v2"`, `"transitVersion": 1`, `"transitKey": "transit/kubernetes"`, `"keyID":`, `"unencrypted": 1`, `"objects":`} {
			if !strings.Contains(out, key) {
				t.Errorf("json lacks %s:\n%s", key, out)
			}
		}
	})

	t.Run("--config => resources from encryption.resources", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "kms.yaml")
		data, err := os.ReadFile(exampleConfig)
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.Replace(data, []byte("    - secrets\n"), []byte("    - secrets\n    - configmaps\n"), 1)
		if err := os.WriteFile(cfg, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := runStatus(t, "--etcd-endpoints", e.Endpoint, "--config", cfg, "-o", "json")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var got StatusReport
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Scan.Resources) != 2 || got.Scan.Resources[1].Resource != "configmaps" || got.Scan.Resources[1].Total != 1 {
			t.Errorf("resources %+v", got.Scan.Resources)
		}
	})

	t.Run("etcd unreachable => error naming the read", func(t *testing.T) {
		_, err := runStatus(t, "--etcd-endpoints", "http://127.0.0.1:1", "--timeout", "2s")
		if err == nil || !strings.Contains(err.Error(), "scan secrets") {
			t.Fatalf("err = %v", err)
		}
	})
}

// hasLinePrefix reports whether some line of out starts with these fields.
func hasLinePrefix(out string, fields []string) bool {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

// hasLine reports whether some line of out has exactly these fields.
func hasLine(out string, fields []string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(l), " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}

// servePlugin serves the plugin in-process (its own gRPC server, on a
// real unix socket) over the real Vault v, with v's root token, refreshing
// its Status every 200ms; it returns the socket's path.
func servePlugin(t *testing.T, v *vaulttest.Server, sockPath string) string {
	t.Helper()
	client, err := vault.New(vault.Config{Addresses: []string{v.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(v.RootToken)
	p := plugin.New(client.Transit("transit", "kubernetes"), plugin.Config{Mount: "transit", Key: "kubernetes", RefreshInterval: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	sock, err := server.Listen(sockPath, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(sock, p, nil)
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() {
		cancel()
		srv.Shutdown(context.Background())
	})
	return sockPath
}

// runStatusEnv is runStatus with getenv answering from env.
func runStatusEnv(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	return execute(newStatusCmdEnv(func(k string) string { return env[k] }), args...)
}

// TestStatusPluginsAndMigrations asks a real plugin over its socket, with
// the transit key section from a real Vault, and an API server that does
// not answer for the StorageVersionMigrations.
func TestStatusPluginsAndMigrations(t *testing.T) {
	v := vaulttest.StartDev(t)
	v.EnableTransit("transit", "kubernetes")
	if latest := v.RotateKey("transit", "kubernetes"); latest != 2 {
		t.Fatalf("latest_version %d after a rotation", latest)
	}
	e := etcdtest.Start(t)
	ctx := context.Background()
	for key, version := range map[string]int{"/registry/secrets/ns/a": 2, "/registry/secrets/ns/b": 1} {
		if _, err := e.Client.Put(ctx, key, string(scantest.Value(scantest.TransitKey, version))); err != nil {
			t.Fatal(err)
		}
	}

	// Node cp-1's EncryptionConfiguration lists provider vault-a, whose
	// plugin answers at <socketDir>/vault-a.sock; cp-2's socket directory
	// is empty.
	dir := t.TempDir()
	writeNode := func(name string) config.NodeFiles {
		n := config.NodeFiles{Name: name, ManifestDir: filepath.Join(dir, name, "manifests"),
			EncryptionConfig: filepath.Join(dir, name, "encryption.yaml"), SocketDir: filepath.Join(dir, name, "run"),
			APIServer: "https://127.0.0.1:6443"}
		for _, d := range []string{n.ManifestDir, n.SocketDir} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		ec := `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources:
  - secrets
  providers:
  - kms:
      apiVersion: v2
      name: vault-a
      endpoint: unix:///var/run/kmsplugin/vault-a.sock
      timeout: 3s
  - identity: {}
`
		if err := os.WriteFile(n.EncryptionConfig, []byte(ec), 0o600); err != nil {
			t.Fatal(err)
		}
		return n
	}
	cp1, cp2 := writeNode("cp-1"), writeNode("cp-2")
	nodesYAML, err := json.Marshal(config.Nodes{APIVersion: config.APIVersion, Kind: config.NodesKind, StateDir: filepath.Join(dir, "state"), Nodes: []config.NodeFiles{cp1, cp2}})
	if err != nil {
		t.Fatal(err)
	}
	nodesPath := filepath.Join(dir, "nodes.yaml")
	if err := os.WriteFile(nodesPath, nodesYAML, 0o600); err != nil {
		t.Fatal(err)
	}
	nodeSock := servePlugin(t, v, filepath.Join(cp1.SocketDir, "vault-a.sock"))
	sock := servePlugin(t, v, filepath.Join(dir, "direct", "kms.sock"))
	missing := filepath.Join(dir, "none.sock")

	// A kubeconfig whose API server refuses connections.
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:1
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    token: not-a-secret
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}

	env := map[string]string{"VAULT_TOKEN": v.RootToken}
	args := []string{"--etcd-endpoints", e.Endpoint, "--resources", "secrets",
		"--vault-address", v.Addr, "--vault-key-path", "transit/keys/kubernetes",
		"--plugin-sockets", sock + "," + missing, "--nodes", nodesPath, "--kubeconfig", kubeconfig}
	status := func(t *testing.T, extra ...string) StatusReport {
		t.Helper()
		out, err := runStatusEnv(t, env, append(append([]string{}, args...), extra...)...)
		if err != nil {
			t.Fatalf("status failed (its sections' errors must not fail it): %v\n%s", err, out)
		}
		if strings.Contains(out, v.RootToken) {
			t.Fatalf("output holds the Vault token:\n%s", out)
		}
		var got StatusReport
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		return got
	}
	// The plugin's key_id for version N; the exact tag is the plugin's.
	keyIDOf := func(version int) string { return fmt.Sprintf("vault-transit:transit/kubernetes:v%d:", version) }

	t.Run("json => each socket's healthz, key_id as a key version and preflight; bad sockets are error rows", func(t *testing.T) {
		got := status(t, "-o", "json")
		want := []PluginStatus{
			{Socket: sock, Healthz: "ok", KeyVersion: 2, PreflightOK: true},
			{Socket: missing},
			{Node: "cp-1", Provider: "vault-a", Socket: nodeSock, Healthz: "ok", KeyVersion: 2, PreflightOK: true},
			{Node: "cp-2", Provider: "vault-a", Socket: filepath.Join(cp2.SocketDir, "vault-a.sock")},
		}
		if len(got.Plugins) != len(want) {
			t.Fatalf("plugins %+v, want %d rows", got.Plugins, len(want))
		}
		for i, w := range want {
			g := got.Plugins[i]
			if w.PreflightOK {
				if !strings.HasPrefix(g.KeyID, keyIDOf(2)) {
					t.Errorf("plugins[%d].keyID = %q, want %s...", i, g.KeyID, keyIDOf(2))
				}
				if g.KeyID = ""; g != w {
					t.Errorf("plugins[%d] = %+v, want %+v", i, g, w)
				}
				continue
			}
			// An error row: where, and an error naming the socket.
			if g.Node != w.Node || g.Provider != w.Provider || g.Socket != w.Socket || g.PreflightOK || g.Healthz != "" ||
				!strings.Contains(g.Error, "plugin socket "+w.Socket+": Status:") {
				t.Errorf("plugins[%d] = %+v, want an error row for %s", i, g, w.Socket)
			}
		}
	})

	t.Run("API server unreachable => the migrations section says so, status still succeeds", func(t *testing.T) {
		got := status(t, "-o", "json")
		m := got.StorageVersionMigrations
		if m == nil || m.Server != "https://127.0.0.1:1" || m.Served || m.Error == "" || m.Migrations == nil || len(m.Migrations) != 0 {
			t.Fatalf("storageVersionMigrations = %+v, want the server, served false, an error and no migrations", m)
		}
	})

	t.Run("table => one line per plugin socket", func(t *testing.T) {
		keyID := status(t, "-o", "json").Plugins[2].KeyID
		out, err := runStatusEnv(t, env, args...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !hasLine(out, []string{"cp-1", nodeSock, "ok", "v2", keyID, "ok", "-"}) {
			t.Errorf("no line for cp-1's plugin:\n%s", out)
		}
		if !hasLinePrefix(out, []string{"-", missing, "-", "-", "-", "-", "plugin", "socket", missing + ":", "Status:"}) {
			t.Errorf("no error line for %s:\n%s", missing, out)
		}
		if !strings.Contains(out, "StorageVersionMigrations on https://127.0.0.1:1: ") {
			t.Errorf("no line for the migrations' error:\n%s", out)
		}
	})

	t.Run("key rotated => the plugins report the new version", func(t *testing.T) {
		if latest := v.RotateKey("transit", "kubernetes"); latest != 3 {
			t.Fatalf("latest_version %d", latest)
		}
		var got StatusReport
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			got = status(t, "-o", "json")
			if got.Plugins[0].KeyVersion == 3 && got.Plugins[2].KeyVersion == 3 || time.Now().After(deadline) {
				break
			}
		}
		if p := got.Plugins[0]; p.KeyVersion != 3 || !strings.HasPrefix(p.KeyID, keyIDOf(3)) || !p.PreflightOK {
			t.Errorf("plugins[0] = %+v, want key version 3", p)
		}
	})
}
