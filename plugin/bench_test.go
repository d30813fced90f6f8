//go:build integration

package plugin_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc"
	kmsapi "k8s.io/kms/apis/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

// BenchmarkLoad is `make bench`: the plugin driven through the API server's
// own KMSv2 client beside the same decrypts sent straight to Vault transit
// one per call, against the same Vault in the same run. It runs once
// (-benchtime=1x) and prints a table; phases alternate so that noise on a
// shared machine hits both sides alike.
func BenchmarkLoad(b *testing.B) {
	phase := envDuration("BENCH_PHASE", 2*time.Second)
	idle := envDuration("BENCH_IDLE", 60*time.Second)
	r := newRig(b, rigOptions{refresh: 20 * time.Second})
	ctx := context.Background()

	// The direct client: a token with the plugin's own policy, one transit
	// call per decrypt, a connection pool as large as the concurrency.
	tok, err := r.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"kms-plugin"}, TTL: "2h"})
	if err != nil {
		b.Fatal(err)
	}
	cfg := api.DefaultConfig()
	cfg.Address = r.vault.Addr
	cfg.MaxRetries = 0
	direct, err := api.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	direct.SetToken(tok.Auth.ClientToken)

	// Distinct ciphertexts, as after an API server restart on a big cluster.
	const distinct = 4096
	cts := make([]string, distinct)
	keyID := r.status().KeyID
	for i := 0; i < distinct; i += 256 {
		var in []map[string]string
		for j := i; j < i+256; j++ {
			in = append(in, map[string]string{"plaintext": base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("dek-seed-%027d", j)))})
		}
		sec, err := r.vault.Client.Logical().Write(mount+"/encrypt/"+key, map[string]any{"batch_input": in})
		if err != nil {
			b.Fatal(err)
		}
		for j, res := range sec.Data["batch_results"].([]any) {
			cts[i+j] = res.(map[string]any)["ciphertext"].(string)
		}
	}

	viaPlugin := func(ctx context.Context, ct string) error {
		_, err := r.client.Decrypt(ctx, "bench", &kmsservice.DecryptRequest{Ciphertext: []byte(ct), KeyID: keyID})
		return err
	}
	viaVault := func(ctx context.Context, ct string) error {
		_, err := direct.Logical().WriteWithContext(ctx, mount+"/decrypt/"+key, map[string]any{"ciphertext": ct})
		return err
	}

	b.ResetTimer()
	// Status first, on the idle plugin, as the API server polls it, in
	// five windows so one burst of load from elsewhere on a shared machine
	// moves one window, not the figure. Each window is paired with one on
	// the floor: a KMS server that does nothing (k8s.io/kms's wrapper on a
	// default grpc-go server, one P), same client, same kind of socket.
	stubClient := startStub(b)
	var next atomic.Int64
	var st load
	var windowP50, stubP50 []time.Duration
	p50 := func(c kmsservice.Service) (load, time.Duration) {
		one := run(ctx, 1, phase/2, cts, &next, func(ctx context.Context, _ string) error {
			_, err := c.Status(ctx)
			return err
		})
		slices.Sort(one.lat)
		return one, one.lat[len(one.lat)/2]
	}
	for w := 0; w < 5; w++ {
		one, p := p50(r.client)
		st.add(one)
		windowP50 = append(windowP50, p)
		_, p = p50(stubClient)
		stubP50 = append(stubP50, p)
	}
	slices.Sort(windowP50)
	slices.Sort(stubP50)

	fmt.Printf("\nDecrypt of %d distinct DEK ciphertexts, Vault %s on this machine (%d cores), %s per phase, 2 phases each, alternating\n",
		distinct, r.vault.Addr, runtime.NumCPU(), phase)
	fmt.Printf("%-6s | %-34s | %-34s | %s\n", "conc", "plugin (API server's KMSv2 client)", "Vault transit direct, one per call", "ratio")
	fmt.Printf("%-6s | %10s %10s %10s  | %10s %10s %10s  | %s\n", "", "ops/s", "p50", "p99", "ops/s", "p50", "p99", "ops/s")
	var rssAt64 int64
	for _, c := range envInts("BENCH_CONC", []int{1, 8, 64, 256}) {
		var p, d load
		for round := 0; round < 2; round++ {
			var stopRSS func() int64
			if c == 64 {
				stopRSS = sampleRSS(r.plugin.cmd.Process.Pid)
			}
			p.add(run(ctx, c, phase, cts, &next, viaPlugin))
			if stopRSS != nil {
				rssAt64 = max(rssAt64, stopRSS())
			}
			d.add(run(ctx, c, phase, cts, &next, viaVault))
		}
		if p.errors+d.errors > 0 {
			b.Errorf("concurrency %d: %d plugin errors, %d direct errors", c, p.errors, d.errors)
		}
		fmt.Printf("%-6d | %10.0f %10s %10s  | %10.0f %10s %10s  | %.2fx\n", c,
			p.rate(), p.pct(50), p.pct(99), d.rate(), d.pct(50), d.pct(99), p.rate()/d.rate())
	}

	fmt.Printf("\nStatus through the KMSv2 client, plugin idle (as the API server polls it): %.0f ops/s, p50 %s (median of 5 windows; %s to %s), p99 %s\n",
		st.rate(), us(windowP50[2]), us(windowP50[0]), us(windowP50[4]), st.pct(99))
	fmt.Printf("Floor, a do-nothing KMS server on the same client and socket: Status p50 %s (%s to %s)\n",
		us(stubP50[2]), us(stubP50[0]), us(stubP50[4]))
	fmt.Printf("Plugin RSS: peak %.1f MiB during the concurrency-64 phases, %.1f MiB peak over the whole run (VmHWM)\n",
		float64(rssAt64)/(1<<20), float64(procStatus(r.plugin.cmd.Process.Pid, "VmHWM"))/(1<<20))

	if idle > 0 {
		idleCost(b, r, idle, tok.Auth.ClientToken)
	}
}

