package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// TestRotate is issue 13's rotation on the loopback cluster: three API
// servers and kube-controller-manager, 10,000 Secrets and 1,000 ConfigMaps
// (both encrypted), and a load of reads and writes through every API server
// during each rotation, which must see no failure.
//
//  1. kmsctl rotate --engine=direct, killed with SIGKILL half way through
//     its migration; rotate --observe-only finishes it. status shows
//     nothing under v1, retire raises min_decryption_version.
//  2. rotate --engine=auto picks StorageVersionMigration, run by the real
//     kube-controller-manager.
//  3. A StorageVersionMigration started by hand right after a rotation in
//     Vault, while the API server it goes through still has the old key_id,
//     reports Succeeded having migrated nothing; status warns and counts
//     what it left, rotate --observe-only (killed once, then rerun) repairs
//     it.
//  4. retire refuses while even one object is left under an old version:
//     one written by an API server whose plugin still reports the old key_id
//     (left out of rotate's --apiservers), then one old value restored into
//     etcd. Each time migrate repairs it and retire goes through; then every
//     API server restarts and every object reads back.
func TestRotate(t *testing.T) {
	t.Parallel()
	c := cluster.Start(t, cluster.Options{APIServers: 3, ControllerManager: true, Resources: []string{"secrets", "configmaps"}})
	a, b, lagging := c.APIServers[0], c.APIServers[1], c.APIServers[2]
	all := a.URL + "," + b.URL + "," + lagging.URL

	const nSecrets, nConfigMaps = 10000, 1000
	start := time.Now()
	objs := fillObjects(t, c.APIServers, "rotate", nSecrets, nConfigMaps)
	t.Logf("wrote %d Secrets and %d ConfigMaps through 3 API servers in %.0fs", nSecrets, nConfigMaps, time.Since(start).Seconds())

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := a.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	env := []string{"VAULT_TOKEN=" + c.Vault.RootToken}
	kmsctlArgs := func(cmd string, args ...string) []string {
		return append([]string{cmd,
			"--vault-address", c.Vault.Addr, "--vault-key-path", c.TransitMount + "/keys/" + c.TransitKey,
			"--etcd-endpoints", c.Etcd.Endpoint, "--resources", "secrets,configmaps"}, args...)
	}
	kmsctl := func(cmd string, args ...string) (string, string, error) {
		return cluster.KmsctlEnv(t, env, kmsctlArgs(cmd, args...)...)
	}
	// migrate takes no Vault flags: it scans etcd and writes through the
	// API server.
	migrate := func() (string, string, error) {
		return cluster.Kmsctl(t, "migrate", "--transit-version", "5", "--engine", "direct",
			"--etcd-endpoints", c.Etcd.Endpoint, "--resources", "secrets,configmaps", "--kubeconfig", kubeconfig, "-o", "json")
	}
	rotateArgs := func(apiservers string, args ...string) []string {
		return kmsctlArgs("rotate", append([]string{"--apiservers", apiservers, "--poll-interval", "2s",
			"--kubeconfig", kubeconfig, "-o", "json"}, args...)...)
	}
	rotate := func(apiservers string, args ...string) migrateReport {
		t.Helper()
		start := time.Now()
		stdout, stderr, err := cluster.KmsctlEnv(t, env, rotateArgs(apiservers, args...)...)
		t.Logf("kmsctl rotate %s (%.0fs) stderr:\n%s", strings.Join(args, " "), time.Since(start).Seconds(), stderr)
		if err != nil {
			t.Fatalf("kmsctl rotate: %v\nstdout:\n%s", err, stdout)
		}
		var rep migrateReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("kmsctl rotate -o json: %v\n%s", err, stdout)
		}
		if rep.RemainingCount != 0 || len(rep.After) != 2 || rep.After[0].Stale != 0 || rep.After[1].Stale != 0 || len(rep.Result.Failed) != 0 {
			t.Errorf("migrate report: %s", stdout)
		}
		return rep
	}
	status := func() statusReport {
		t.Helper()
		stdout, stderr, err := kmsctl("status", "--apiservers", all, "--kubeconfig", kubeconfig, "-o", "json",
			"--plugin-sockets", a.Plugin.Socket+","+b.Plugin.Socket+","+lagging.Plugin.Socket)
		if err != nil {
			t.Fatalf("kmsctl status: %v\n%s%s", err, stdout, stderr)
		}
		var st statusReport
		if err := json.Unmarshal([]byte(stdout), &st); err != nil {
			t.Fatalf("kmsctl status -o json: %v\n%s", err, stdout)
		}
		return st
	}
	// assertVersion: every Secret and ConfigMap in etcd is KMSv2 under
	// transit version.
	assertVersion := func(version int) {
		t.Helper()
		r, err := scan.Scan(context.Background(), scan.NewEtcdReader(c.Etcd.Client), []string{"secrets", "configmaps"}, scan.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, res := range r.Resources {
			for _, g := range res.Groups {
				if g.Class != scan.ClassKMSv2 || g.TransitVersion != version {
					t.Errorf("%d %s stored as %s transit version %d (want kms-v2 v%d): %v", g.Count, res.Resource, g.Class, g.TransitVersion, version, g.Objects)
				}
			}
		}
	}
	// underLoad runs f with a load of writes and reads through apis and
	// fails the test on any failed call.
	underLoad := func(what string, apis []*cluster.APIServer, f func()) {
		t.Helper()
		ld := startLoad("load-"+strings.ToLower(strings.ReplaceAll(what, " ", "-")), 200*time.Millisecond, apis, nil)
		from := time.Now()
		f()
		ld.Stop()
		t.Logf("load during %s (%.0fs):", what, time.Since(from).Seconds())
		if failures := ld.report(t, from, time.Now()); failures > 0 {
			t.Errorf("%d reads or writes failed during %s", failures, what)
		}
		objs = objs.add(ld.Written())
	}

	// 1. rotate --engine=direct, v1 -> v2, killed half way, then resumed.
	underLoad("rotation 1", c.APIServers, func() {
		total, at, out := killMidMigration(t, cluster.KmsctlCommand(t, env, rotateArgs(all, "--engine", "direct", "--qps", "150")...))
		t.Logf("kmsctl rotate --engine=direct killed with SIGKILL at %d of %d objects; its stderr:\n%s", at, total, out)
		if !strings.Contains(out, "rotated transit/keys/kubernetes: v1 -> v2") || !strings.Contains(out, "every API server reports v2") {
			t.Errorf("kmsctl rotate did not say it rotated to v2 and waited for every API server")
		}
		rep := rotate(all, "--observe-only", "--engine", "direct")
		stale := rep.Before[0].Stale + rep.Before[1].Stale
		t.Logf("rerun, kmsctl rotate --observe-only --engine=direct: %d stale objects left by the killed run, %d rewritten in %.1fs at %.0f objects/s in %d pass(es)",
			stale, rep.Result.Rewritten, rep.Result.Seconds, rep.Result.PerSecond, rep.Passes)
		// The load adds a few stale Secrets before every API server switches.
		if stale <= 0 || stale > total-at+500 {
			t.Errorf("the rerun found %d stale objects; the killed run had rewritten %d of %d: it did not continue where the first stopped", stale, at, total)
		}
	})
	// What rotate waited for is true: every API server has v2's key_id.
	for _, api := range c.APIServers {
		keyID := statusKeyID(t, api.Plugin.KMS(t.Context()))
		if seen, err := api.HasSeenKeyID(t.Context(), keyID); err != nil || !seen || !strings.Contains(keyID, ":v2:") {
			t.Errorf("%s: plugin key_id %q, seen by the API server: %v (%v); want v2, seen", api.Name, keyID, seen, err)
		}
	}
	assertVersion(2)
	st := status()
	if v := st.verdicts(); v != "v1:safe-to-retire v2:current" {
		t.Errorf("kmsctl status verdicts after rotate: %s, want v1 safe to retire and v2 current", v)
	}
	for _, api := range st.APIServers {
		if api.KeyVersion != 2 || api.ConfigHash == "" || api.Error != "" {
			t.Errorf("kmsctl status says %s is on v%d (config %q, error %q), want v2", api.URL, api.KeyVersion, api.ConfigHash, api.Error)
		}
	}
	if v := st.pluginVersions(); v != "2 2 2" {
		t.Errorf("kmsctl status: the plugins' key versions are %q (healthy, preflight ok), want 2 2 2: %+v", v, st.Plugins)
	}
	if stdout, stderr, err := kmsctl("retire"); err != nil {
		t.Fatalf("kmsctl retire: %v\n%s%s", err, stdout, stderr)
	} else {
		t.Logf("kmsctl retire:\n%s", stdout)
	}
	if v := status().verdicts(); v != "v1:retired v2:current" {
		t.Errorf("kmsctl status verdicts after retire: %s, want v1 retired", v)
	}

	// 2. rotate --engine=auto, v2 -> v3: the API server serves
	// storagemigration.k8s.io/v1, so StorageVersionMigrations do the writes.
	underLoad("rotation 2", c.APIServers, func() {
		rep := rotate(all, "--engine", "auto")
		assertSVM(t, a, rep)
		t.Logf("kmsctl rotate v2 -> v3, --engine=auto chose svm: %d of %d stale objects migrated by %d StorageVersionMigration(s) in %.1fs, %.0f objects/s, the first after %.0fs",
			rep.Result.Rewritten, rep.Result.Total, len(rep.SVM.Migrations), rep.Result.Seconds, rep.Result.PerSecond, rep.SVM.FirstMigratedSeconds)
		if rep.Before[0].Stale < nSecrets || rep.Before[1].Stale < nConfigMaps {
			t.Errorf("svm: %v stale before, want at least %d Secrets and %d ConfigMaps", rep.Before, nSecrets, nConfigMaps)
		}
	})
	assertVersion(3)

	// 3. StorageVersionMigration too early: rotate in Vault and start a
	// migration while API server a, which kube-controller-manager talks to,
	// still has the old key_id (its plugin's Status is refreshed once an
	// hour here, so this does not depend on when the API server polls). It
	// reports Succeeded, yet a found nothing stale under the key_id it had
	// and wrote nothing; kmsctl status shows it.
	slowA := a.Plugin.Config
	slowA.StatusRefresh = time.Hour
	a.Plugin.Restart(slowA)
	a.WaitReady(2 * time.Minute)
	var byHandName string
	underLoad("an early StorageVersionMigration", c.APIServers, func() {
		if v := c.Vault.RotateKey(c.TransitMount, c.TransitKey); v != 4 {
			t.Fatalf("rotated to v%d, want v4", v)
		}
		start := time.Now()
		name := createSVM(t, a, "secrets")
		byHandName = name
		// The controller migrates only once its garbage collector's cache
		// of Secrets has reached the resourceVersion it recorded for the
		// migration, and requeues with a growing backoff until then: seen
		// here between 3s and over 2m.
		if !waitFor(5*time.Minute, func() bool { return svmSucceeded(t, a, name) }) {
			t.Fatalf("StorageVersionMigration %s did not succeed within 5m", name)
		}
		if keyID := statusKeyID(t, a.Plugin.KMS(t.Context())); !strings.Contains(keyID, ":v3:") {
			t.Fatalf("%s's plugin reports %s, want still v3", a.Name, keyID)
		}
		st := status()
		t.Logf("StorageVersionMigration %s created right after the rotation to v4, while %s still had v3's key_id: Succeeded in %.1fs; kmsctl status verdicts: %s, %d objects under v3",
			name, a.Name, time.Since(start).Seconds(), st.verdicts(), st.objects(3))
		byHand := st.migration(name)
		switch {
		case byHand == nil || byHand.State != "Succeeded":
			t.Errorf("kmsctl status lists StorageVersionMigration %s as %+v, want Succeeded (section %+v)", name, byHand, st.StorageVersionMigrations)
		case !strings.Contains(byHand.Warning, "remain under older versions"):
			t.Errorf("kmsctl status shows no warning on the too-early StorageVersionMigration %s: %+v", name, byHand)
		default:
			t.Logf("kmsctl status warns: %s", byHand.Warning)
		}
		if v := st.verdict(3); v != "needed" {
			t.Errorf("after a StorageVersionMigration Succeeded too early, kmsctl status says v3 is %q, want needed (verdicts %s)", v, st.verdicts())
		}
		if objs := st.objects(3); objs < nSecrets {
			t.Errorf("after a StorageVersionMigration Succeeded too early, kmsctl status counts %d objects under v3, want at least %d", objs, nSecrets)
		}
	})
	a.Plugin.Restart(c.PluginConfig(a.Plugin.Config.SecretIDPath))
	a.WaitReady(2 * time.Minute)

	// kmsctl rotate --observe-only waits for the v4 key_id everywhere, then
	// finishes the job with its own StorageVersionMigrations. The first run
	// is killed (-9) as soon as one exists; run again, it follows that
	// migration instead of starting a second.
	underLoad("rotation 3", c.APIServers, func() {
		killedRun := cluster.KmsctlCommand(t, env, rotateArgs(all, "--observe-only")...)
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
		stillRunning := !svmSucceeded(t, a, killed)
		rep := rotate(all, "--observe-only")
		assertSVM(t, a, rep)
		// One migration per resource: the rerun follows the killed run's
		// instead of creating a second for the same resource.
		if stillRunning && !slices.ContainsFunc(rep.SVM.Migrations, func(m svmMigration) bool { return m.Name == killed }) {
			t.Errorf("rerun after kill -9 followed %v, not the killed run's %s", rep.SVM.Migrations, killed)
		}
		t.Logf("kmsctl rotate --observe-only to v4, svm: %d of %d stale objects migrated by %d StorageVersionMigration(s) in %.1fs, %.0f objects/s, the first after %.0fs",
			rep.Result.Rewritten, rep.Result.Total, len(rep.SVM.Migrations), rep.Result.Seconds, rep.Result.PerSecond, rep.SVM.FirstMigratedSeconds)
		if rep.Result.Total < nSecrets {
			t.Errorf("rotate --observe-only after the too-early migration found %d stale objects, want at least %d", rep.Result.Total, nSecrets)
		}
	})
	assertVersion(4)
	st = status()
	if v := st.verdict(3); v != "safe-to-retire" {
		t.Errorf("after rotate --observe-only, kmsctl status says v3 is %q, want safe-to-retire", v)
	}
	if st.StorageVersionMigrations == nil || !st.StorageVersionMigrations.Served {
		t.Errorf("kmsctl status has no StorageVersionMigrations section, or says they are not served: %+v", st.StorageVersionMigrations)
	} else {
		if st.migration(byHandName) == nil {
			t.Errorf("kmsctl status no longer lists the StorageVersionMigration %s made by hand", byHandName)
		}
		for _, m := range st.StorageVersionMigrations.Migrations {
			if m.Warning != "" {
				t.Errorf("after rotate --observe-only, kmsctl status still warns about StorageVersionMigration %s: %s", m.Name, m.Warning)
			}
		}
	}

	// 4. retire refuses while even one object is left under an old version.
	// First, an API server whose plugin still reports v4's key_id (its
	// Status refreshed once an hour) and that rotate was not told about:
	// it keeps encrypting with its v4 DEK.
	restoreKey := cluster.SecretKey(namespace, "rotate-s-00042")
	oldValue, err := c.Etcd.Get(t.Context(), restoreKey)
	if err != nil || oldValue == nil {
		t.Fatalf("read %s from etcd: %v", restoreKey, err)
	}
	slow := lagging.Plugin.Config
	slow.StatusRefresh = time.Hour
	lagging.Plugin.Restart(slow)
	underLoad("rotation 4", []*cluster.APIServer{a, b}, func() {
		rotate(a.URL+","+b.URL, "--engine", "direct", "--qps", "1000", "--workers", "16")
	})
	assertVersion(5)
	straggler := "written-by-a-lagging-api-server"
	objs.Secrets[straggler] = secretValue(straggler)
	if err := tryCreateSecret(t.Context(), lagging, straggler, objs.Secrets[straggler]); err != nil {
		t.Fatal(err)
	}
	if v := scan.Classify(assertStoredEncrypted(t, c, straggler, objs.Secrets[straggler]).Raw).TransitVersion; v != 4 {
		t.Fatalf("%s wrote %s under transit version %d; its plugin still reports v4, so it should write under v4", lagging.Name, straggler, v)
	}
	assertRetireRefuses(t, kmsctl, 5, "secrets", namespace+"/"+straggler)
	st = status()
	if v := st.verdict(4); v != "needed" {
		t.Errorf("with one Secret under v4, kmsctl status says v4 is %q, want needed", v)
	}
	// status names the culprit: its plugin reports v4.
	if v := st.pluginVersions(); v != "5 5 4" {
		t.Errorf("kmsctl status: the plugins' key versions are %q, want 5 5 4 (the lagging one on v4): %+v", v, st.Plugins)
	}
	// Repair: the plugin refreshes again, its API server takes the v5
	// key_id, and migrate rewrites the one object.
	lagging.Plugin.Restart(c.PluginConfig(lagging.Plugin.Config.SecretIDPath))
	kms := lagging.Plugin.KMS(t.Context())
	var keyID5 string
	if !waitFor(30*time.Second, func() bool {
		st, err := kms.Status(t.Context())
		keyID5 = ""
		if err == nil && st.Healthz == "ok" {
			keyID5 = st.KeyID
		}
		return strings.Contains(keyID5, ":v5:")
	}) {
		t.Fatalf("%s's plugin reports key_id %q 30s after its restart, want v5", lagging.Name, keyID5)
	}
	if !waitFor(3*time.Minute, func() bool {
		_, _, _ = lagging.Readyz(t.Context())
		seen, err := lagging.HasSeenKeyID(t.Context(), keyID5)
		return err == nil && seen
	}) {
		t.Fatalf("%s did not report key_id %s within 3m of its plugin's restart", lagging.Name, keyID5)
	}
	assertMigrates(t, migrate, 1)

	// Second, an old value restored into etcd (as from a backup), under v4.
	if _, err := c.Etcd.Client.Put(t.Context(), restoreKey, string(oldValue)); err != nil {
		t.Fatal(err)
	}
	assertRetireRefuses(t, kmsctl, 5, "secrets", namespace+"/rotate-s-00042")
	assertMigrates(t, migrate, 1)
	stdout, stderr, err := kmsctl("retire")
	if err != nil {
		t.Fatalf("kmsctl retire: %v\n%s%s", err, stdout, stderr)
	}
	t.Logf("kmsctl retire once nothing is left under v4:\n%s", stdout)
	if v := status().verdicts(); v != "v1:retired v2:retired v3:retired v4:retired v5:current" {
		t.Errorf("kmsctl status verdicts after the last retire: %s, want v1 to v4 retired", v)
	}

	// After a restart (no DEK cache), every API server reads every object.
	for _, api := range c.APIServers {
		api.Restart()
	}
	for _, api := range c.APIServers {
		api.WaitReady(2 * time.Minute)
		assertAllRead(t, api, objs)
	}
	t.Logf("after the last retire and a restart of every API server, all %d Secrets and %d ConfigMaps read back through each", len(objs.Secrets), len(objs.ConfigMaps))
}

