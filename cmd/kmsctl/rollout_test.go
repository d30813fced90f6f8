package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestRolloutValidate(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "plan without --nodes", args: []string{"plan", "--config", "k.yaml"}, want: "--nodes is required"},
		{name: "plan without --config", args: []string{"plan", "--nodes", "n.yaml"}, want: "--config is required"},
		{name: "plan -o yaml", args: []string{"plan", "--nodes", "n.yaml", "--config", "k.yaml", "-o", "yaml"}, want: "-o must be table or json"},
		{name: "zero step timeout", args: []string{"plan", "--nodes", "n.yaml", "--config", "k.yaml", "--step-timeout", "0s"}, want: "--step-timeout must be positive"},
		{name: "apply without --key: no unverified image is ever written", args: []string{"apply", "--nodes", "n.yaml", "--config", "k.yaml"}, want: `"key" not set`},
		{name: "unreadable nodes.yaml => named", args: []string{"plan", "--nodes", filepath.Join(t.TempDir(), "missing.yaml"), "--config", "k.yaml"}, want: "read nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newRolloutCmd()
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// Every command's flags register without clashing: a clash panics when
// kmsctl starts, whatever command is run.
func TestEveryCommandBuilds(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	for _, c := range root.Commands() {
		for _, sub := range append(c.Commands(), c) {
			root.SetOut(&out)
			root.SetArgs(append(strings.Fields(sub.CommandPath())[1:], "--help"))
			if err := root.Execute(); err != nil {
				t.Errorf("%s --help: %v", sub.CommandPath(), err)
			}
		}
	}
}
