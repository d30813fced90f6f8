package render

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
)

// kmsTimeout is the API server's per-call deadline for the plugin, its
// default made explicit.
const kmsTimeout = 3 * time.Second

// EncryptionConfigObject is the API server's EncryptionConfiguration: the
// configured resources written through the key's KMSv2 provider, and
// identity after it only when the config says some data may still be
// stored unencrypted. Without identity, an object stored in plaintext
// cannot be read; with it, nothing proves that everything is encrypted.
func EncryptionConfigObject(cfg *config.Config) *apiserverv1.EncryptionConfiguration {
	providers := []apiserverv1.ProviderConfiguration{KMSProvider(cfg)}
	if cfg.Encryption.AllowUnencrypted {
		providers = append(providers, apiserverv1.ProviderConfiguration{Identity: &apiserverv1.IdentityConfiguration{}})
	}
	return &apiserverv1.EncryptionConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "apiserver.config.k8s.io/v1", Kind: "EncryptionConfiguration"},
		Resources: []apiserverv1.ResourceConfiguration{{
			Resources: append([]string(nil), cfg.Encryption.Resources...),
			Providers: providers,
		}},
	}
}

// KMSProvider is the key's entry in an EncryptionConfiguration provider
// list: the one EncryptionConfigObject writes with, and the one `kmsctl
// rollout` adds read-only to a node's existing file.
func KMSProvider(cfg *config.Config) apiserverv1.ProviderConfiguration {
	return apiserverv1.ProviderConfiguration{
		KMS: &apiserverv1.KMSConfiguration{
			APIVersion: "v2",
			Name:       cfg.ProviderName(),
			Endpoint:   cfg.Endpoint(),
			Timeout:    &metav1.Duration{Duration: kmsTimeout},
		},
	}
}

// EncryptionConfig renders EncryptionConfigObject with its header.
func EncryptionConfig(cfg *config.Config) ([]byte, error) {
	identity := "No identity provider: every object of these resources must already be encrypted."
	if cfg.Encryption.AllowUnencrypted {
		identity = "identity stays last, so objects stored before encryption was enabled remain readable until they are rewritten."
	}
	header := comment(
		fmt.Sprintf("EncryptionConfiguration for kube-apiserver: %s are written through the Vault KMS plugin", strings.Join(cfg.Encryption.Resources, ", ")),
		fmt.Sprintf("with transit key %s (provider %s).", cfg.Vault.VaultKeyPath, cfg.ProviderName()),
		identity,
		generatedBy,
		"",
		"The provider name is derived from the key and is part of every value the API server",
		"stores: never rename it. Pass this file with --encryption-provider-config and",
		"--encryption-provider-config-automatic-reload.",
	)
	return marshalYAML(header, EncryptionConfigObject(cfg))
}