// killMidMigration starts cmd (a kmsctl rotate or migrate with
// --engine=direct), reads its progress lines, and kills it with SIGKILL
// once a quarter of the objects are rewritten. It returns the total, how
// many were done at the last progress line, and all it wrote on stderr.
func killMidMigration(t *testing.T, cmd *exec.Cmd) (total, done int, stderr string) {
	t.Helper()
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	var out strings.Builder
	progress := regexp.MustCompile(`^migrate: (\d+)/(\d+) objects`)
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if m := progress.FindStringSubmatch(sc.Text()); m != nil {
			done, _ = strconv.Atoi(m[1])
			total, _ = strconv.Atoi(m[2])
			if done >= total/4 {
				_ = cmd.Process.Kill()
				break
			}
		}
	}
	_, _ = io.Copy(io.Discard, pipe)
	err = cmd.Wait()
	if total == 0 || done >= total {
		t.Fatalf("kmsctl was not killed half way (done %d of %d, exit %v):\n%s", done, total, err, out.String())
	}
	return total, done, out.String()
}

// assertSVM checks a --engine=auto or svm run chose StorageVersionMigration,
// every migration Succeeded, and kmsctl deleted its finished ones.
func assertSVM(t *testing.T, a *cluster.APIServer, rep migrateReport) {
	t.Helper()
	if rep.Engine != "svm" || rep.SVM == nil || len(rep.SVM.Migrations) == 0 || rep.Result.Rewritten != rep.Result.Total {
		t.Fatalf("migrate report: engine %q, svm %+v, result %+v", rep.Engine, rep.SVM, rep.Result)
	}
	for _, m := range rep.SVM.Migrations {
		if m.State != "Succeeded" {
			t.Errorf("StorageVersionMigration %s: %s %s", m.Name, m.State, m.Message)
		}
	}
	if left := kmsctlSVM(t, a); left != "" {
		t.Errorf("kmsctl left its StorageVersionMigration %s behind", left)
	}
}

