package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"k8s.io/client-go/rest"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate/svm"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rotation"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

func runStatus(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return execute(newStatusCmd(), args...)
}

func TestStatusValidate(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no endpoints => --etcd-endpoints", args: nil, want: "--etcd-endpoints is required"},
		{name: "-o yaml => -o", args: []string{"--etcd-endpoints", "http://x", "-o", "yaml"}, want: "-o must be table or json"},
		{name: "--resources and --config => exclusive", args: []string{"--etcd-endpoints", "http://x", "--resources", "secrets", "--config", "k.yaml"}, want: "--resources and --config are exclusive"},
		{name: "wildcard => --resources", args: []string{"--etcd-endpoints", "http://x", "--resources", "*.apps"}, want: "--resources: resource \"*.apps\" is a wildcard"},
		{name: "cert without key => both", args: []string{"--etcd-endpoints", "http://x", "--etcd-cert", "c.pem"}, want: "--etcd-cert and --etcd-key go together"},
		{name: "zero timeout => --timeout", args: []string{"--etcd-endpoints", "http://x", "--timeout", "0s"}, want: "--timeout must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runStatus(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestStatusValidatePluginFlags(t *testing.T) {
	t.Run("relative --plugin-sockets => names the flag", func(t *testing.T) {
		_, err := runStatus(t, "--etcd-endpoints", "http://x", "--plugin-sockets", "run/kms.sock")
		if err == nil || !strings.Contains(err.Error(), `--plugin-sockets: "run/kms.sock" must be a socket's absolute path`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unreadable --nodes => fails before reading etcd, naming the flag", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nodes.yaml")
		_, err := runStatus(t, "--etcd-endpoints", "http://127.0.0.1:1", "--nodes", missing)
		if err == nil || !strings.Contains(err.Error(), "--nodes: read nodes:") {
			t.Fatalf("err = %v", err)
		}
	})
}

// kmsGroup is a scan fixture: count objects of the plugin's key under
// transit version v.
func kmsGroup(transitKey string, v, count int) scan.Group {
	return scan.Group{Class: scan.ClassKMSv2, Provider: "vault-k-1", TransitKey: transitKey, TransitVersion: v, Count: count}
}

func TestOlderObjects(t *testing.T) {
	const tk = "transit/kubernetes"
	report := func(rs ...scan.ResourceReport) scan.Report { return scan.Report{Resources: rs} }
	tests := []struct {
		name string
		rep  scan.Report
		key  *rotation.KeyState
		want map[string]int
	}{
		{name: "everything under the latest version => none",
			rep: report(scan.ResourceReport{Resource: "secrets", Groups: []scan.Group{kmsGroup(tk, 3, 10)}}),
			key: &rotation.KeyState{Name: tk, Latest: 3}, want: map[string]int{}},
		{name: "key section => counted below latest_version, even when the scan saw no object under it",
			rep: report(scan.ResourceReport{Resource: "secrets", Groups: []scan.Group{kmsGroup(tk, 1, 2), kmsGroup(tk, 2, 5)}}),
			key: &rotation.KeyState{Name: tk, Latest: 3}, want: map[string]int{"secrets": 7}},
		{name: "key section => another transit key's objects, unknown versions and unencrypted ones are not counted",
			rep: report(scan.ResourceReport{Resource: "secrets", Groups: []scan.Group{kmsGroup("transit/other", 1, 4), kmsGroup(tk, 0, 3),
				{Class: scan.ClassIdentity, Count: 9}, kmsGroup(tk, 2, 1)}}),
			key: &rotation.KeyState{Name: tk, Latest: 3}, want: map[string]int{"secrets": 1}},
		{name: "no key section => below the newest version the scan saw in any resource",
			rep: report(scan.ResourceReport{Resource: "secrets", Groups: []scan.Group{kmsGroup(tk, 2, 6)}},
				scan.ResourceReport{Resource: "configmaps", Groups: []scan.Group{kmsGroup(tk, 1, 1), kmsGroup(tk, 3, 2)}}),
			want: map[string]int{"secrets": 6, "configmaps": 1}},
		{name: "no key section => each transit key against its own newest version",
			rep:  report(scan.ResourceReport{Resource: "secrets", Groups: []scan.Group{kmsGroup("transit/other", 1, 4), kmsGroup(tk, 5, 1), kmsGroup(tk, 4, 2)}}),
			want: map[string]int{"secrets": 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := olderObjects(tt.rep, tt.key); !maps.Equal(got, tt.want) {
				t.Errorf("olderObjects = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSVMWarning(t *testing.T) {
	rotated := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	mig := func(state svm.State, created time.Time) SVMStatus {
		return SVMStatus{Name: "m", Resource: "secrets", State: state, Created: created}
	}
	after, before := rotated.Add(time.Minute), rotated.Add(-time.Hour)
	tests := []struct {
		name          string
		m             SVMStatus
		older         int
		latestCreated time.Time
		want          string
	}{
		{name: "succeeded with objects left under older versions => ran too early; migrate",
			m: mig(svm.StateSucceeded, after), older: 12, latestCreated: rotated,
			want: "Succeeded, yet 12 objects remain under older versions: it ran before every API server had the new key_id; run kmsctl migrate"},
		{name: "succeeded with objects left, latest version's age unknown => ran too early",
			m: mig(svm.StateSucceeded, before), older: 1,
			want: "Succeeded, yet 1 objects remain under older versions: it ran before every API server had the new key_id; run kmsctl migrate"},
		{name: "succeeded before the latest version existed, objects left => not to blame; migrate",
			m: mig(svm.StateSucceeded, before), older: 3, latestCreated: rotated,
			want: "Succeeded before the transit key's latest version existed; 3 objects remain under older versions: run kmsctl migrate"},
		{name: "succeeded, nothing left => no warning", m: mig(svm.StateSucceeded, after), older: 0, latestCreated: rotated},
		{name: "running with objects left => no warning: it is not done", m: mig(svm.StateRunning, after), older: 5, latestCreated: rotated},
		{name: "pending with objects left => no warning", m: mig(svm.StatePending, after), older: 5},
		{name: "failed with objects left => no warning: its message says why", m: mig(svm.StateFailed, after), older: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := svmWarning(tt.m, tt.older, tt.latestCreated); got != tt.want {
				t.Errorf("svmWarning = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSetSVMWarnings(t *testing.T) {
	at := func(min int) time.Time { return time.Date(2026, 11, 23, 10, min, 0, 0, time.UTC) }
	migs := []SVMStatus{
		{Name: "secrets-old", Resource: "secrets", State: svm.StateSucceeded, Created: at(1)},
		{Name: "secrets-new", Resource: "secrets", State: svm.StateSucceeded, Created: at(5)},
		{Name: "configmaps-running", Resource: "configmaps", State: svm.StateRunning, Created: at(9)},
		{Name: "configmaps-done", Resource: "configmaps", State: svm.StateSucceeded, Created: at(2)},
	}
	setSVMWarnings(migs, map[string]int{"secrets": 4, "configmaps": 4}, time.Time{})
	t.Run("several Succeeded of one resource => only the newest is judged", func(t *testing.T) {
		if migs[0].Warning != "" || !strings.HasPrefix(migs[1].Warning, "Succeeded, yet 4 objects remain") {
			t.Errorf("warnings %q, %q; want only the newest warned", migs[0].Warning, migs[1].Warning)
		}
	})
	t.Run("an older Succeeded behind a newer running one => no warning", func(t *testing.T) {
		if migs[2].Warning != "" || migs[3].Warning != "" {
			t.Errorf("warnings %q, %q; want none", migs[2].Warning, migs[3].Warning)
		}
	})
}

func TestNodeSockets(t *testing.T) {
	node := config.NodeFiles{Name: "cp-1", SocketDir: "/var/run/kmsplugin"}
	sock := func(p string) PluginStatus {
		return PluginStatus{Node: "cp-1", Provider: p, Socket: "/var/run/kmsplugin/" + p + ".sock"}
	}
	tests := []struct {
		name   string
		onDisk lifecycle.NodeConfig
		want   []PluginStatus
	}{
		{name: "KMS providers of the EncryptionConfiguration => their sockets in file order, not identity's",
			onDisk: lifecycle.NodeConfig{Providers: []lifecycle.Provider{{Name: "vault-b", KMS: true}, {Name: "vault-a", KMS: true}, {Name: lifecycle.IdentityProvider}},
				Pods: []lifecycle.Revision{{Name: "r1", Provider: "vault-a"}, {Name: "r1", Provider: "vault-b"}}},
			want: []PluginStatus{sock("vault-b"), sock("vault-a")}},
		{name: "a pod whose provider is not listed yet => its socket too, after the listed ones",
			onDisk: lifecycle.NodeConfig{Providers: []lifecycle.Provider{{Name: "vault-a", KMS: true}},
				Pods: []lifecycle.Revision{{Name: "r2", Provider: "vault-new"}, {Name: "r1", Provider: "vault-a"}}},
			want: []PluginStatus{sock("vault-a"), sock("vault-new")}},
		{name: "no KMS provider and no pod => no socket",
			onDisk: lifecycle.NodeConfig{Providers: []lifecycle.Provider{{Name: lifecycle.IdentityProvider}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nodeSockets(node, tt.onDisk); !slices.Equal(got, tt.want) {
				t.Errorf("nodeSockets =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestPluginRow(t *testing.T) {
	const v3 = "vault-transit:transit/kubernetes:v3:1763892000"
	keyVersions := map[string]int{"vault-transit:transit/kubernetes:v2:1763891000": 2, v3: 3}
	target := PluginStatus{Node: "cp-1", Provider: "vault-a", Socket: "/run/k/vault-a.sock"}
	tests := []struct {
		name string
		h    lifecycle.PluginHealth
		want PluginStatus
	}{
		{name: "healthy on a metadata key_id => its version, preflight ok",
			h:    lifecycle.PluginHealth{Healthz: "ok", KeyID: v3, StatusOK: true, PreflightOK: true},
			want: PluginStatus{Node: "cp-1", Provider: "vault-a", Socket: "/run/k/vault-a.sock", Healthz: "ok", KeyID: v3, KeyVersion: 3, PreflightOK: true}},
		{name: "key_id not one of the key's => no version",
			h:    lifecycle.PluginHealth{Healthz: "ok", KeyID: "vault-transit:transit/kubernetes:v3:hmac-abc", StatusOK: true, PreflightOK: true},
			want: PluginStatus{Node: "cp-1", Provider: "vault-a", Socket: "/run/k/vault-a.sock", Healthz: "ok", KeyID: "vault-transit:transit/kubernetes:v3:hmac-abc", PreflightOK: true}},
		{name: "unhealthy => its healthz and the probe's error",
			h:    lifecycle.PluginHealth{Healthz: "err: vault unreachable", KeyID: v3, Err: "plugin socket /run/k/vault-a.sock: Status answered ..."},
			want: PluginStatus{Node: "cp-1", Provider: "vault-a", Socket: "/run/k/vault-a.sock", Healthz: "err: vault unreachable", KeyID: v3, KeyVersion: 3, Error: "plugin socket /run/k/vault-a.sock: Status answered ..."}},
		{name: "Status fails => the error naming the socket, nothing else",
			h:    lifecycle.PluginHealth{Err: "plugin socket /run/k/vault-a.sock: Status: connection refused"},
			want: PluginStatus{Node: "cp-1", Provider: "vault-a", Socket: "/run/k/vault-a.sock", Error: "plugin socket /run/k/vault-a.sock: Status: connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pluginRow(target, tt.h, keyVersions); got != tt.want {
				t.Errorf("pluginRow =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestStatusTableNewSections(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	render := func(s StatusReport) string {
		var b bytes.Buffer
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		if s.StorageVersionMigrations != nil {
			writeSVMTable(tw, s.StorageVersionMigrations, now)
		}
		if len(s.Plugins) > 0 {
			writePluginsTable(tw, s.Plugins)
		}
		if err := tw.Flush(); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	t.Run("migrations and plugins => one line each", func(t *testing.T) {
		out := render(StatusReport{
			StorageVersionMigrations: &SVMSection{Server: "https://127.0.0.1:6443", Served: true, Migrations: []SVMStatus{
				{Name: "kmsctl-secrets-v2-x", Resource: "secrets", State: svm.StateSucceeded, Created: now.Add(-90 * time.Second), ManagedByKmsctl: true, Warning: "Succeeded, yet 2 objects remain"},
				{Name: "theirs", Resource: "secrets", State: svm.StateFailed, Message: "forbidden", Created: now.Add(-time.Hour)},
			}},
			Plugins: []PluginStatus{
				{Node: "cp-1", Socket: "/run/k/a.sock", Healthz: "ok", KeyID: "vault-transit:transit/k:v2:1", KeyVersion: 2, PreflightOK: true},
				{Socket: "/tmp/none.sock", Error: "plugin socket /tmp/none.sock: Status: unavailable"},
			},
		})
		for _, want := range [][]string{
			{"StorageVersionMigrations", "on", "https://127.0.0.1:6443:"},
			{"kmsctl-secrets-v2-x", "secrets", "Succeeded", "1m30s", "yes", "-", "Succeeded,", "yet", "2", "objects", "remain"},
			{"theirs", "secrets", "Failed", "1h0m0s", "no", "forbidden", "-"},
			{"cp-1", "/run/k/a.sock", "ok", "v2", "vault-transit:transit/k:v2:1", "ok", "-"},
			{"-", "/tmp/none.sock", "-", "-", "-", "-", "plugin", "socket", "/tmp/none.sock:", "Status:", "unavailable"},
		} {
			if !hasFields(out, want) {
				t.Errorf("output lacks a line %q:\n%s", want, out)
			}
		}
	})
	t.Run("not served => says so", func(t *testing.T) {
		out := render(StatusReport{StorageVersionMigrations: &SVMSection{Server: "https://h:6443"}})
		if !strings.Contains(out, "StorageVersionMigrations: https://h:6443 does not serve storagemigration.k8s.io/v1") {
			t.Errorf("output:\n%s", out)
		}
	})
	t.Run("list failed => the error, not a table", func(t *testing.T) {
		out := render(StatusReport{StorageVersionMigrations: &SVMSection{Server: "https://h:6443", Served: true, Error: "list StorageVersionMigrations on https://h:6443: forbidden"}})
		if !strings.Contains(out, "StorageVersionMigrations on https://h:6443: list StorageVersionMigrations on https://h:6443: forbidden") || strings.Contains(out, "MIGRATION") {
			t.Errorf("output:\n%s", out)
		}
	})
}

// hasFields reports whether some line of out has exactly these fields.
func hasFields(out string, fields []string) bool {
	for _, l := range strings.Split(out, "\n") {
		if slices.Equal(strings.Fields(l), fields) {
			return true
		}
	}
	return false
}

// fakeSVMServer answers discovery and the list of StorageVersionMigrations
// as kube-apiserver 1.37 does; served false answers 404 to both.
func fakeSVMServer(t *testing.T, served bool, items ...map[string]any) *rest.Config {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body any
		switch {
		case !served:
			http.NotFound(w, r)
			return
		case r.URL.Path == "/apis/storagemigration.k8s.io/v1":
			body = map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "storagemigration.k8s.io/v1",
				"resources": []any{map[string]any{"name": "storageversionmigrations", "namespaced": false, "kind": "StorageVersionMigration", "verbs": []string{"get", "list", "create", "delete"}}}}
		case r.URL.Path == "/apis/storagemigration.k8s.io/v1/storageversionmigrations":
			body = map[string]any{"kind": "StorageVersionMigrationList", "apiVersion": "storagemigration.k8s.io/v1", "metadata": map[string]any{}, "items": items}
		default:
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	return &rest.Config{Host: srv.URL}
}

func svmObject(name, group, resource, created string, labels map[string]any, condType string) map[string]any {
	status := map[string]any{}
	if condType != "" {
		status["conditions"] = []any{map[string]any{"type": condType, "status": "True", "lastTransitionTime": created, "reason": "r", "message": ""}}
	}
	return map[string]any{"apiVersion": "storagemigration.k8s.io/v1", "kind": "StorageVersionMigration",
		"metadata": map[string]any{"name": name, "creationTimestamp": created, "labels": labels},
		"spec":     map[string]any{"resource": map[string]any{"group": group, "resource": resource}}, "status": status}
}

func TestSVMSection(t *testing.T) {
	rep := scan.Report{Resources: []scan.ResourceReport{
		{Resource: "secrets", Groups: []scan.Group{kmsGroup("transit/kubernetes", 1, 3), kmsGroup("transit/kubernetes", 2, 10)}},
		{Resource: "deployments.apps", Groups: []scan.Group{kmsGroup("transit/kubernetes", 2, 1)}},
	}}
	key := &rotation.KeyState{Name: "transit/kubernetes", Latest: 2}
	rotated := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

	t.Run("served => the scanned resources' migrations, anyone's, the newest Succeeded one with stale objects warned", func(t *testing.T) {
		cfg := fakeSVMServer(t, true,
			svmObject("kmsctl-secrets-v2-abcde", "", "secrets", "2026-11-23T10:00:00Z", map[string]any{"app.kubernetes.io/managed-by": "kmsctl"}, "Succeeded"),
			svmObject("theirs", "apps", "deployments", "2026-11-23T08:00:00Z", nil, "Running"),
			svmObject("configmaps", "", "configmaps", "2026-11-23T08:00:00Z", nil, "Succeeded"))
		got := svmSection(context.Background(), cfg, rep, key, rotated)
		want := &SVMSection{Server: cfg.Host, Served: true, Migrations: []SVMStatus{
			{Name: "kmsctl-secrets-v2-abcde", Resource: "secrets", State: svm.StateSucceeded, Created: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), ManagedByKmsctl: true,
				Warning: "Succeeded, yet 3 objects remain under older versions: it ran before every API server had the new key_id; run kmsctl migrate"},
			{Name: "theirs", Resource: "deployments.apps", State: svm.StateRunning, Created: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)},
		}}
		if got.Server != want.Server || got.Served != want.Served || got.Error != "" || !slices.EqualFunc(got.Migrations, want.Migrations, func(a, b SVMStatus) bool {
			return a.Name == b.Name && a.Resource == b.Resource && a.State == b.State && a.Created.Equal(b.Created) && a.ManagedByKmsctl == b.ManagedByKmsctl && a.Warning == b.Warning
		}) {
			t.Errorf("svmSection =\n%+v\nwant\n%+v", got, want)
		}
	})
	t.Run("not served => served false, no migrations, no error", func(t *testing.T) {
		cfg := fakeSVMServer(t, false)
		got := svmSection(context.Background(), cfg, rep, key, rotated)
		if got.Served || got.Error != "" || got.Migrations == nil || len(got.Migrations) != 0 {
			t.Errorf("svmSection = %+v", got)
		}
		b, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"server":"` + cfg.Host + `","served":false,"migrations":[]}`; string(b) != want {
			t.Errorf("json %s, want %s", b, want)
		}
	})
}
