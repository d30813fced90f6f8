package main

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/transit"
)

// vaultOptions are the flags that say which transit key to operate on and
// how to reach Vault as its operator, shared by retire and rotate.
type vaultOptions struct {
	configPath     string
	vaultAddress   string
	vaultKeyPath   string
	vaultNamespace string
	tlsCAFile      string
	tlsServerName  string
	tokenPath      string
	// getenv reads VAULT_TOKEN; tests replace it.
	getenv func(string) string
}

// AddFlags registers the Vault flags.
func (o *vaultOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "kms.yaml: the Vault address, key path, namespace and TLS, and the resources (encryption.resources)")
	fs.StringVar(&o.vaultAddress, "vault-address", "", "Vault's address, https://host[:port] (http only to loopback)")
	fs.StringVar(&o.vaultKeyPath, "vault-key-path", "", "the transit key, <mount>/keys/<name>")
	fs.StringVar(&o.vaultNamespace, "vault-namespace", "", "Vault Enterprise namespace of the transit mount")
	fs.StringVar(&o.tlsCAFile, "tls-ca-file", "", "PEM CA bundle that verifies Vault (default: system roots)")
	fs.StringVar(&o.tlsServerName, "tls-server-name", "", "TLS name to verify instead of the address's host")
	fs.StringVar(&o.tokenPath, "vault-token-path", "", "file holding the operator's Vault token (default: $VAULT_TOKEN)")
}

// Validate checks the Vault flags. It reads no file.
func (o *vaultOptions) Validate() error {
	configGiven := o.configPath != ""
	switch {
	case !configGiven && o.vaultAddress == "":
		return errors.New("--vault-address is required (or --config)")
	case !configGiven && o.vaultKeyPath == "":
		return errors.New("--vault-key-path is required (or --config)")
	case o.tokenPath == "" && o.getenv("VAULT_TOKEN") == "":
		return errors.New("no Vault token: set VAULT_TOKEN or --vault-token-path (a token is never a flag value)")
	}
	if o.vaultAddress != "" {
		if err := transit.CheckAddress(o.vaultAddress); err != nil {
			return fmt.Errorf("--vault-address: %w", err)
		}
	}
	if o.vaultKeyPath != "" {
		if _, _, err := transit.SplitKeyPath(o.vaultKeyPath); err != nil {
			return fmt.Errorf("--vault-key-path: %w", err)
		}
	}
	return nil
}

// loadConfig reads --config, or returns nil without one.
func (o *vaultOptions) loadConfig() (*config.Config, error) {
	if o.configPath == "" {
		return nil, nil
	}
	return config.Load(o.configPath)
}

// transitConfig merges the flags over kms.yaml and reads the token.
func (o *vaultOptions) transitConfig(cfg *config.Config) (transit.Config, error) {
	tc := transit.Config{Address: o.vaultAddress, KeyPath: o.vaultKeyPath, Namespace: o.vaultNamespace,
		CAFile: o.tlsCAFile, ServerName: o.tlsServerName, Timeout: 30 * time.Second}
	if cfg != nil {
		v := &cfg.Vault
		if addrs := v.Addresses(); tc.Address == "" && len(addrs) > 0 {
			// Any node serves: standbys forward to the active one.
			tc.Address = addrs[0]
		}
		tc.KeyPath = cmp.Or(tc.KeyPath, v.VaultKeyPath)
		tc.Namespace = cmp.Or(tc.Namespace, v.VaultNamespace)
		tc.CAFile = cmp.Or(tc.CAFile, v.TLS.CABundlePath)
		tc.ServerName = cmp.Or(tc.ServerName, v.TLS.ServerName)
		if tc.Address == "" || tc.KeyPath == "" {
			return tc, fmt.Errorf("%s: vault.vaultAddress and vault.vaultKeyPath are required (or --vault-address and --vault-key-path)", o.configPath)
		}
		if err := transit.CheckAddress(tc.Address); err != nil {
			return tc, fmt.Errorf("%s: vault.vaultAddress: %w", o.configPath, err)
		}
		if _, _, err := transit.SplitKeyPath(tc.KeyPath); err != nil {
			return tc, fmt.Errorf("%s: vault.vaultKeyPath: %w", o.configPath, err)
		}
	}
	if o.tokenPath != "" {
		b, err := os.ReadFile(o.tokenPath)
		if err != nil {
			return tc, fmt.Errorf("--vault-token-path: %w", err)
		}
		tc.Token = strings.TrimSpace(string(b))
		if tc.Token == "" {
			return tc, fmt.Errorf("--vault-token-path: %s is empty", o.tokenPath)
		}
	} else {
		tc.Token = strings.TrimSpace(o.getenv("VAULT_TOKEN"))
	}
	return tc, nil
}