// assertRetireRefuses runs kmsctl retire --to version and checks it
// refuses, naming exactly one object left: resource object (namespace/name).
func assertRetireRefuses(t *testing.T, kmsctl func(string, ...string) (string, string, error), version int, resource, object string) {
	t.Helper()
	stdout, stderr, err := kmsctl("retire", "--to", strconv.Itoa(version), "-o", "json")
	if err == nil {
		t.Fatalf("kmsctl retire --to %d went through with %s %s under an older version:\n%s", version, resource, object, stdout)
	}
	var rep struct {
		Applied  bool
		Decision struct {
			Outcome        string
			RemainingCount int
			Remaining      []struct{ Resource, Object string }
		}
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("kmsctl retire -o json: %v\n%s", err, stdout)
	}
	t.Logf("kmsctl retire --to %d refused: %s", version, strings.TrimSpace(stderr))
	d := rep.Decision
	if rep.Applied || d.RemainingCount != 1 || len(d.Remaining) != 1 || d.Remaining[0].Resource != resource || d.Remaining[0].Object != object {
		t.Errorf("kmsctl retire --to %d refused with %+v (applied %v), want exactly %s %s listed", version, d, rep.Applied, resource, object)
	}
}

// assertMigrates runs migrate (kmsctl migrate --engine=direct) and checks
// it rewrote want objects and left none.
func assertMigrates(t *testing.T, migrate func() (string, string, error), want int) {
	t.Helper()
	stdout, stderr, err := migrate()
	if err != nil {
		t.Fatalf("kmsctl migrate: %v\n%s%s", err, stdout, stderr)
	}
	var rep migrateReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("kmsctl migrate -o json: %v\n%s", err, stdout)
	}
	if rep.Result.Rewritten != want || rep.RemainingCount != 0 {
		t.Errorf("kmsctl migrate rewrote %d objects (want %d) and left %d", rep.Result.Rewritten, want, rep.RemainingCount)
	}
}

