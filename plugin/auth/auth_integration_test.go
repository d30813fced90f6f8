//go:build integration

package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// A login or a 403's re-login waits for a login stuck on a hung Vault only
// until its caller's deadline; the login goes on in the background.
func TestWaitsForAHungLoginOnlyUntilTheCallersDeadline(t *testing.T) {
	v := vaulttest.StartDev(t)
	v.EnableTransit("transit", "k")
	role := v.CreateAppRole("kms", "kms", vaulttest.Policy("transit", "k"), time.Hour, 2*time.Hour)
	secretPath := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretPath, []byte(v.NewSecretID(role)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := vault.New(vault.Config{Addresses: []string{v.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	k := NewKeeper(c, &AppRole{Client: c, Mount: "approle", RoleID: role.RoleID, SecretIDPath: secretPath}, Hooks{})
	c.SetReauth(k)

	v.Pause() // connections are accepted, nothing answers
	tests := []struct {
		name string
		wait func(ctx context.Context) error
	}{
		{name: "Login", wait: k.Login},
		{name: "Reauth", wait: func(ctx context.Context) error { return k.Reauth(ctx, 0) }},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		err := tt.wait(ctx)
		cancel()
		if waited := time.Since(start); waited > 1500*time.Millisecond {
			t.Errorf("%s waited %s for a hung login, past a 300ms deadline (err %v)", tt.name, waited.Round(time.Millisecond), err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v, want the caller's deadline", tt.name, err)
		}
	}
	v.Resume()
	// The login that was under way finishes on its own deadline and serves
	// the next caller.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := k.Login(ctx); err != nil {
		t.Fatalf("login after Vault resumed: %v", err)
	}
	if k.ExpiresAt().IsZero() {
		t.Fatal("no token expiry after a successful login")
	}
}
