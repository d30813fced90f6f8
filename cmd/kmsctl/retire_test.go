package main

import (
	"strings"
	"testing"
)

// runRetire runs `kmsctl retire args...` with env as its environment
// (VAULT_TOKEN) and returns stdout and the error.
func runRetire(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	return execute(newRetireCmdEnv(func(k string) string { return env[k] }), args...)
}

func TestRetireValidate(t *testing.T) {
	vault := []string{"--vault-address", "https://vault.example:8200", "--vault-key-path", "transit/keys/kubernetes"}
	etcd := []string{"--etcd-endpoints", "http://x", "--resources", "secrets"}
	args := func(extra ...string) []string { return append(append(append([]string{}, vault...), etcd...), extra...) }
	token := map[string]string{"VAULT_TOKEN": "t"}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "no etcd endpoints => --etcd-endpoints", env: token, args: append(append([]string{}, vault...), "--resources", "secrets"), want: "--etcd-endpoints is required"},
		{name: "no resources and no config => --resources or --config", env: token, args: append(append([]string{}, vault...), "--etcd-endpoints", "http://x"), want: "--resources or --config is required"},
		{name: "--resources beside --config => exclusive", env: token, args: args("--config", "k.yaml"), want: "--resources and --config are exclusive"},
		{name: "no vault address => --vault-address", env: token, args: append([]string{"--vault-key-path", "transit/keys/k"}, etcd...), want: "--vault-address is required"},
		{name: "no key path => --vault-key-path", env: token, args: append([]string{"--vault-address", "https://v"}, etcd...), want: "--vault-key-path is required"},
		{name: "key path without /keys/ => --vault-key-path", env: token, args: append([]string{"--vault-address", "https://v", "--vault-key-path", "transit/k"}, etcd...), want: "--vault-key-path: key path"},
		{name: "plain http to a remote Vault => --vault-address", env: token, args: append([]string{"--vault-address", "http://vault.example", "--vault-key-path", "transit/keys/k"}, etcd...), want: "--vault-address: \"http://vault.example\": plain http"},
		{name: "no token => VAULT_TOKEN or --vault-token-path", env: nil, args: args(), want: "set VAULT_TOKEN or --vault-token-path"},
		{name: "negative --to => --to", env: token, args: args("--to", "-1"), want: "--to must be a key version"},
		{name: "zero --limit => --limit", env: token, args: args("--limit", "0"), want: "--limit must be positive"},
		{name: "-o yaml => -o", env: token, args: args("-o", "yaml"), want: "-o must be table or json"},
		{name: "zero --timeout => --timeout", env: token, args: args("--timeout", "0s"), want: "--timeout must be positive"},
		{name: "--etcd-cert without --etcd-key => both", env: token, args: args("--etcd-cert", "c.pem"), want: "--etcd-cert and --etcd-key go together"},
		{name: "--undo without etcd flags => accepted up to Vault", env: token, args: append(append([]string{}, vault...), "--undo", "--timeout", "1s", "--vault-address", "https://127.0.0.1:1"), want: "read transit key transit/keys/kubernetes at https://127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runRetire(t, tt.env, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
