package render

import (
	"path/filepath"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/apis/apiserver/install"
	"k8s.io/apiserver/pkg/apis/apiserver/validation"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
)

// decodeEncryptionConfig reads an EncryptionConfiguration the way
// kube-apiserver's loader does (k8s.io/apiserver/pkg/server/options/
// encryptionconfig: the apiserver scheme's universal decoder, then
// ValidateEncryptionConfiguration), without dialing the plugin.
func decodeEncryptionConfig(t *testing.T, data []byte) (*apiserver.EncryptionConfiguration, error) {
	t.Helper()
	scheme := runtime.NewScheme()
	install.Install(scheme)
	obj, _, err := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDecoder().Decode(data, nil, nil)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	ec, ok := obj.(*apiserver.EncryptionConfiguration)
	if !ok {
		t.Fatalf("decoded a %T", obj)
	}
	return ec, validation.ValidateEncryptionConfiguration(ec, true).ToAggregate()
}

func TestEncryptionConfigLoadsInTheAPIServer(t *testing.T) {
	for _, name := range goldenCases {
		for _, allowUnencrypted := range []bool{false, true} {
			cfg := load(t, filepath.Join("testdata", name, "kms.yaml"))
			cfg.Encryption.AllowUnencrypted = allowUnencrypted
			desc := name + " with identity => kms then identity"
			if !allowUnencrypted {
				desc = name + " without identity => kms alone"
			}
			t.Run(desc, func(t *testing.T) {
				data, err := EncryptionConfig(cfg)
				if err != nil {
					t.Fatal(err)
				}
				ec, err := decodeEncryptionConfig(t, data)
				if err != nil {
					t.Fatalf("the API server refuses it: %v", err)
				}
				if len(ec.Resources) != 1 || !slices.Equal(ec.Resources[0].Resources, cfg.Encryption.Resources) {
					t.Fatalf("resources %+v, want one entry for %q", ec.Resources, cfg.Encryption.Resources)
				}
				ps := ec.Resources[0].Providers
				wantLen := 1
				if allowUnencrypted {
					wantLen = 2
				}
				if len(ps) != wantLen {
					t.Fatalf("%d providers, want %d", len(ps), wantLen)
				}
				kms := ps[0].KMS
				if kms == nil || kms.APIVersion != "v2" || kms.Name != cfg.ProviderName() || kms.Endpoint != "unix://"+cfg.SocketPath() ||
					kms.Timeout == nil || kms.Timeout.Duration != kmsTimeout {
					t.Fatalf("first provider %+v, want KMSv2 %s at %s", ps[0], cfg.ProviderName(), cfg.Endpoint())
				}
				if allowUnencrypted && ps[1].Identity == nil {
					t.Fatalf("last provider %+v, want identity", ps[1])
				}
			})
		}
	}
}

// kms.yaml's resource rules mirror the API server's: what config accepts
// the API server loads, and what it refuses the API server refuses too
// (so kms.yaml is not stricter than it needs to be).
func TestResourceRulesMatchTheAPIServer(t *testing.T) {
	tests := []struct {
		name      string
		resources []string
	}{
		{name: "secrets", resources: []string{"secrets"}},
		{name: "core and grouped", resources: []string{"secrets", "configmaps", "deployments.apps"}},
		{name: "group wildcard", resources: []string{"*.apps", "secrets"}},
		{name: "core wildcard", resources: []string{"*."}},
		{name: "everything", resources: []string{"*.*"}},
		{name: "custom resource", resources: []string{"widgets.example.com"}},
		{name: "duplicate", resources: []string{"secrets", "secrets"}},
		{name: "wildcard over a listed resource", resources: []string{"*.apps", "deployments.apps"}},
		{name: "everything beside another", resources: []string{"*.*", "secrets"}},
		{name: "core wildcard beside a core resource", resources: []string{"*.", "secrets"}},
		{name: "upper case", resources: []string{"Secrets"}},
		{name: "bare star", resources: []string{"*"}},
		{name: "across groups", resources: []string{"secrets.*"}},
		{name: "events group", resources: []string{"events.events.k8s.io"}},
		{name: "extensions group", resources: []string{"deployments.extensions"}},
		{name: "non-REST", resources: []string{"serviceipallocations"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := load(t, filepath.Join("testdata", "dev", "kms.yaml"))
			cfg.Encryption.Resources = tc.resources
			configErr := cfg.Validate()
			// Rendered without Render's validation, as if kms.yaml had let it through.
			data, err := marshalYAML("", EncryptionConfigObject(cfg))
			if err != nil {
				t.Fatal(err)
			}
			_, apiErr := decodeEncryptionConfig(t, data)
			if (configErr == nil) != (apiErr == nil) {
				t.Fatalf("kms.yaml validation: %v\nAPI server: %v\nthey must agree", configErr, apiErr)
			}
			if configErr != nil {
				if _, ok := configErr.(config.Errors); !ok {
					t.Fatalf("Validate returned %T", configErr)
				}
			}
		})
	}
}
