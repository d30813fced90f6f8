package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

func TestMigrateEngineDefault(t *testing.T) {
	o := &migrateOptions{}
	fs := pflag.NewFlagSet("migrate", pflag.ContinueOnError)
	o.AddFlags(fs)
	if o.engine != "auto" {
		t.Errorf("--engine defaults to %q, want auto", o.engine)
	}
}

func TestPickEngine(t *testing.T) {
	tests := []struct {
		name      string
		requested string
		served    bool
		want      string // "" means refused
	}{
		{name: "auto, SVM served => svm", requested: "auto", served: true, want: "svm"},
		{name: "auto, SVM not served => direct", requested: "auto", served: false, want: "direct"},
		{name: "svm, served => svm", requested: "svm", served: true, want: "svm"},
		{name: "svm, not served => refused", requested: "svm", served: false},
		{name: "direct, served => direct all the same", requested: "direct", served: true, want: "direct"},
		{name: "direct, not served => direct", requested: "direct", served: false, want: "direct"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickEngine(tt.requested, tt.served)
			if got != tt.want || (err != nil) != (tt.want == "") {
				t.Errorf("pickEngine(%q, %v) = %q, %v; want %q", tt.requested, tt.served, got, err, tt.want)
			}
		})
	}
}

func TestMigrateValidate(t *testing.T) {
	base := []string{"--etcd-endpoints", "http://127.0.0.1:2379", "--resources", "secrets", "--transit-version", "2"}
	tests := []struct {
		name string
		args []string
		want string // "" means valid
	}{
		{name: "all required flags => valid", args: base},
		{name: "--engine=svm => valid (the server is asked at run time)", args: append([]string{"--engine=svm"}, base...)},
		{name: "--engine=direct => valid", args: append([]string{"--engine=direct"}, base...)},
		{name: "--engine=auto => valid", args: append([]string{"--engine=auto"}, base...)},
		{name: "unknown engine => refused", args: append([]string{"--engine=kubectl"}, base...), want: "--engine must be auto, svm or direct, not \"kubectl\""},
		{name: "--engine=svm with --workers => refused: direct only", args: append([]string{"--engine=svm", "--workers", "4"}, base...), want: "--workers and --qps pace --engine=direct only"},
		{name: "--engine=svm with --qps => refused: direct only", args: append([]string{"--engine=svm", "--qps", "50"}, base...), want: "--workers and --qps pace --engine=direct only"},
		{name: "--engine=auto with --workers => valid: they apply if auto picks direct", args: append([]string{"--workers", "4"}, base...)},
		{name: "no --transit-version => required", args: base[:4], want: "--transit-version (the transit key version every API server now encrypts with) or --from-provider"},
		{name: "--from-provider instead => valid", args: append([]string{"--from-provider", "vault-old"}, base[:4]...)},
		{name: "--from-provider and --transit-version => refused", args: append([]string{"--from-provider", "vault-old"}, base...), want: "exclusive"},
		{name: "--from-provider with --engine=svm => refused: direct only", args: append([]string{"--from-provider", "vault-old", "--engine=svm"}, base[:4]...), want: "--from-provider runs --engine=direct"},
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

// TestResolveEngine asks a stand-in API server's discovery: a 1.37 server
// always serves storagemigration.k8s.io/v1, so the e2e cluster cannot show
// the refusal; this shows what the operator reads.
func TestResolveEngine(t *testing.T) {
	served := `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"storagemigration.k8s.io/v1","resources":[{"name":"storageversionmigrations","namespaced":false,"kind":"StorageVersionMigration","verbs":["create","delete","get","list","watch"]}]}`
	tests := []struct {
		name      string
		engine    string
		discovery string // "" answers 404
		want      string
		stderr    string
		err       string
		from      string // --from-provider
	}{
		{name: "auto on a server with SVM => svm, said on stderr", engine: "auto", discovery: served, want: "svm", stderr: "serves storagemigration.k8s.io/v1: using svm"},
		{name: "auto on a server without SVM => direct, said on stderr", engine: "auto", want: "direct", stderr: "does not serve storagemigration.k8s.io/v1: using direct"},
		{name: "svm on a server without SVM => one clear line", engine: "svm", err: "--engine=svm: %s does not serve storagemigration.k8s.io/v1 StorageVersionMigrations (Kubernetes 1.37 or later): use --engine=direct"},
		{name: "direct => no question asked", engine: "direct", want: "direct"},
		{name: "auto with --from-provider => direct, no question asked, said on stderr", engine: "auto", from: "vault-old", discovery: served, want: "direct", stderr: "--from-provider runs the direct engine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asked := false
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked = true
				if r.URL.Path != "/apis/storagemigration.k8s.io/v1" || tt.discovery == "" {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, tt.discovery)
			}))
			defer srv.Close()
			o := &migrateOptions{engine: tt.engine, fromProvider: tt.from}
			var stderr bytes.Buffer
			err := o.resolveEngine(context.Background(), &rest.Config{Host: srv.URL}, &stderr)
			if tt.err != "" {
				want := fmt.Sprintf(tt.err, srv.URL)
				if err == nil || err.Error() != want {
					t.Fatalf("err = %v\nwant %s", err, want)
				}
				return
			}
			if err != nil || o.chosen != tt.want || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("chosen %q, err %v, stderr %q; want %q and %q", o.chosen, err, stderr.String(), tt.want, tt.stderr)
			}
			if asked != (tt.engine != "direct" && tt.from == "") {
				t.Errorf("discovery asked: %v", asked)
			}
		})
	}
}

