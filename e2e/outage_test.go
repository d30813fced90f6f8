package e2e

import (
	"testing"
	"time"

	kmsservice "k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// Scenario 3.
func TestPluginKilledAndRestarted(t *testing.T) {
	t.Parallel()
	c := cluster.Start(t, cluster.Options{})
	a := c.APIServers[0]
	secrets := createSecrets(t, a, "before-kill", 10)
	apiPID := a.Proc.PID()

	a.Plugin.Kill()
	// The API server notices: its KMS check fails while the socket is dead.
	if body, ok := a.WaitKMS(false, 60*time.Second); !ok {
		t.Fatalf("/readyz did not report the KMS failing within 60s of killing the plugin:\n%s", body)
	}
	// Secrets already read or written keep reading from the DEK cache.
	assertReads(t, a, secrets)

	a.Plugin.Start()
	if body, ok := a.WaitKMS(true, 60*time.Second); !ok {
		t.Fatalf("/readyz did not report the KMS healthy within 60s of restarting the plugin:\n%s", body)
	}
	if got := a.Proc.PID(); got != apiPID {
		t.Fatalf("the API server restarted (pid %d, was %d); it must recover on its own", got, apiPID)
	}

	// After recovery, no read or write fails, for a while.
	l := startLoad("after-restart", 100*time.Millisecond, []*cluster.APIServer{a}, nil)
	from := time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, err := range checkReads(a, secrets) {
			t.Errorf("after the plugin restarted: %v", err)
		}
	}
	l.Stop()
	if n := l.report(t, from, time.Now()); n > 0 {
		t.Errorf("%d calls failed after the plugin recovered", n)
	}
	for name, value := range l.Written() {
		assertStoredEncrypted(t, c, name, value)
	}

	// The restarted plugin decrypts what was stored before it was killed,
	// as a cold API server would ask it to.
	stored := assertStoredEncrypted(t, c, "before-kill-0", secrets["before-kill-0"])
	assertPluginDecrypts(t, a.Plugin.KMS(t.Context()), stored)
}

// Scenario 4.
func TestVaultOutage(t *testing.T) {
	t.Parallel()
	cluster.CheckBinaries(t)
	v := vaulttest.StartPersistent(t)
	c := cluster.Start(t, cluster.Options{Vault: v})
	a := c.APIServers[0]
	secrets := createSecrets(t, a, "before-outage", 10)
	pids := []int{a.Proc.PID(), a.Plugin.Proc.PID()}

	v.Stop()
	outage := time.Now()
	// Reads keep working from the DEK cache for the whole outage.
	assertReads(t, a, secrets)
	if body, ok := a.WaitKMS(false, 90*time.Second); !ok {
		t.Fatalf("/readyz did not report the KMS failing within 90s of stopping Vault:\n%s", body)
	}
	t.Logf("/readyz reported the KMS failing %.0fs after Vault stopped", time.Since(outage).Seconds())
	if err := a.Plugin.Ready(); err == nil {
		t.Errorf("the plugin's /readyz says ready while Vault is down")
	}
	assertReads(t, a, secrets)

	v.Start()
	back := time.Now()
	if body, ok := a.WaitKMS(true, 60*time.Second); !ok {
		t.Fatalf("/readyz did not report the KMS healthy within 60s of Vault coming back:\n%s", body)
	}
	t.Logf("/readyz reported the KMS healthy %.0fs after Vault came back", time.Since(back).Seconds())
	if now := []int{a.Proc.PID(), a.Plugin.Proc.PID()}; now[0] != pids[0] || now[1] != pids[1] {
		t.Fatalf("a process restarted during the outage (api server, plugin pids %v, were %v)", now, pids)
	}

	after := createSecrets(t, a, "after-outage", 5)
	for name, value := range after {
		assertStoredEncrypted(t, c, name, value)
	}
	assertReads(t, a, after)
	assertReads(t, a, secrets)
	stored := assertStoredEncrypted(t, c, "before-outage-0", secrets["before-outage-0"])
	assertPluginDecrypts(t, a.Plugin.KMS(t.Context()), stored)
}

// Scenario 7.
func TestVaultHALeaderKilled(t *testing.T) {
	t.Parallel()
	cluster.CheckBinaries(t)
	ha := vaulttest.StartHA(t, 3)
	active := ha.WaitActive(30 * time.Second)
	c := cluster.Start(t, cluster.Options{Vault: active, VaultAddrs: ha.Addrs()})
	a := c.APIServers[0]
	kms := a.Plugin.KMS(t.Context())
	old := createSecrets(t, a, "before-failover", 5)

	l := startLoad("ha", 100*time.Millisecond, []*cluster.APIServer{a}, []kmsservice.Service{kms})
	start := time.Now()
	time.Sleep(5 * time.Second)

	killedAt := time.Now()
	killed := ha.KillActive()
	next := ha.WaitActive(60 * time.Second)
	elected := time.Now()
	t.Logf("killed active node %s; %s active after %.1fs", killed.Addr, next.Addr, elected.Sub(killedAt).Seconds())

	// Give the plugin time to move over, then require a clean stretch.
	time.Sleep(15 * time.Second)
	cleanFrom := time.Now()
	time.Sleep(10 * time.Second)
	l.Stop()
	end := time.Now()

	t.Logf("calls before the kill:")
	if n := l.report(t, start, killedAt); n > 0 {
		t.Errorf("%d calls failed before the active node was killed", n)
	}
	t.Logf("calls from the kill until %.0fs after the new leader:", cleanFrom.Sub(elected).Seconds())
	failover := l.report(t, killedAt, cleanFrom)
	t.Logf("FAILED CALLS DURING FAILOVER: %d", failover)
	t.Logf("calls in the last 10s:")
	if n := l.report(t, cleanFrom, end); n > 0 {
		t.Errorf("%d calls failed more than 15s after a new node became active", n)
	}
	if total, _ := l.Calls("kms", cleanFrom, end); total == 0 {
		t.Errorf("no KMS calls completed after the failover")
	}
	// The API server's writes and reads use its cached DEK and never wait
	// on Vault, so a failover must not fail a single one.
	for _, op := range []string{"write", "read"} {
		if _, failed := l.Calls(op, start, end); len(failed) > 0 {
			t.Errorf("%d API %ss failed during the failover", len(failed), op)
		}
	}

	assertReads(t, a, old)
	stored := assertStoredEncrypted(t, c, "before-failover-0", old["before-failover-0"])
	assertPluginDecrypts(t, kms, stored)
}