// migrateReport is the part of `kmsctl migrate -o json` (and rotate's) the
// e2e checks.
type migrateReport struct {
	// wall is how long the command ran (set by the caller).
	wall   time.Duration
	Engine string
	Passes int
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
		Migrations           []svmMigration
		FirstMigratedSeconds float64
	}
}

// svmMigration is one StorageVersionMigration of a migrate report.
type svmMigration struct{ Name, State, Message string }

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
	StorageVersionMigrations *struct {
		Served     bool
		Migrations []struct{ Name, Resource, State, Warning string }
		Error      string
	}
	Plugins []struct {
		Socket, Healthz, Error string
		KeyVersion             int
		PreflightOK            bool
	}
}

// pluginVersions is each plugin's key version in order, "x" for one that
// is not healthy or failed its preflight.
func (s statusReport) pluginVersions() string {
	var out []string
	for _, p := range s.Plugins {
		if p.Healthz != "ok" || !p.PreflightOK || p.Error != "" {
			out = append(out, "x")
			continue
		}
		out = append(out, strconv.Itoa(p.KeyVersion))
	}
	return strings.Join(out, " ")
}

// migration is the StorageVersionMigration named name in the section, nil
// if it is not listed.
func (s statusReport) migration(name string) *struct{ Name, Resource, State, Warning string } {
	if s.StorageVersionMigrations == nil {
		return nil
	}
	for i, m := range s.StorageVersionMigrations.Migrations {
		if m.Name == name {
			return &s.StorageVersionMigrations.Migrations[i]
		}
	}
	return nil
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
