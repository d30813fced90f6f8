package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// TestRotate: kmsctl rotate rotates the transit key, waits until both API
// servers report the plugin's key_id of the new version, then migrates
// (--engine=direct) every Secret to it, proves it with its own etcd scan,
// and every Secret still reads back its value through either API server.
// Then, with kube-controller-manager running, a second rotation with
// --engine=auto picks StorageVersionMigration and does the same; and a
// StorageVersionMigration started by hand right after a rotation reports
// Succeeded with every Secret left under the old version, which kmsctl
// status shows and kmsctl rotate --observe-only repairs.
func TestRotate(t *testing.T) {
	t.Parallel()
	c := cluster.Start(t, cluster.Options{APIServers: 2, ControllerManager: true})
	a, b := c.APIServers[0], c.APIServers[1]

	const n = 300
	secrets := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				name := fmt.Sprintf("migrate-%03d", i)
				value := secretValue(name)
				if err := tryCreateSecret(context.Background(), c.APIServers[i%2], name, value); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				secrets[name] = value
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := a.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stdout, stderr, err := cluster.KmsctlEnv(t, []string{"VAULT_TOKEN=" + c.Vault.RootToken}, "rotate",
		"--vault-address", c.Vault.Addr, "--vault-key-path", c.TransitMount+"/keys/"+c.TransitKey,
		"--apiservers", a.URL+","+b.URL, "--poll-interval", "2s", "--engine", "direct",
		"--kubeconfig", kubeconfig, "--etcd-endpoints", c.Etcd.Endpoint, "--resources", "secrets", "-o", "json")
	t.Logf("kmsctl rotate (%.0fs) stderr:\n%s", time.Since(start).Seconds(), stderr)
	if err != nil {
		t.Fatalf("kmsctl rotate: %v\nstdout:\n%s", err, stdout)
	}
	version := 2
	if !strings.Contains(stderr, "rotated transit/keys/kubernetes: v1 -> v2") || !strings.Contains(stderr, "every API server reports v2") {
		t.Errorf("kmsctl rotate did not say it rotated to v2 and waited for every API server")
	}
	// What rotate waited for is true: both API servers have the plugin's
	// key_id of v2.
	for _, api := range c.APIServers {
		keyID := statusKeyID(t, api.Plugin.KMS(t.Context()))
		if !strings.Contains(keyID, ":v2:") {
			t.Fatalf("%s's plugin reports key_id %q after rotate, want v2", api.Name, keyID)
		}
		if seen, err := api.HasSeenKeyID(t.Context(), keyID); err != nil || !seen {
			t.Errorf("%s has not seen key_id %s although rotate said so (%v)", api.Name, keyID, err)
		}
	}
	var rep migrateReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("kmsctl rotate -o json: %v\n%s", err, stdout)
	}
	t.Logf("kmsctl rotate, migrating --engine=direct: %d of %d stale Secrets rewritten in %.1fs at %.0f objects/s", rep.Result.Rewritten, rep.Result.Total, rep.Result.Seconds, rep.Result.PerSecond)
	directPerSecond := rep.Result.PerSecond
	if len(rep.Before) != 1 || rep.Before[0].Stale < n || rep.Result.Rewritten+rep.Result.Conflicts+rep.Result.NotFound != rep.Result.Total ||
		len(rep.Result.Failed) != 0 || rep.RemainingCount != 0 || rep.After[0].Stale != 0 {
		t.Errorf("migrate report: %s", stdout)
	}

	// Our own scan agrees: no Secret under an older transit version.
	r, err := scan.Scan(context.Background(), scan.NewEtcdReader(c.Etcd.Client), []string{"secrets"}, scan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range r.Resources[0].Groups {
		if g.Class != scan.ClassKMSv2 || g.TransitVersion != version {
			t.Errorf("after migrate, %d secrets stored as %s transit version %d (want kms-v2 v%d): %v", g.Count, g.Class, g.TransitVersion, version, g.Objects)
		}
	}
	assertReads(t, a, secrets)
	assertReads(t, b, secrets)

	// kmsctl status: v1 is safe to retire, both API servers on v2.
	kmsctlEnv := []string{"VAULT_TOKEN=" + c.Vault.RootToken}
	kmsctlArgs := func(cmd string, args ...string) []string {
		return append([]string{cmd,
			"--vault-address", c.Vault.Addr, "--vault-key-path", c.TransitMount + "/keys/" + c.TransitKey,
			"--etcd-endpoints", c.Etcd.Endpoint, "--resources", "secrets"}, args...)
	}
	kmsctl := func(cmd string, args ...string) (string, string, error) {
		return cluster.KmsctlEnv(t, kmsctlEnv, kmsctlArgs(cmd, args...)...)
	}
	status := func() statusReport {
		t.Helper()
		stdout, stderr, err := kmsctl("status", "--apiservers", a.URL+","+b.URL, "--kubeconfig", kubeconfig, "-o", "json")
		if err != nil {
			t.Fatalf("kmsctl status: %v\n%s%s", err, stdout, stderr)
		}
		var st statusReport
		if err := json.Unmarshal([]byte(stdout), &st); err != nil {
			t.Fatalf("kmsctl status -o json: %v\n%s", err, stdout)
		}
		return st
	}
	st := status()
	if v := st.verdicts(); v != "v1:safe-to-retire v2:current" {
		t.Errorf("kmsctl status verdicts after rotate: %s, want v1 safe to retire and v2 current", v)
	}
	for _, api := range st.APIServers {
		if api.KeyVersion != version || api.ConfigHash == "" || api.Error != "" {
			t.Errorf("kmsctl status says %s is on v%d (config %q, error %q), want v%d", api.URL, api.KeyVersion, api.ConfigHash, api.Error, version)
		}
	}

	// kmsctl retire raises min_decryption_version to 2, and after a restart
	// (no DEK cache) both API servers still read every Secret.
	stdout, stderr, err = kmsctl("retire")
	if err != nil {
		t.Fatalf("kmsctl retire: %v\n%s%s", err, stdout, stderr)
	}
	t.Logf("kmsctl retire:\n%s", stdout)
	if v := status().verdicts(); v != "v1:retired v2:current" {
		t.Errorf("kmsctl status verdicts after retire: %s, want v1 retired", v)
	}
	for _, api := range c.APIServers {
		api.Restart()
		api.WaitReady(2 * time.Minute)
		assertReads(t, api, secrets)
	}

	// Second rotation, v2 -> v3, --engine=auto: the API server serves
	// storagemigration.k8s.io/v1, so kmsctl has StorageVersionMigrations
	// do the writes, run by the real kube-controller-manager.
	rotateArgs := func(args ...string) []string {
		return kmsctlArgs("rotate", append([]string{"--apiservers", a.URL + "," + b.URL, "--poll-interval", "2s",
			"--kubeconfig", kubeconfig, "-o", "json"}, args...)...)
	}
	rotate := func(args ...string) migrateReport {
		t.Helper()
		start := time.Now()
		stdout, stderr, err := cluster.KmsctlEnv(t, kmsctlEnv, rotateArgs(args...)...)
		t.Logf("kmsctl rotate %s (%.0fs) stderr:\n%s", strings.Join(args, " "), time.Since(start).Seconds(), stderr)
		if err != nil {
			t.Fatalf("kmsctl rotate: %v\nstdout:\n%s", err, stdout)
		}
		if !strings.Contains(stderr, "--engine=auto: "+a.URL+" serves storagemigration.k8s.io/v1: using svm") {
			t.Errorf("kmsctl rotate --engine=auto did not say it chose svm")
		}
		var rep migrateReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("kmsctl rotate -o json: %v\n%s", err, stdout)
		}
		if rep.Engine != "svm" || rep.SVM == nil || len(rep.SVM.Migrations) == 0 || rep.RemainingCount != 0 ||
			len(rep.After) != 1 || rep.After[0].Stale != 0 || rep.Result.Rewritten != rep.Result.Total {
			t.Errorf("migrate report: %s", stdout)
		}
		for _, m := range rep.SVM.Migrations {
			if m.State != "Succeeded" {
				t.Errorf("StorageVersionMigration %s: %s %s", m.Name, m.State, m.Message)
			}
		}
		// Once the scan proved the Secrets migrated, kmsctl deleted its
		// finished migrations.
		if left := kmsctlSVM(t, a); left != "" {
			t.Errorf("kmsctl left its StorageVersionMigration %s behind", left)
		}
		return rep
	}
	assertVersion := func(version int) {
		t.Helper()
		r, err := scan.Scan(context.Background(), scan.NewEtcdReader(c.Etcd.Client), []string{"secrets"}, scan.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range r.Resources[0].Groups {
			if g.Class != scan.ClassKMSv2 || g.TransitVersion != version {
				t.Errorf("%d secrets stored as %s transit version %d (want kms-v2 v%d): %v", g.Count, g.Class, g.TransitVersion, version, g.Objects)
			}
		}
	}
	rep = rotate("--engine", "auto")
	t.Logf("kmsctl rotate v2 -> v3, --engine=auto chose svm: %d of %d stale Secrets migrated by %d StorageVersionMigration(s) in %.1fs, %.0f objects/s, the first after %.0fs (direct: %.0f objects/s)",
		rep.Result.Rewritten, rep.Result.Total, len(rep.SVM.Migrations), rep.Result.Seconds, rep.Result.PerSecond, rep.SVM.FirstMigratedSeconds, directPerSecond)
	if rep.Before[0].Stale < n {
		t.Errorf("svm: %d stale Secrets before, want at least %d", rep.Before[0].Stale, n)
	}
	assertVersion(3)
	assertReads(t, a, secrets)
	assertReads(t, b, secrets)

	// StorageVersionMigration too early: rotate in Vault and start a
	// migration at once, before the API servers poll the plugin's Status
	// (about once a minute). It reports Succeeded, yet the API server found
	// nothing stale under the key_id it still had and wrote nothing.
	if v := c.Vault.RotateKey(c.TransitMount, c.TransitKey); v != 4 {
		t.Fatalf("rotated to v%d, want v4", v)
	}
	start = time.Now()
	name := createSVM(t, a, "secrets")
	// The controller migrates only once the garbage collector's cache of
	// Secrets has reached the resourceVersion it recorded for the
	// migration; on a quiet resource that waits for the next watch
	// bookmark, up to a minute, long enough for the API servers to catch
	// up. A write to a Secret, as a busy cluster has, moves the cache on.
	if !waitFor(30*time.Second, func() bool { return svmResourceVersion(t, a, name) != "" }) {
		t.Fatalf("StorageVersionMigration %s got no status.resourceVersion within 30s", name)
	}
	nudge := "migrate-nudge"
	secrets[nudge] = secretValue(nudge)
	if err := tryCreateSecret(t.Context(), a, nudge, secrets[nudge]); err != nil {
		t.Fatal(err)
	}
	if !waitFor(2*time.Minute, func() bool { return svmSucceeded(t, a, name) }) {
		t.Fatalf("StorageVersionMigration %s did not succeed within 2m", name)
	}
	tooEarly := time.Since(start)
	// Whether API server a, which kube-controller-manager talks to, had
	// the v4 key_id by then: only if not did the migration run too early.
	var keyID4 string
	waitFor(30*time.Second, func() bool {
		keyID4 = statusKeyID(t, a.Plugin.KMS(t.Context()))
		return strings.Contains(keyID4, ":v4:")
	})
	seen, err := a.HasSeenKeyID(t.Context(), keyID4)
	if err != nil {
		t.Fatal(err)
	}
	st = status()
	t.Logf("StorageVersionMigration %s created right after the rotation to v4: Succeeded in %.1fs; %s had seen the v4 key_id: %v; kmsctl status verdicts: %s", name, tooEarly.Seconds(), a.Name, seen, st.verdicts())
	if seen {
		t.Logf("%s polled its plugin's Status before the migration ran: the too-early case did not happen this time; kmsctl rotate --observe-only runs all the same", a.Name)
	} else {
		if v := st.verdict(3); v != "needed" {
			t.Errorf("after a StorageVersionMigration Succeeded too early, kmsctl status says v3 is %q, want needed (verdicts %s)", v, st.verdicts())
		}
		if objs := st.objects(3); objs < n {
			t.Errorf("after a StorageVersionMigration Succeeded too early, kmsctl status counts %d objects under v3, want at least %d", objs, n)
		}
	}

	// kmsctl rotate --observe-only waits for the v4 key_id everywhere, then
	// finishes the job with its own StorageVersionMigration. The first one
	// is killed (-9) as soon as its migration exists; run again, it follows
	// that migration instead of starting a second.
	killedRun := cluster.KmsctlCommand(t, kmsctlEnv, rotateArgs("--observe-only")...)
	var killedOut strings.Builder
	killedRun.Stdout, killedRun.Stderr = &killedOut, &killedOut
	if err := killedRun.Start(); err != nil {
		t.Fatalf("start kmsctl rotate --observe-only: %v", err)
	}
	var killed string
	found := waitFor(3*time.Minute, func() bool { killed = kmsctlSVM(t, a); return killed != "" })
	_ = killedRun.Process.Kill()
	_ = killedRun.Wait()
	t.Logf("kmsctl rotate --observe-only, killed with SIGKILL once its StorageVersionMigration %q existed; its output:\n%s", killed, killedOut.String())
	if !found {
		t.Fatalf("kmsctl rotate --observe-only created no StorageVersionMigration within 3m")
	}
	// On a quiet resource the controller waits up to a minute before its
	// first write: the migration is still running when the rerun starts,
	// unless it has already finished (then a new one is right).
	stillRunning := !svmSucceeded(t, a, killed)
	rep = rotate("--observe-only")
	if stillRunning && rep.SVM.Migrations[0].Name != killed {
		t.Errorf("rerun after kill -9 followed %v, want the killed run's %s first (no duplicate)", rep.SVM.Migrations, killed)
	}
	t.Logf("kmsctl rotate --observe-only to v4, svm: %d of %d stale Secrets migrated by %d StorageVersionMigration(s) in %.1fs, %.0f objects/s, the first after %.0fs",
		rep.Result.Rewritten, rep.Result.Total, len(rep.SVM.Migrations), rep.Result.Seconds, rep.Result.PerSecond, rep.SVM.FirstMigratedSeconds)
	if !seen && rep.Result.Total < n {
		t.Errorf("rotate --observe-only after the too-early migration found %d stale Secrets, want at least %d", rep.Result.Total, n)
	}
	assertVersion(4)
	assertReads(t, a, secrets)
	assertReads(t, b, secrets)
	if v := status().verdict(3); v != "safe-to-retire" {
		t.Errorf("after rotate --observe-only, kmsctl status says v3 is %q, want safe-to-retire", v)
	}
}

