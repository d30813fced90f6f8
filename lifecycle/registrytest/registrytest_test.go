//go:build integration

package registrytest_test

import (
	"net/http"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/registrytest"
)

func TestStartServesTheDistributionAPIWithoutReferrers(t *testing.T) {
	r := registrytest.Start(t)
	resp, err := http.Get("http://" + r.Host + "/v2/")
	if err != nil {
		t.Fatalf("GET /v2/: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Fatalf("GET /v2/: %s, API version %q; want 200 and registry/2.0", resp.Status, resp.Header.Get("Docker-Distribution-Api-Version"))
	}
	// Distribution 2.8 has no referrers API: clients must fall back to the
	// sha256-<digest> tag, which is what tests built on this harness cover.
	resp, err = http.Get("http://" + r.Host + "/v2/any/referrers/sha256:" + "0000000000000000000000000000000000000000000000000000000000000000")
	if err != nil {
		t.Fatalf("GET referrers: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("GET /v2/<name>/referrers/<digest>: 200; this harness is meant to be a registry without the referrers API")
	}
}

func TestTwoRegistriesRunSideBySide(t *testing.T) {
	a, b := registrytest.Start(t), registrytest.Start(t)
	if a.Host == b.Host {
		t.Fatalf("both registries on %s", a.Host)
	}
	for _, r := range []*registrytest.Registry{a, b} {
		resp, err := http.Get("http://" + r.Host + "/v2/")
		if err != nil {
			t.Fatalf("GET %s/v2/: %v", r.Host, err)
		}
		resp.Body.Close()
	}
}