// idleCost counts, in Vault's audit log, the requests this plugin makes
// while it is only polled for Status, beside a plugin that answers each
// Status with an encrypt/decrypt round trip. Both are polled every 20s, as
// kube-apiserver does through its cached KMS health check.
func idleCost(b *testing.B, r *rig, window time.Duration, naiveToken string) {
	auditPath := filepath.Join(b.TempDir(), "audit.log")
	if err := r.vault.Client.Sys().EnableAuditWithOptions("file", &api.EnableAuditOptions{Type: "file", Options: map[string]string{"file_path": auditPath}}); err != nil {
		b.Fatal(err)
	}
	naiveSock := serveNaive(b, r, naiveToken)
	naive := connect(b, naiveSock)

	const poll = 20 * time.Second
	fmt.Printf("\nIdle: polling Status every %s for %s (plugin -status-refresh-interval=%s)...\n", poll, window, r.refresh)
	start := time.Now()
	for time.Since(start) < window {
		_, _ = r.client.Status(context.Background())
		_, _ = naive.Status(context.Background())
		time.Sleep(min(poll, window-time.Since(start)))
	}
	ours, naiveCount := countAudit(b, auditPath)
	perHour := func(n int) float64 { return float64(n) * float64(time.Hour) / float64(window) }
	fmt.Printf("Vault requests per hour, idle, from Vault's audit log: this plugin %.0f (%d in %s), round-trip-per-Status plugin %.0f (%d)\n",
		perHour(ours), ours, window, perHour(naiveCount), naiveCount)
}

// serveNaive serves a KMS plugin whose Status does an encrypt and a decrypt
// round trip through Vault, the common alternative design.
func serveNaive(b *testing.B, r *rig, token string) string {
	cfg := api.DefaultConfig()
	cfg.Address = r.vault.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	c.SetToken(token)
	sock := filepath.Join(b.TempDir(), "naive.sock")
	gs, ln, err := newKMSServer(sock, naivePlugin{c})
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	b.Cleanup(gs.Stop)
	return sock
}

// newKMSServer listens on sock and registers svc on a default grpc-go
// server through k8s.io/kms's wrapper: the plain server the bench compares
// against (a naive plugin, and the do-nothing floor).
func newKMSServer(sock string, svc kmsservice.Service) (*grpc.Server, net.Listener, error) {
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, nil, err
	}
	gs := grpc.NewServer()
	kmsapi.RegisterKeyManagementServiceServer(gs, kmsservice.NewGRPCService(sock, 0, svc))
	return gs, ln, nil
}

type naivePlugin struct{ c *api.Client }

