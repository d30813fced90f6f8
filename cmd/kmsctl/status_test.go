package main

import (
	"bytes"
	"strings"
	"testing"
)

func runStatus(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newStatusCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestStatusValidate(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no endpoints => --etcd-endpoints", args: nil, want: "--etcd-endpoints is required"},
		{name: "-o yaml => -o", args: []string{"--etcd-endpoints", "http://x", "-o", "yaml"}, want: "-o must be table or json"},
		{name: "--resources and --config => exclusive", args: []string{"--etcd-endpoints", "http://x", "--resources", "secrets", "--config", "k.yaml"}, want: "--resources and --config are exclusive"},
		{name: "wildcard => --resources", args: []string{"--etcd-endpoints", "http://x", "--resources", "*.apps"}, want: "--resources: resource \"*.apps\" is a wildcard"},
		{name: "cert without key => both", args: []string{"--etcd-endpoints", "http://x", "--etcd-cert", "c.pem"}, want: "--etcd-cert and --etcd-key go together"},
		{name: "zero timeout => --timeout", args: []string{"--etcd-endpoints", "http://x", "--timeout", "0s"}, want: "--timeout must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runStatus(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