// migrateReport is the part of `kmsctl migrate -o json` (and rotate's) the
// e2e checks.
type migrateReport struct {
	Engine string
	Before []struct{ Total, Stale int }
	After  []struct{ Total, Stale int }
	Result struct {
		Total, Rewritten, Conflicts, NotFound int
		Failed                                []any
		Seconds                               float64
		PerSecond                             float64 `json:"objectsPerSecond"`
	}
	RemainingCount int
	SVM            *struct {
		Migrations           []struct{ Name, State, Message string }
		FirstMigratedSeconds float64
	}
}

var svmResource = schema.GroupVersionResource{Group: "storagemigration.k8s.io", Version: "v1", Resource: "storageversionmigrations"}

// createSVM creates a StorageVersionMigration of resource (core group) as
// an operator would by hand, and returns its name.
func createSVM(t *testing.T, a *cluster.APIServer, resource string) string {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "storagemigration.k8s.io/v1",
		"kind":       "StorageVersionMigration",
		"metadata":   map[string]any{"generateName": "by-hand-" + resource + "-"},
		"spec":       map[string]any{"resource": map[string]any{"group": "", "resource": resource}},
	}}
	got, err := dynamic.NewForConfigOrDie(a.Config).Resource(svmResource).Create(t.Context(), u, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create StorageVersionMigration: %v", err)
	}
	return got.GetName()
}

