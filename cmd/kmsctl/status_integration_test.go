//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	kmsv2api "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan/etcdtest"
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

// hasLine reports whether some line of out has exactly these fields.
func hasLine(out string, fields []string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(l), " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}
