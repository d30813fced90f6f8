//go:build integration

package scan

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan/etcdtest"
)

// putAll writes kvs in transactions of 128 puts, etcd's default
// --max-txn-ops.
func putAll(tb testing.TB, c *clientv3.Client, kvs []KV) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := 0; i < len(kvs); i += 128 {
		var ops []clientv3.Op
		for _, kv := range kvs[i:min(i+128, len(kvs))] {
			ops = append(ops, clientv3.OpPut(string(kv.Key), string(kv.Value)))
		}
		if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
			tb.Fatalf("write %d keys to etcd: %v", len(ops), err)
		}
	}
}

// fixture is a generated set of stored objects and what a scan must say.
type fixture struct {
	kvs []KV
	// names per resource and group (by transit version for kms-v2, else by
	// class), in key order.
	names map[string]map[string][]string
}

func (f *fixture) add(resource, prefix, name, group string, value []byte) {
	f.kvs = append(f.kvs, KV{Key: []byte(prefix + name), Value: value})
	if f.names[resource] == nil {
		f.names[resource] = map[string][]string{}
	}
	f.names[resource][group] = append(f.names[resource][group], name)
}

// newFixture generates, per resource, objects under transit versions 1, 2
// and 3 of this plugin's key plus identity, aescbc and malformed ones.
func newFixture(perResource int) *fixture {
	f := &fixture{names: map[string]map[string][]string{}}
	resources := []struct{ resource, prefix string }{
		{"secrets", "/registry/secrets/"},
		{"configmaps", "/registry/configmaps/"},
		{"deployments.apps", "/registry/deployments/"},
		{"widgets.example.com", "/registry/example.com/widgets/"},
	}
	for _, r := range resources {
		for i := range perResource {
			name := fmt.Sprintf("ns-%02d/obj-%06d", i%7, i)
			switch {
			case i%10 < 5:
				f.add(r.resource, r.prefix, name, "v3", kmsv2Value(testProvider, keyID(3), dekSource(3)))
			case i%10 < 8:
				f.add(r.resource, r.prefix, name, "v2", kmsv2Value(testProvider, keyID(2), dekSource(2)))
			case i%100 == 8:
				f.add(r.resource, r.prefix, name, "v1", kmsv2Value(testProvider, keyID(1), dekSource(1)))
			case i%10 == 8:
				f.add(r.resource, r.prefix, name, "identity", []byte("k8s\x00\n\x0c\n\x02v1\x12\x06Secret"))
			case i%100 == 99:
				f.add(r.resource, r.prefix, name, "malformed", []byte("k8s:enc:kms:v2:"+testProvider+":\xff\xfe"))
			default:
				f.add(r.resource, r.prefix, name, "aescbc", []byte("k8s:enc:aescbc:v1:key1:0123456789abcdef0123456789abcdef"))
			}
		}
	}
	for _, byGroup := range f.names {
		for _, names := range byGroup {
			slices.Sort(names)
		}
	}
	return f
}

func TestScanRealEtcd(t *testing.T) {
	e := etcdtest.Start(t)
	f := newFixture(1500) // 6,000 objects
	putAll(t, e.Client, f.kvs)
	// A key beside the prefixes that must not be counted.
	putAll(t, e.Client, []KV{{Key: []byte("/registry/secretsx/a/b"), Value: []byte("x")}})

	const nameLimit = 5
	rep, err := Scan(context.Background(), NewEtcdReader(e.Client), []string{"secrets", "configmaps", "deployments.apps", "widgets.example.com"},
		Options{PageSize: 100, NameLimit: nameLimit})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Revision == 0 {
		t.Error("revision not recorded")
	}
	for _, rr := range rep.Resources {
		t.Run(rr.Resource+" => every object counted in its group, first names listed", func(t *testing.T) {
			want := f.names[rr.Resource]
			got := map[string]Group{}
			for _, g := range rr.Groups {
				key := string(g.Class)
				if g.Class == ClassKMSv2 {
					key = fmt.Sprintf("v%d", g.TransitVersion)
					if g.KeyID != keyID(g.TransitVersion) || g.Provider != testProvider || g.TransitKey != "transit/kubernetes" {
						t.Errorf("group %+v", g)
					}
				}
				got[key] = g
			}
			if len(got) != len(want) {
				t.Errorf("groups %v, want %d groups", slices.Sorted(maps.Keys(got)), len(want))
			}
			total := 0
			for key, names := range want {
				total += len(names)
				g := got[key]
				if g.Count != len(names) || !reflect.DeepEqual(g.Objects, names[:min(nameLimit, len(names))]) {
					t.Errorf("%s: count %d, objects %q; want %d, %q", key, g.Count, g.Objects, len(names), names[:min(nameLimit, len(names))])
				}
			}
			kms := len(want["v1"]) + len(want["v2"]) + len(want["v3"])
			if rr.Total != total || rr.KMSv2 != kms || rr.Unencrypted != len(want["identity"]) ||
				rr.OtherProviders != len(want["aescbc"]) || rr.Malformed != len(want["malformed"]) {
				t.Errorf("totals %d/%d/%d/%d/%d, want %d/%d/%d/%d/%d", rr.Total, rr.KMSv2, rr.Unencrypted, rr.OtherProviders, rr.Malformed,
					total, kms, len(want["identity"]), len(want["aescbc"]), len(want["malformed"]))
			}
		})
	}
	// The fixture itself must exercise every group, or the checks above
	// would pass on an empty scan.
	if n := len(f.names["secrets"]); n != 6 {
		t.Fatalf("fixture has %d groups for secrets, want 6", n)
	}

	t.Run("a write after a scan => counted by the next scan, at a later revision", func(t *testing.T) {
		putAll(t, e.Client, []KV{{Key: []byte("/registry/secrets/zz/late"), Value: []byte("k8s\x00late")}})
		again, err := Scan(context.Background(), NewEtcdReader(e.Client), []string{"secrets"}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if again.Revision <= rep.Revision || again.Resources[0].Total != rep.Resources[0].Total+1 {
			t.Errorf("rescan at %d counted %d, first scan at %d counted %d", again.Revision, again.Resources[0].Total, rep.Revision, rep.Resources[0].Total)
		}
	})
}

// BenchmarkScan scans 20,000 stored values (4 resources × 5,000) in a real
// etcd v3.7.0 and reports values/s; the goal is 50,000/s or more.
func BenchmarkScan(b *testing.B) {
	e := etcdtest.Start(b)
	f := newFixture(5000)
	putAll(b, e.Client, f.kvs)
	resources := []string{"secrets", "configmaps", "deployments.apps", "widgets.example.com"}
	reader := NewEtcdReader(e.Client)
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		rep, err := Scan(context.Background(), reader, resources, Options{})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, r := range rep.Resources {
			n += r.Total
		}
		if n != len(f.kvs) {
			b.Fatalf("scanned %d values, want %d", n, len(f.kvs))
		}
	}
	b.ReportMetric(float64(b.N*len(f.kvs))/time.Since(start).Seconds(), "values/s")
}
