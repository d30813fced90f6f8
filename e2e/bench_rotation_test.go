package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// BenchmarkMigrationEngines is issue 13's `make bench` figure: on one
// cluster (1 API server, kube-controller-manager), in one run, the rate at
// which each way of migrating takes N Secrets (5,000, or
// $BENCH_MIGRATE_SECRETS) off the transit version they were written under,
// each after its own rotation and once the API server reports the new
// key_id: the ceiling (a bare client doing GET then PUT unchanged, no
// client-side limit, 8 and 32 in flight), kmsctl migrate --engine=direct
// (8 and 32 workers, --qps out of the way), --engine=svm, and
// `kubectl get secrets -o json | kubectl replace -f -`. Every contender
// must leave nothing under the older version (an etcd scan), or its figure
// does not count. Rates are objects per second of the rewrite itself; the
// kmsctl lines also give the wall-clock time with its two etcd scans.
func BenchmarkMigrationEngines(b *testing.B) {
	n := 5000
	if s := os.Getenv("BENCH_MIGRATE_SECRETS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("BENCH_MIGRATE_SECRETS=%q: want a positive number", s)
		}
	}
	kubectl := cluster.Kubectl(b)
	c := cluster.Start(b, cluster.Options{ControllerManager: true})
	a := c.APIServers[0]
	start := time.Now()
	fillObjects(b, c.APIServers, "bench", n, 0)
	b.Logf("wrote %d Secrets in %.0fs", n, time.Since(start).Seconds())
	kubeconfig := filepath.Join(b.TempDir(), "kubeconfig")
	if err := a.WriteKubeconfig(kubeconfig); err != nil {
		b.Fatal(err)
	}

	version := 1
	// rotated rotates the key and waits until the API server writes with
	// the new version.
	rotated := func() int {
		b.Helper()
		version = c.Vault.RotateKey(c.TransitMount, c.TransitKey)
		kms := a.Plugin.KMS(b.Context())
		ok := waitFor(5*time.Minute, func() bool {
			st, err := kms.Status(b.Context())
			if err != nil || !strings.Contains(st.KeyID, fmt.Sprintf(":v%d:", version)) {
				return false
			}
			_, _, _ = a.Readyz(b.Context())
			seen, err := a.HasSeenKeyID(b.Context(), st.KeyID)
			return err == nil && seen
		})
		if !ok {
			b.Fatalf("the API server does not report v%d within 5m of the rotation", version)
		}
		// The API server switches its DEK in the same poll that recorded
		// the key_id: give it a moment.
		time.Sleep(2 * time.Second)
		return version
	}
	// migrated fails the benchmark unless no Secret is left under a
	// version older than v.
	migrated := func(who string, v int) {
		b.Helper()
		r, err := scan.Scan(b.Context(), scan.NewEtcdReader(c.Etcd.Client), []string{"secrets"}, scan.Options{})
		if err != nil {
			b.Fatal(err)
		}
		for _, g := range r.Resources[0].Groups {
			if g.Class == scan.ClassKMSv2 && g.TransitVersion < v {
				b.Fatalf("%s left %d Secrets under transit v%d (current v%d): no valid figure", who, g.Count, g.TransitVersion, v)
			}
		}
	}

	type figure struct {
		name      string
		perSecond float64
		note      string
	}
	var figures []figure
	record := func(name string, perSecond float64, note string) {
		figures = append(figures, figure{name, perSecond, note})
		b.Logf("%s: %.0f objects/s %s", name, perSecond, note)
	}

	kmsctlMigrate := func(args ...string) migrateReport {
		b.Helper()
		start := time.Now()
		stdout, stderr, err := cluster.Kmsctl(b, append([]string{"migrate", "--transit-version", strconv.Itoa(version),
			"--etcd-endpoints", c.Etcd.Endpoint, "--resources", "secrets", "--kubeconfig", kubeconfig, "-o", "json"}, args...)...)
		if err != nil {
			b.Fatalf("kmsctl migrate %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
		}
		var rep migrateReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			b.Fatalf("kmsctl migrate -o json: %v\n%s", err, stdout)
		}
		rep.wall = time.Since(start)
		return rep
	}
	// The ceiling and the direct engine at 8 and 32 in flight, twice each,
	// the second round in the reverse order, so that a slow minute of this
	// shared machine does not land on one side only. Each figure is the
	// mean of its two runs.
	type contender struct {
		name string
		run  func() (perSecond float64, note string)
	}
	var pairs []contender
	for _, inFlight := range []int{8, 32} {
		pairs = append(pairs,
			contender{fmt.Sprintf("ceiling, %d in flight", inFlight), func() (float64, string) {
				count, d := bareRewrite(b, a, inFlight)
				return float64(count) / d.Seconds(), fmt.Sprintf("%d in %.1fs", count, d.Seconds())
			}},
			contender{fmt.Sprintf("kmsctl migrate --engine=direct, %d workers", inFlight), func() (float64, string) {
				rep := kmsctlMigrate("--engine", "direct", "--workers", strconv.Itoa(inFlight), "--qps", "100000")
				return rep.Result.PerSecond, fmt.Sprintf("%d in %.1fs, %.1fs with both etcd scans", rep.Result.Rewritten, rep.Result.Seconds, rep.wall.Seconds())
			}})
	}
	samples := map[string][]float64{}
	notes := map[string][]string{}
	for round := range 2 {
		order := slices.Clone(pairs)
		if round == 1 {
			slices.Reverse(order)
		}
		for _, ct := range order {
			v := rotated()
			perSecond, note := ct.run()
			migrated(ct.name, v)
			b.Logf("%s, round %d: %.0f objects/s (%s)", ct.name, round+1, perSecond, note)
			samples[ct.name] = append(samples[ct.name], perSecond)
			notes[ct.name] = append(notes[ct.name], fmt.Sprintf("%.0f", perSecond))
		}
	}
	for _, ct := range pairs {
		record(ct.name, (samples[ct.name][0]+samples[ct.name][1])/2, "(runs: "+strings.Join(notes[ct.name], ", ")+")")
	}
	{
		v := rotated()
		rep := kmsctlMigrate("--engine", "svm")
		migrated("kmsctl migrate --engine=svm", v)
		// The controller starts writing only once its garbage collector's
		// cache of the resource is current (up to a watch bookmark, a
		// minute, and its requeue backoff): give the rate after that too.
		started := ""
		if rest := rep.Result.Seconds - rep.SVM.FirstMigratedSeconds; rest > 0 && rep.SVM.FirstMigratedSeconds > 0 {
			started = fmt.Sprintf(", %.0f objects/s once the controller started writing after waiting %.0fs for its cache", float64(rep.Result.Rewritten)/rest, rep.SVM.FirstMigratedSeconds)
		}
		record("kmsctl migrate --engine=svm", rep.Result.PerSecond,
			fmt.Sprintf("(%d in %.1fs%s; %.1fs with the scans)", rep.Result.Rewritten, rep.Result.Seconds, started, rep.wall.Seconds()))
	}
	{
		v := rotated()
		count := len(listSecrets(b, a).Items)
		start := time.Now()
		cmd := exec.Command("bash", "-c", `set -o pipefail; "$KUBECTL" get secrets -A -o json | "$KUBECTL" replace -f - >/dev/null`)
		cmd.Env = append(os.Environ(), "KUBECTL="+kubectl, "KUBECONFIG="+kubeconfig)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("kubectl get | kubectl replace: %v\n%s", err, out)
		}
		d := time.Since(start)
		migrated("kubectl get | kubectl replace", v)
		record("kubectl get -o json | kubectl replace -f -", float64(count)/d.Seconds(), fmt.Sprintf("(%d in %.1fs)", count, d.Seconds()))
	}

	fmt.Printf("\nmigrating %d Secrets off the previous transit version, 1 kube-apiserver, objects/s:\n", n)
	for _, f := range figures {
		fmt.Printf("  %-45s %6.0f  %s\n", f.name, f.perSecond, f.note)
		b.ReportMetric(f.perSecond, strings.NewReplacer(" ", "-", ",", "", "=", "-", "|", "", "/", "").Replace(f.name)+"-obj/s")
	}
	get := func(prefix string) float64 {
		for _, f := range figures {
			if strings.HasPrefix(f.name, prefix) {
				return f.perSecond
			}
		}
		return 0
	}
	direct8, direct32 := get("kmsctl migrate --engine=direct, 8"), get("kmsctl migrate --engine=direct, 32")
	fmt.Printf("  direct / ceiling: %.3f at 8 in flight, %.3f at 32 (goal >= 0.85)\n", direct8/get("ceiling, 8"), direct32/get("ceiling, 32"))
	fmt.Printf("  direct (32 workers) / kubectl replace: %.2fx; / svm: %.2fx\n", direct32/get("kubectl"), direct32/get("kmsctl migrate --engine=svm"))
}

