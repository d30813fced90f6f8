// Package auth keeps the plugin's Vault token alive: it logs in, renews the
// token before it expires, logs in again before the token's maximum TTL ends
// or when the credential file on disk changes, and re-logs in on demand when
// Vault refuses the token, without ever turning failures into a stream of
// logins that would trip Vault's user lockout for every node.
package auth

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

// Method obtains a fresh token from credentials on disk.
type Method interface {
	// Login returns a new token. Errors never contain the credential.
	Login(ctx context.Context) (vault.Token, error)
	// Fingerprint identifies the credential file's current contents; a
	// change means the credential was rotated and Login should run again.
	Fingerprint() string
	// Name names the method in logs and metrics.
	Name() string
}

// AppRole logs in with a role ID and a secret ID read from a file.
type AppRole struct {
	Client       *vault.Client
	Mount        string
	RoleID       string // used when RoleIDPath is empty
	RoleIDPath   string
	SecretIDPath string
}

var _ Method = (*AppRole)(nil)

// Name implements Method.
func (a *AppRole) Name() string { return "AppRole" }

// Fingerprint implements Method.
func (a *AppRole) Fingerprint() string {
	return fingerprint(a.SecretIDPath) + "/" + fingerprint(a.RoleIDPath)
}

// Login implements Method. The secret ID is read on every login so that a
// rotated file is picked up without a restart.
func (a *AppRole) Login(ctx context.Context) (vault.Token, error) {
	roleID := a.RoleID
	if a.RoleIDPath != "" {
		var err error
		if roleID, err = readCredential(a.RoleIDPath, "role ID"); err != nil {
			return vault.Token{}, err
		}
	}
	secretID, err := readCredential(a.SecretIDPath, "secret ID")
	if err != nil {
		return vault.Token{}, err
	}
	return a.Client.LoginAppRole(ctx, a.Mount, roleID, secretID)
}

// TokenFile uses a token read from a file, for development.
type TokenFile struct {
	Path string
}

var _ Method = (*TokenFile)(nil)

// Name implements Method.
func (t *TokenFile) Name() string { return "token file" }

// Fingerprint implements Method.
func (t *TokenFile) Fingerprint() string { return fingerprint(t.Path) }

// Login implements Method. The token's lifetime is not managed: a token
// file is re-read when it changes or when Vault refuses the token.
func (t *TokenFile) Login(context.Context) (vault.Token, error) {
	tok, err := readCredential(t.Path, "token")
	if err != nil {
		return vault.Token{}, err
	}
	return vault.Token{Value: tok}, nil
}

func readCredential(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		// os errors name the path and the reason, never the content.
		return "", fmt.Errorf("read %s file: %w", what, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("read %s file %s: file is empty", what, path)
	}
	return v, nil
}

func fingerprint(path string) string {
	if path == "" {
		return ""
	}
	fi, err := os.Stat(path) // follows symlinks, as Kubernetes volume updates swap them
	if err != nil {
		return "missing"
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%d:%d:%d", ino, fi.Size(), fi.ModTime().UnixNano())
}