func TestAddResultsSumsPassesOverTheWholeRun(t *testing.T) {
	first := migrate.Result{Total: 100, Rewritten: 98, Conflicts: 1, NotFound: 1, Retries: 2, Seconds: 1, PerSecond: 100}
	second := migrate.Result{Total: 3, Rewritten: 2, Retries: 1, Failed: []migrate.Failure{{Error: "forbidden"}}, Seconds: 0.1}
	got := addResults(first, second, 2*time.Second)
	if got.Total != 103 || got.Rewritten != 100 || got.Conflicts != 1 || got.NotFound != 1 || got.Retries != 3 || len(got.Failed) != 1 {
		t.Errorf("addResults = %+v: counts not summed", got)
	}
	// The rate is over the whole run, failures not counted as done.
	if got.Seconds != 2 || got.PerSecond != 51 {
		t.Errorf("addResults = %.1fs at %.1f objects/s, want 2s at 51/s", got.Seconds, got.PerSecond)
	}
}

// What migrate rewrites: off older transit versions, or off one provider.
func TestMigrateStale(t *testing.T) {
	kms := func(provider string, version int) scan.Stored {
		return scan.Stored{Class: scan.ClassKMSv2, Provider: provider, TransitVersion: version}
	}
	tests := []struct {
		name   string
		o      migrateOptions
		stored scan.Stored
		want   bool
	}{
		{name: "v1 below --transit-version 2 => stale", o: migrateOptions{transitVersion: 2}, stored: kms("vault", 1), want: true},
		{name: "v2 at --transit-version 2 => not stale", o: migrateOptions{transitVersion: 2}, stored: kms("vault", 2)},
		{name: "unknown version (not transit's) => not stale", o: migrateOptions{transitVersion: 2}, stored: kms("vault", 0)},
		{name: "identity => not stale", o: migrateOptions{transitVersion: 2}, stored: scan.Stored{Class: scan.ClassIdentity}},
		{name: "identity with --include-unencrypted => stale", o: migrateOptions{transitVersion: 2, includeUnencrypted: true}, stored: scan.Stored{Class: scan.ClassIdentity}, want: true},
		{name: "under --from-provider, at the newest version => stale", o: migrateOptions{fromProvider: "old"}, stored: kms("old", 7), want: true},
		{name: "under another provider => not stale", o: migrateOptions{fromProvider: "old"}, stored: kms("new", 1)},
		{name: "malformed under --from-provider => not stale (nothing can rewrite it)", o: migrateOptions{fromProvider: "old"}, stored: scan.Stored{Class: scan.ClassMalformed, Provider: "old"}},
		{name: "identity with --from-provider => not stale", o: migrateOptions{fromProvider: "old"}, stored: scan.Stored{Class: scan.ClassIdentity}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.o.stale(tt.stored); got != tt.want {
				t.Errorf("stale(%+v) = %v, want %v", tt.stored, got, tt.want)
			}
		})
	}
}