// kmsctlSVM is the name of a StorageVersionMigration kmsctl created
// (labelled app.kubernetes.io/managed-by=kmsctl), "" if there is none.
func kmsctlSVM(t *testing.T, a *cluster.APIServer) string {
	t.Helper()
	list, err := dynamic.NewForConfigOrDie(a.Config).Resource(svmResource).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=kmsctl"})
	if err != nil {
		t.Fatalf("list StorageVersionMigrations: %v", err)
	}
	if len(list.Items) == 0 {
		return ""
	}
	return list.Items[0].GetName()
}

// svmResourceVersion is the StorageVersionMigration's
// status.resourceVersion, which its controller records before migrating.
func svmResourceVersion(t *testing.T, a *cluster.APIServer, name string) string {
	t.Helper()
	u, err := dynamic.NewForConfigOrDie(a.Config).Resource(svmResource).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get StorageVersionMigration %s: %v", name, err)
	}
	rv, _, _ := unstructured.NestedString(u.Object, "status", "resourceVersion")
	return rv
}

// svmSucceeded reports whether the StorageVersionMigration's Succeeded
// condition is true; a Failed one fails the test.
func svmSucceeded(t *testing.T, a *cluster.APIServer, name string) bool {
	t.Helper()
	u, err := dynamic.NewForConfigOrDie(a.Config).Resource(svmResource).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get StorageVersionMigration %s: %v", name, err)
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		switch {
		case m["type"] == "Failed" && m["status"] == "True":
			t.Fatalf("StorageVersionMigration %s failed: %v", name, m["message"])
		case m["type"] == "Succeeded" && m["status"] == "True":
			return true
		}
	}
	return false
}

// statusReport is the part of `kmsctl status -o json` the e2e checks.
type statusReport struct {
	TransitKey *struct {
		Versions []struct {
			Version int
			Objects int
			Verdict string
		}
	}
	APIServers []struct {
		URL        string
		KeyVersion int
		ConfigHash string
		Error      string
	}
}

// verdict is version's verdict, "" if status does not list it.
func (s statusReport) verdict(version int) string {
	if s.TransitKey != nil {
		for _, v := range s.TransitKey.Versions {
			if v.Version == version {
				return v.Verdict
			}
		}
	}
	return ""
}

// objects counts the objects status found under version.
func (s statusReport) objects(version int) int {
	if s.TransitKey != nil {
		for _, v := range s.TransitKey.Versions {
			if v.Version == version {
				return v.Objects
			}
		}
	}
	return 0
}

// verdicts is "v1:<verdict> v2:<verdict> ...".
func (s statusReport) verdicts() string {
	if s.TransitKey == nil {
		return "no transit key section"
	}
	var out []string
	for _, v := range s.TransitKey.Versions {
		out = append(out, fmt.Sprintf("v%d:%s", v.Version, v.Verdict))
	}
	return strings.Join(out, " ")
}