func (n naivePlugin) Status(ctx context.Context) (*kmsservice.StatusResponse, error) {
	enc, err := n.c.Logical().WriteWithContext(ctx, mount+"/encrypt/"+key, map[string]any{"plaintext": base64.StdEncoding.EncodeToString([]byte("health"))})
	if err == nil {
		_, err = n.c.Logical().WriteWithContext(ctx, mount+"/decrypt/"+key, map[string]any{"ciphertext": enc.Data["ciphertext"]})
	}
	if err != nil {
		return &kmsservice.StatusResponse{Version: "v2", Healthz: err.Error(), KeyID: "naive"}, nil
	}
	return &kmsservice.StatusResponse{Version: "v2", Healthz: "ok", KeyID: "naive"}, nil
}

func (naivePlugin) Encrypt(context.Context, string, []byte) (*kmsservice.EncryptResponse, error) {
	return nil, fmt.Errorf("not used")
}

func (naivePlugin) Decrypt(context.Context, string, *kmsservice.DecryptRequest) ([]byte, error) {
	return nil, fmt.Errorf("not used")
}

// countAudit counts audit "request" entries by who made them: the plugin
// logs in with AppRole, the naive plugin uses a token.
func countAudit(b *testing.B, path string) (approle, token int) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `"type":"request"`) {
			continue
		}
		switch {
		case strings.Contains(line, `"display_name":"approle"`):
			approle++
		case strings.Contains(line, `"display_name":"token"`):
			token++
		}
	}
	return approle, token
}

// load is the outcome of one or more load phases.
type load struct {
	ops, errors int
	elapsed     time.Duration
	lat         []time.Duration
}

func (l *load) add(o load) {
	l.ops += o.ops
	l.errors += o.errors
	l.elapsed += o.elapsed
	l.lat = append(l.lat, o.lat...)
}

func (l *load) rate() float64 { return float64(l.ops) / l.elapsed.Seconds() }

func (l *load) pct(p int) string {
	if len(l.lat) == 0 {
		return "-"
	}
	slices.Sort(l.lat)
	d := l.lat[min(len(l.lat)-1, len(l.lat)*p/100)]
	if d < time.Millisecond {
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// run drives op from c goroutines for d, each op on the next ciphertext.
func run(ctx context.Context, c int, d time.Duration, cts []string, next *atomic.Int64, op func(context.Context, string) error) load {
	var mu sync.Mutex
	var out load
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for g := 0; g < c; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			errs := 0
			for time.Now().Before(deadline) {
				ct := cts[int(next.Add(1))%len(cts)]
				t0 := time.Now()
				if err := op(ctx, ct); err != nil {
					errs++
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			out.ops += len(lat)
			out.errors += errs
			out.lat = append(out.lat, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	return out
}

// sampleRSS samples the process's resident set every 50ms until stopped and
// returns the largest sample in bytes.
func sampleRSS(pid int) (stop func() int64) {
	var peak atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			peak.Store(max(peak.Load(), procStatus(pid, "VmRSS")))
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() int64 { close(done); <-finished; return peak.Load() }
}

// procStatus reads a "kB" field of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }

func envInts(name string, def []int) []int {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// stubSocketEnv makes the test binary serve a do-nothing KMS server on the
// named socket instead of running tests (see TestMain).
const stubSocketEnv = "VAULT_KMS_BENCH_STUB_SOCKET"

type stubService struct{}

func (stubService) Status(context.Context) (*kmsservice.StatusResponse, error) {
	return &kmsservice.StatusResponse{Version: "v2", Healthz: "ok", KeyID: "stub"}, nil
}

func (stubService) Encrypt(context.Context, string, []byte) (*kmsservice.EncryptResponse, error) {
	return nil, fmt.Errorf("not used")
}

func (stubService) Decrypt(context.Context, string, *kmsservice.DecryptRequest) ([]byte, error) {
	return nil, fmt.Errorf("not used")
}

func serveStub(sock string) {
	runtime.GOMAXPROCS(1) // as the plugin runs
	gs, ln, err := newKMSServer(sock, stubService{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = gs.Serve(ln)
}

// startStub runs this test binary as the stub server in its own process.
func startStub(b *testing.B) kmsservice.Service {
	sock := filepath.Join(b.TempDir(), "stub.sock")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), stubSocketEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return connect(b, sock)
}
