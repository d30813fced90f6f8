//go:build integration

package plugin_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kmsservice "k8s.io/kms/pkg/service"
)

// These tests run the real plugin against real Vault 1.21 with its default
// user lockout (5 failed logins of one role_id within 15 minutes lock it out
// for 15 minutes, for every node sharing it, and a locked role gets 403 even
// with a valid secret ID).

// load calls Encrypt every 50ms with the API server's 3s deadline until
// stopped, as an API server's writes would, and counts failures.
type callerLoad struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	failed atomic.Int64
	ok     atomic.Int64
	lastOK atomic.Int64 // unix nanos of the last success
}

func startLoad(svc kmsservice.Service) *callerLoad {
	l := &callerLoad{stop: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := svc.Encrypt(ctx, "uid", []byte("seed"))
			cancel()
			if err != nil {
				l.failed.Add(1)
			} else {
				l.ok.Add(1)
				l.lastOK.Store(time.Now().UnixNano())
			}
		}
	}()
	return l
}

func (l *callerLoad) end() { close(l.stop); l.wg.Wait() }

// The scenario: the plugin's tokens are revoked and its secret ID
// destroyed while Vault keeps answering, and later a new secret ID is
// written into the same file. Before the fix every 403 and the keeper's
// loop each logged in with the dead secret ID, 5 times within 20s: the role
// was locked out and the new secret ID failed for 15 minutes.
func TestRevokedTokenAndDestroyedSecretIDDoNotLockTheRoleOut(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	l := startLoad(r.client)
	defer l.end()

	r.vault.RevokeAppRoleTokens()
	r.vault.DestroySecretID(r.role, r.secretID)
	time.Sleep(30 * time.Second) // the API server keeps calling; nothing must lock the role
	if n := r.vault.LockedUsers(); n != 0 {
		t.Fatalf("sys/locked-users lists %d locked users after 30s with a destroyed secret ID", n)
	}
	if h := r.status().Healthz; !strings.Contains(h, "login rejected") {
		t.Errorf("healthz with a destroyed secret ID = %q, want it to name the rejected login", h)
	} else {
		t.Logf("healthz with a destroyed secret ID: %q", h)
	}
	if failed := r.metric("vault_kms_plugin_vault_logins_total", `outcome="400"`); failed != 1 {
		t.Errorf("%v logins with the destroyed secret ID, want 1: each counts towards the lockout", failed)
	}

	written := time.Now()
	writeFileAtomic(t, r.secretIDPath, r.vault.NewSecretID(r.role))
	waitFor(t, 15*time.Second, "Encrypt to succeed with the new secret ID", func() bool {
		return l.lastOK.Load() > written.UnixNano()
	})
	t.Logf("serving %s after the new secret ID was written", time.Since(written).Round(100*time.Millisecond))
	r.waitHealthy(15 * time.Second)
	if n := r.vault.LockedUsers(); n != 0 {
		t.Fatalf("sys/locked-users lists %d locked users", n)
	}
}

// Three control-plane nodes share a role_id and start with a wrong secret
// ID (a typo in the rollout) while the API servers keep calling. Before the
// fix each plugin retried its login with backoff (1s, 2s, 4s ...): the role
// was locked out within seconds, for the healthy node too.
func TestThreePluginsWithAWrongSecretIDNeverLockTheRoleOut(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{}) // the healthy node, sharing the role_id
	good := startLoad(r.client)
	defer good.end()

	type node struct {
		secretPath string
		svc        kmsservice.Service
		load       *callerLoad
	}
	var nodes []node
	for i := 0; i < 3; i++ {
		p := filepath.Join(t.TempDir(), "secret-id")
		writeFileAtomic(t, p, "00000000-0000-0000-0000-000000000000")
		_, svc, _ := r.startPlugin(append(r.argsWithout("-approle-secret-id-path="), "-approle-secret-id-path="+p))
		nodes = append(nodes, node{secretPath: p, svc: svc, load: startLoad(svc)})
	}
	const runFor = 150 * time.Second
	deadline := time.Now().Add(runFor)
	for time.Now().Before(deadline) {
		if n := r.vault.LockedUsers(); n != 0 {
			t.Fatalf("the role was locked out after %s with three plugins holding a wrong secret ID", runFor-time.Until(deadline).Round(time.Second))
		}
		time.Sleep(5 * time.Second)
	}
	for i, n := range nodes {
		st, err := n.svc.Status(context.Background())
		if err != nil || !strings.Contains(st.Healthz, "login rejected") {
			t.Errorf("node %d: Status = %v, %v; want healthz naming the rejected login", i, st, err)
		}
	}
	if f := good.failed.Load(); f != 0 {
		t.Errorf("the healthy node failed %d calls", f)
	}

	// The operator writes the right secret ID: every node serves within
	// seconds, as the role was never locked.
	written := time.Now()
	for _, n := range nodes {
		writeFileAtomic(t, n.secretPath, r.vault.NewSecretID(r.role))
	}
	for i, n := range nodes {
		waitFor(t, 15*time.Second, "node to serve with the right secret ID", func() bool {
			return n.load.lastOK.Load() > written.UnixNano()
		})
		n.load.end()
		t.Logf("node %d serving %s after the right secret ID was written", i, time.Since(written).Round(100*time.Millisecond))
	}
	if n := r.vault.LockedUsers(); n != 0 {
		t.Fatalf("sys/locked-users lists %d locked users", n)
	}
}
