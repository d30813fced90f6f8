package scan

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// memReader is a Reader over a map that records each request, so tests
// can check paging and the fixed revision.
type memReader struct {
	kvs   map[string][]byte
	rev   int64
	calls []string // "from|end|rev|limit"
	fail  error
}

func (m *memReader) Range(_ context.Context, from, end string, rev, limit int64) ([]KV, int64, bool, error) {
	m.calls = append(m.calls, fmt.Sprintf("%s|%s|%d|%d", from, end, rev, limit))
	if m.fail != nil {
		return nil, 0, false, m.fail
	}
	var keys []string
	for k := range m.kvs {
		if k >= from && k < end {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	more := int64(len(keys)) > limit
	if more {
		keys = keys[:limit]
	}
	out := make([]KV, len(keys))
	for i, k := range keys {
		out[i] = KV{Key: []byte(k), Value: m.kvs[k]}
	}
	if rev == 0 {
		rev = m.rev
	}
	return out, rev, more, nil
}

func TestScan(t *testing.T) {
	m := &memReader{rev: 42, kvs: map[string][]byte{
		"/registry/secrets/a/s1":    kmsv2Value(testProvider, keyID(1), dekSource(1)),
		"/registry/secrets/a/s2":    kmsv2Value(testProvider, keyID(2), dekSource(2)),
		"/registry/secrets/b/s3":    kmsv2Value(testProvider, keyID(2), dekSource(2)),
		"/registry/secrets/b/s4":    kmsv2Value(testProvider, keyID(2), dekSource(2)),
		"/registry/secrets/c/s5":    []byte("k8s\x00identity"),
		"/registry/secrets/c/s6":    []byte("k8s:enc:aescbc:v1:key1:xxxx"),
		"/registry/secrets/c/s7":    []byte("k8s:enc:kms:v2:" + testProvider + ":\xff"),
		"/registry/secretsx/d/s8":   []byte("not under secrets/"),
		"/registry/configmaps/a/c1": []byte("k8s\x00identity"),
		"/registry/minions/node-1":  kmsv2Value(testProvider, keyID(2), dekSource(2)),
	}}
	rep, err := Scan(context.Background(), m, []string{"secrets", "configmaps", "nodes"}, Options{PageSize: 2, NameLimit: 2})
	if err != nil {
		t.Fatal(err)
	}
	v2 := func(v, n int, objs ...string) Group {
		return Group{Class: ClassKMSv2, Provider: testProvider, KeyID: keyID(v), TransitKey: "transit/kubernetes", TransitVersion: v,
			DEKSourceType: "HKDF_SHA256_XNONCE_AES_GCM_SEED", Count: n, Objects: objs}
	}
	want := Report{EtcdPrefix: "/registry", Revision: 42, Resources: []ResourceReport{
		{Resource: "secrets", KeyPrefix: "/registry/secrets/", Total: 7, KMSv2: 4, OtherProviders: 1, Unencrypted: 1, Malformed: 1, Groups: []Group{
			v2(1, 1, "a/s1"),
			v2(2, 3, "a/s2", "b/s3"), // NameLimit 2 of 3
			{Class: ClassAESCBC, Provider: "key1", Count: 1, Objects: []string{"c/s6"}},
			{Class: ClassIdentity, Count: 1, Objects: []string{"c/s5"}},
			{Class: ClassMalformed, Provider: testProvider, Reason: ReasonUndecodable, Count: 1, Objects: []string{"c/s7"}},
		}},
		{Resource: "configmaps", KeyPrefix: "/registry/configmaps/", Total: 1, Unencrypted: 1, Groups: []Group{
			{Class: ClassIdentity, Count: 1, Objects: []string{"a/c1"}},
		}},
		{Resource: "nodes", KeyPrefix: "/registry/minions/", Total: 1, KMSv2: 1, Groups: []Group{v2(2, 1, "node-1")}},
	}}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("report:\n%+v\nwant:\n%+v", rep, want)
	}

	t.Run("pages of PageSize continue after the last key, all at the first page's revision", func(t *testing.T) {
		wantCalls := []string{
			"/registry/secrets/|/registry/secrets0|0|2",
			"/registry/secrets/a/s2\x00|/registry/secrets0|42|2",
			"/registry/secrets/b/s4\x00|/registry/secrets0|42|2",
			"/registry/secrets/c/s6\x00|/registry/secrets0|42|2",
			"/registry/configmaps/|/registry/configmaps0|42|2",
			"/registry/minions/|/registry/minions0|42|2",
		}
		if !slices.Equal(m.calls, wantCalls) {
			t.Errorf("requests:\n%q\nwant\n%q", m.calls, wantCalls)
		}
	})
}

func TestScanErrors(t *testing.T) {
	t.Run("wildcard resource => refused before any read", func(t *testing.T) {
		m := &memReader{}
		_, err := Scan(context.Background(), m, []string{"secrets", "*.apps"}, Options{})
		if err == nil || !strings.Contains(err.Error(), `"*.apps"`) {
			t.Fatalf("err = %v, want one naming *.apps", err)
		}
		if len(m.calls) != 0 {
			t.Errorf("read %q before refusing", m.calls)
		}
	})
	t.Run("no resources => error", func(t *testing.T) {
		if _, err := Scan(context.Background(), &memReader{}, nil, Options{}); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("read error => wrapped with the resource and key", func(t *testing.T) {
		boom := errors.New("boom")
		_, err := Scan(context.Background(), &memReader{fail: boom}, []string{"secrets"}, Options{})
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "scan secrets") || !strings.Contains(err.Error(), "/registry/secrets/") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestPrefixEnd(t *testing.T) {
	for in, want := range map[string]string{"/a/": "/a0", "a\xff": "b", "\xff\xff": "\x00"} {
		if got := prefixEnd(in); got != want {
			t.Errorf("prefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestScanVisit(t *testing.T) {
	m := &memReader{rev: 7, kvs: map[string][]byte{
		"/registry/secrets/a/s1":   kmsv2Value(testProvider, keyID(1), dekSource(1)),
		"/registry/secrets/b/s2":   kmsv2Value(testProvider, keyID(2), dekSource(2)),
		"/registry/secrets/b/s3":   []byte("k8s\x00identity"),
		"/registry/minions/node-1": kmsv2Value(testProvider, keyID(1), dekSource(1)),
	}}
	var got []string
	visit := func(resource, object string, s Stored) {
		got = append(got, fmt.Sprintf("%s %s %s v%d", resource, object, s.Class, s.TransitVersion))
	}
	// NameLimit negative: the report keeps no names, Visit still sees all.
	rep, err := Scan(context.Background(), m, []string{"secrets", "nodes"}, Options{PageSize: 2, NameLimit: -1, Visit: visit})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"secrets a/s1 kms-v2 v1",
		"secrets b/s2 kms-v2 v2",
		"secrets b/s3 identity v0",
		"nodes node-1 kms-v2 v1",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("visited\n%q\nwant\n%q", got, want)
	}
	if rep.Resources[0].Total != 3 || len(rep.Resources[0].Groups[0].Objects) != 0 {
		t.Errorf("report with Visit changed: %+v", rep.Resources[0])
	}
}
