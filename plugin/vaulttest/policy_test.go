package vaulttest

import (
	"os"
	"testing"
)

// The policy users copy from manifests/ must be the one the integration
// tests prove sufficient.
func TestManifestPolicyIsTheTestedPolicy(t *testing.T) {
	b, err := os.ReadFile("../../manifests/vault-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), Policy("transit", "kubernetes"); got != want {
		t.Fatalf("manifests/vault-policy.hcl differs from vaulttest.Policy(\"transit\", \"kubernetes\"):\n--- file\n%s\n--- tested\n%s", got, want)
	}
}