// bareRewrite is the ceiling: every Secret read with GET and
// written back unchanged with PUT, inFlight at a time, no client-side rate
// limit. A conflict (someone else wrote it) counts as done, as migrate's.
func bareRewrite(b *testing.B, a *cluster.APIServer, inFlight int) (int, time.Duration) {
	b.Helper()
	cfg := *a.Config
	cfg.QPS, cfg.Burst = -1, 0
	client := kubernetes.NewForConfigOrDie(&cfg)
	list := listSecrets(b, a)
	start := time.Now()
	work := make(chan corev1.Secret)
	var wg sync.WaitGroup
	errs := make(chan error, inFlight)
	for range inFlight {
		wg.Go(func() {
			for item := range work {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				secrets := client.CoreV1().Secrets(item.Namespace)
				s, err := secrets.Get(ctx, item.Name, metav1.GetOptions{})
				if err == nil {
					_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
				}
				cancel()
				if err != nil && !apierrors.IsConflict(err) {
					select {
					case errs <- fmt.Errorf("rewrite %s/%s: %w", item.Namespace, item.Name, err):
					default:
					}
				}
			}
		})
	}
	for _, s := range list.Items {
		work <- s
	}
	close(work)
	wg.Wait()
	d := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return len(list.Items), d
}

// listSecrets lists every Secret, all namespaces.
func listSecrets(b *testing.B, a *cluster.APIServer) *corev1.SecretList {
	b.Helper()
	list, err := a.Client.CoreV1().Secrets(metav1.NamespaceAll).List(b.Context(), metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return list
}
