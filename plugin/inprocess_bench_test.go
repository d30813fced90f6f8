package plugin

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"

	"github.com/vaultkms/vault-kms-plugin/plugin/server"
)

// In-process costs of the hot paths (go test -bench). The load benchmark in
// bench_test.go measures them end to end against a real Vault.

func BenchmarkStatusInMemory(b *testing.B) {
	p, _ := newTestPluginB(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Status(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatusOverSocket is Status as the API server sees it: its own
// KMSv2 gRPC client, our server, a unix socket. It reports p50 and p99.
func BenchmarkStatusOverSocket(b *testing.B) {
	p, _ := newTestPluginB(b)
	sock, err := server.Listen(filepath.Join(b.TempDir(), "kms.sock"), -1)
	if err != nil {
		b.Fatal(err)
	}
	srv := server.New(sock, p, nil)
	go func() { _ = srv.Serve() }()
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client, err := kmsv2.NewGRPCService(ctx, "unix://"+sock.Path, "bench", 3*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 100; i++ { // warm the connection
		_, _ = client.Status(ctx)
	}
	lat := make([]time.Duration, 0, 1<<16)
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if _, err := client.Status(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkParseCiphertext(b *testing.B) {
	ct := []byte("vault:v12:" + sealed(60))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseCiphertext(ct); err != nil {
			b.Fatal(err)
		}
	}
}

func newTestPluginB(b *testing.B) (*Plugin, *fakeTransit) {
	ft := &fakeTransit{version: 1}
	p := New(ft, Config{Mount: "transit", Key: "k", RefreshInterval: time.Second})
	if err := p.Refresh(context.Background()); err != nil {
		b.Fatal(err)
	}
	return p, ft
}
