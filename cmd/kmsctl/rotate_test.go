package main

import (
	"strings"
	"testing"
)

func TestRotateValidate(t *testing.T) {
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
		{name: "no vault address => --vault-address", env: token, args: append([]string{"--vault-key-path", "transit/keys/k"}, etcd...), want: "--vault-address is required"},
		{name: "no token => VAULT_TOKEN or --vault-token-path", env: nil, args: args(), want: "set VAULT_TOKEN or --vault-token-path"},
		{name: "hmac key_ids cannot be awaited => says what to do instead", env: token, args: args("--key-id-mode", "hmac"), want: "kmsctl migrate --transit-version N"},
		{name: "unknown key_id mode => --key-id-mode", env: token, args: args("--key-id-mode", "sha"), want: "--key-id-mode must be metadata or hmac"},
		{name: "API server over http => --apiservers", env: token, args: args("--apiservers", "http://10.0.0.1:6443"), want: "--apiservers: \"http://10.0.0.1:6443\""},
		{name: "API server with a path => --apiservers", env: token, args: args("--apiservers", "https://lb.example/k8s"), want: "an API server's own address"},
		{name: "unknown engine => --engine", env: token, args: args("--engine", "kubectl"), want: "--engine must be auto, svm or direct"},
		{name: "svm engine paced by --qps => refused: direct only", env: token, args: args("--engine", "svm", "--qps", "10"), want: "--workers and --qps pace --engine=direct only"},
		{name: "zero wait => --wait-timeout", env: token, args: args("--wait-timeout", "0s"), want: "--wait-timeout and --poll-interval must be positive"},
		{name: "no --transit-version flag: rotate finds the version", env: token, args: args("--transit-version", "3"), want: "unknown flag: --transit-version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := execute(newRotateCmdEnv(func(k string) string { return tt.env[k] }), tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
