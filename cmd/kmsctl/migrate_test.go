package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestMigrateValidate(t *testing.T) {
	base := []string{"--etcd-endpoints", "http://127.0.0.1:2379", "--resources", "secrets", "--transit-version", "2"}
	tests := []struct {
		name string
		args []string
		want string // "" means valid
	}{
		{name: "all required flags => valid", args: base},
		{name: "--engine=svm => not implemented yet", args: append([]string{"--engine=svm"}, base...), want: "--engine=svm is not implemented yet"},
		{name: "unknown engine => refused", args: append([]string{"--engine=kubectl"}, base...), want: "--engine must be direct"},
		{name: "no --transit-version => required", args: base[:4], want: "--transit-version is required"},
		{name: "no --resources => required", args: []string{"--etcd-endpoints", "http://e:2379", "--transit-version", "2"}, want: "--resources is required"},
		{name: "no --etcd-endpoints => required", args: []string{"--resources", "secrets", "--transit-version", "2"}, want: "--etcd-endpoints is required"},
		{name: "--workers 0 => refused", args: append([]string{"--workers", "0"}, base...), want: "--workers must be positive"},
		{name: "--qps 0 => refused", args: append([]string{"--qps", "0"}, base...), want: "--qps must be positive"},
		{name: "-o yaml => refused", args: append([]string{"-o", "yaml"}, base...), want: "-o must be table or json"},
		{name: "wildcard resource => refused", args: []string{"--etcd-endpoints", "http://e:2379", "--resources", "*.apps", "--transit-version", "2"}, want: "wildcard"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &migrateOptions{}
			fs := pflag.NewFlagSet("migrate", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
