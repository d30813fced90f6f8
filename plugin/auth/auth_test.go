package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

func TestDecide(t *testing.T) {
	now := time.Unix(1000, 0)
	live := tokenState{valid: true, renewable: true, loginTTL: time.Minute, expiresAt: now.Add(time.Minute), nextAt: now.Add(40 * time.Second)}
	due := live
	due.nextAt = now.Add(-time.Second)
	dueCapped := due
	dueCapped.capped = true
	dueNotRenewable := due
	dueNotRenewable.renewable = false
	noExpiry := tokenState{valid: true}

	tests := []struct {
		name    string
		state   tokenState
		changed bool
		want    action
	}{
		{name: "no token => login", state: tokenState{}, want: actLogin},
		{name: "token not yet due => wait", state: live, want: actWait},
		{name: "renewable token due => renew", state: due, want: actRenew},
		{name: "due but renewals capped by max TTL => login", state: dueCapped, want: actLogin},
		{name: "due and not renewable => login", state: dueNotRenewable, want: actLogin},
		{name: "token without expiry => wait", state: noExpiry, want: actWait},
		{name: "credential file changed => login even if token is fresh", state: live, changed: true, want: actLogin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decide(tt.state, now, tt.changed); got != tt.want {
				t.Fatalf("decide = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFingerprintChangesWhenFileIsReplaced(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret-id")
	if err := os.WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := fingerprint(p)
	// Replace atomically, as a Kubernetes volume or an operator would.
	tmp := filepath.Join(dir, "tmp")
	if err := os.WriteFile(tmp, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if after := fingerprint(p); after == before {
		t.Fatalf("fingerprint unchanged after replacing the file: %s", after)
	}
}

func TestReadCredentialErrorsNeverHoldTheContent(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readCredential(empty, "secret ID"); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: err = %v", err)
	}
	if _, err := readCredential(filepath.Join(dir, "missing"), "secret ID"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: err = %v", err)
	}
	ok := filepath.Join(dir, "ok")
	if err := os.WriteFile(ok, []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := readCredential(ok, "secret ID"); err != nil || v != "s3cr3t" {
		t.Fatalf("readCredential = %q, %v", v, err)
	}
}

func TestReauthGapGrowsWhileFreshTokensAreRefused(t *testing.T) {
	want := []time.Duration{0, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}
	for streak, w := range want {
		if got := reauthGap(streak); got != w {
			t.Errorf("reauthGap(%d) = %s, want %s", streak, got, w)
		}
	}
	if got := reauthGap(50); got != maxReauthGap {
		t.Errorf("reauthGap(50) = %s, want the cap %s", got, maxReauthGap)
	}
}

func TestWaitsForTheKeeperEndAtTheCallersDeadline(t *testing.T) {
	tests := []struct {
		name string
		wait func(k *Keeper, ctx context.Context) error
	}{
		{name: "renewal hung on a paused Vault => a 403's re-login gives up at the request's deadline", wait: (*Keeper).Reauth},
		{name: "renewal hung on a paused Vault => a login gives up at its caller's deadline", wait: (*Keeper).Login},
	}
	v := vaulttest.StartDev(t)
	tokenPath := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenPath, []byte(v.RootToken), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := vault.New(vault.Config{Addresses: []string{v.Addr}})
			if err != nil {
				t.Fatal(err)
			}
			k := NewKeeper(c, &TokenFile{Path: tokenPath}, Hooks{})
			if err := k.Login(context.Background()); err != nil {
				t.Fatal(err)
			}
			v.Pause() // connections are accepted, nothing answers
			paused := true
			defer func() {
				if paused {
					v.Resume()
				}
			}()
			renewed := make(chan error, 1)
			go func() {
				renewed <- k.renew(context.Background(), tokenState{valid: true, renewable: true, loginTTL: time.Hour})
			}()
			// Wait until the renewal holds the keeper's lock.
			for held := false; !held; {
				probe, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
				if k.loginMu.Lock(probe) == nil {
					k.loginMu.Unlock()
					time.Sleep(5 * time.Millisecond)
				} else {
					held = true
				}
				cancel()
			}

			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err = tt.wait(k, ctx)
			if waited := time.Since(start); waited > 1500*time.Millisecond {
				t.Fatalf("waited %s behind the renewal, past a 300ms deadline (err %v)", waited.Round(time.Millisecond), err)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want the caller's deadline", err)
			}
			v.Resume()
			paused = false
			<-renewed
		})
	}
}
