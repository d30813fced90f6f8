package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The sidecar runs on every control-plane node beside the API server: keep
// it small and its attack surface narrow. Tests may use the API server's
// client; the binary must not link it, nor cosign (that is kmsctl's job).
func TestSidecarLinksNoClientGoApiserverOrCosign(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps returned %d packages; the check would prove nothing", len(deps))
	}
	forbidden := []string{"k8s.io/client-go", "k8s.io/apiserver", "github.com/sigstore/", "github.com/google/go-containerregistry"}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("vault-kms-plugin links %s", d)
			}
		}
	}
}
