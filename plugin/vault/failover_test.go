//go:build integration

package vault_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	kmsservice "k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/plugin"
	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// A Vault node that stops answering without closing its connections must
// cost a call a bounded part of the API server's 3 s deadline, once, and
// never fail it while another node answers (issue 12, fault 1). The hung
// node is a proxy in front of a real Vault that at some point stops
// forwarding bytes; the same Vault, reached directly, is the second node.
func TestAHungVaultNodeIsFailedOverWithinTheCallersDeadline(t *testing.T) {
	tests := []struct {
		name string
		tls  bool
		// HTTP/2: every call shares one connection, and its pings find it
		// dead and close it. HTTP/1.1 has no pings: an idle connection to
		// the hung node may stay pooled until IdleConnTimeout, harmless
		// since no call goes there.
		http2 bool
	}{
		{name: "first node hangs under load, plain HTTP/1.1 => no call fails, Status stays ok, later calls go straight to the second node"},
		{name: "first node hangs under load, TLS with HTTP/2 => no call fails, Status stays ok, the dead connection is closed", tls: true, http2: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v *vaulttest.Server
			cfg := vault.Config{}
			if tt.tls {
				f := vaulttest.NewTLSFiles(t)
				v = vaulttest.StartPersistentTLS(t, f)
				cfg = vault.Config{CAFile: f.CAFile, ServerName: f.ServerName, ClientCert: f.ClientCertFile, ClientKey: f.ClientKey}
			} else {
				v = vaulttest.StartDev(t)
			}
			const mount, key = "transit", "kubernetes"
			v.EnableTransit(mount, key)
			role := v.CreateAppRole("kms-plugin", "kms-plugin", vaulttest.Policy(mount, key), time.Hour, 2*time.Hour)
			secretID := v.NewSecretID(role)
			px := vaulttest.StartProxy(t, v.Addr)

			cfg.Addresses = []string{px.Addr, v.Addr}
			c, err := vault.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tok, err := c.LoginAppRole(ctx, "approle", role.RoleID, secretID)
			if err != nil {
				t.Fatalf("login through the proxy: %v", err)
			}
			c.SetToken(tok.Value)
			// As the sidecar runs by default: batched, Status refreshed in
			// the background.
			p := plugin.New(c.Transit(mount, key).Batched(vault.BatchOptions{MaxSize: 128, MaxInFlight: 8}),
				plugin.Config{Mount: mount, Key: key, RefreshInterval: time.Second})
			go p.Run(ctx)
			if !vaulttest.WaitFor(ctx, 10*time.Second, func() bool { return p.Healthy() == nil }) {
				t.Fatalf("plugin not healthy: %v", p.Healthy())
			}
			if c.Address() != px.Addr {
				t.Fatalf("the client uses %s, want the first address %s", c.Address(), px.Addr)
			}

			type call struct {
				start time.Time
				took  time.Duration
				err   error
			}
			var (
				mu        sync.Mutex
				calls     []call
				unhealthy []string
				stop      = make(chan struct{})
				wg        sync.WaitGroup
			)
			record := func(start time.Time, err error) {
				mu.Lock()
				calls = append(calls, call{start: start, took: time.Since(start), err: err})
				mu.Unlock()
			}
			stopped := func() bool {
				select {
				case <-stop:
					return true
				default:
					return false
				}
			}
			// The API server gives every call its own 3 s.
			kmsCall := func(f func(ctx context.Context) error) error {
				start := time.Now()
				callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				err := f(callCtx)
				record(start, err)
				return err
			}
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; !stopped(); n++ {
						seed := []byte(fmt.Sprintf("dek-seed-%d-%d", w, n))
						var resp *kmsservice.EncryptResponse
						if kmsCall(func(ctx context.Context) (err error) { resp, err = p.Encrypt(ctx, "uid", seed); return err }) != nil {
							continue
						}
						_ = kmsCall(func(ctx context.Context) error {
							pt, err := p.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID})
							if err == nil && !bytes.Equal(pt, seed) {
								err = fmt.Errorf("decrypt returned %q, want %q", pt, seed)
							}
							return err
						})
						time.Sleep(10 * time.Millisecond)
					}
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stopped() {
					if err := p.Healthy(); err != nil {
						mu.Lock()
						unhealthy = append(unhealthy, err.Error())
						mu.Unlock()
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()

			time.Sleep(time.Second)
			before := px.Accepted()
			hungAt := time.Now()
			px.Hang()
			time.Sleep(5 * time.Second)
			close(stop)
			wg.Wait()

			if before == 0 {
				t.Fatal("no connection went through the proxy before it hung: the test proves nothing")
			}
			if tt.http2 && before != 1 {
				t.Errorf("%d connections to the first node before it hung, want the one HTTP/2 connection", before)
			}
			var failed []string
			var late []time.Duration // calls started once the failover is over
			for _, cl := range calls {
				if cl.err != nil {
					failed = append(failed, fmt.Sprintf("started %+.2fs from the hang, took %.2fs: %v",
						cl.start.Sub(hungAt).Seconds(), cl.took.Seconds(), cl.err))
				}
				if cl.start.After(hungAt.Add(1500 * time.Millisecond)) {
					late = append(late, cl.took)
				}
			}
			var took []time.Duration
			for _, cl := range calls {
				took = append(took, cl.took)
			}
			t.Logf("%d calls, %d failed, slowest %v; %d started 1.5s or more after the hang, slowest of those %v",
				len(calls), len(failed), maxOf(took).Round(time.Millisecond), len(late), maxOf(late).Round(time.Millisecond))
			if len(failed) > 0 {
				t.Errorf("%d of %d calls failed; first ones:\n%s", len(failed), len(calls), strings.Join(failed[:min(len(failed), 5)], "\n"))
			}
			if len(unhealthy) > 0 {
				t.Errorf("Status was not ok %d times while the first node hung, first: %q", len(unhealthy), unhealthy[0])
			}
			if c.Address() != v.Addr {
				t.Errorf("the client uses %s after the hang, want %s", c.Address(), v.Addr)
			}
			if len(late) < 8 {
				t.Errorf("only %d calls started after the failover: the load stalled", len(late))
			} else if slowest := maxOf(late); slowest > 700*time.Millisecond {
				// A call that still tries the hung node first pays an
				// attempt's share of its deadline (about 0.9s) every time.
				t.Errorf("a call started after the failover took %v: calls still try the hung node first", slowest)
			}
			if tt.http2 {
				// Pinged after 3 s of silence, closed 2 s later without an
				// answer; Go's transport alone keeps it about 13 s.
				closeBy := hungAt.Add(8 * time.Second)
				if !vaulttest.WaitFor(ctx, time.Until(closeBy), func() bool { return px.Open() == 0 }) {
					t.Errorf("%d connections to the hung node still open %.1fs after it hung: dead HTTP/2 connections are not detected",
						px.Open(), time.Since(hungAt).Seconds())
				}
			}
		})
	}
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}
