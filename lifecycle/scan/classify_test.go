package scan

import (
	"fmt"
	"testing"

	kmsv2api "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan/scantest"
)

const testProvider = scantest.Provider

// keyID builds a key_id of the plugin's form for transit/kubernetes.
func keyID(version int) string { return scantest.KeyID(scantest.TransitKey, version) }

// kmsv2Value builds a value as kube-apiserver stores it through a KMSv2
// provider: the prefix and a marshalled EncryptedObject.
func kmsv2Value(provider, keyID, dekSource string) []byte {
	return scantest.KMSv2Value(provider, keyID, dekSource)
}

func kmsv2ValueObj(provider string, obj *kmsv2api.EncryptedObject) []byte {
	return scantest.KMSv2ValueObj(provider, obj)
}

// dekSource is a transit ciphertext for version v.
func dekSource(v int) string { return scantest.DEKSource(v) }

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		value []byte
		want  Stored
	}{
		{
			name:  "kms v2 value of this plugin => provider, key_id, transit key and version",
			value: kmsv2Value(testProvider, keyID(3), dekSource(3)),
			want: Stored{Class: ClassKMSv2, Provider: testProvider, KeyID: keyID(3), TransitKey: "transit/kubernetes",
				TransitVersion: 3, DEKSourceType: "HKDF_SHA256_XNONCE_AES_GCM_SEED"},
		},
		{
			name: "kms v2 with an AES_GCM_KEY DEK source => that type",
			value: kmsv2ValueObj(testProvider, &kmsv2api.EncryptedObject{EncryptedData: []byte("x"), KeyID: keyID(12),
				EncryptedDEKSource: []byte(dekSource(12)), EncryptedDEKSourceType: kmsv2api.EncryptedDEKSourceType_AES_GCM_KEY}),
			want: Stored{Class: ClassKMSv2, Provider: testProvider, KeyID: keyID(12), TransitKey: "transit/kubernetes",
				TransitVersion: 12, DEKSourceType: "AES_GCM_KEY"},
		},
		{
			name:  "kms v2 of another plugin => key_id kept, transit key and version unknown",
			value: kmsv2Value("azure", "https://kv.example/keys/k/123", "opaque-wrapped-seed"),
			want:  Stored{Class: ClassKMSv2, Provider: "azure", KeyID: "https://kv.example/keys/k/123", DEKSourceType: "HKDF_SHA256_XNONCE_AES_GCM_SEED"},
		},
		{
			name:  "mount with a colon => parsed from the right",
			value: kmsv2Value(testProvider, "vault-transit:a:b/k:v2:ff", dekSource(2)),
			want:  Stored{Class: ClassKMSv2, Provider: testProvider, KeyID: "vault-transit:a:b/k:v2:ff", TransitKey: "a:b/k", TransitVersion: 2, DEKSourceType: "HKDF_SHA256_XNONCE_AES_GCM_SEED"},
		},
		{
			name:  "key_id of the default metadata mode (creation time) => parsed",
			value: kmsv2Value(testProvider, "vault-transit:transit/kubernetes:v3:1795459705", dekSource(3)),
			want:  Stored{Class: ClassKMSv2, Provider: testProvider, KeyID: "vault-transit:transit/kubernetes:v3:1795459705", TransitKey: "transit/kubernetes", TransitVersion: 3, DEKSourceType: "HKDF_SHA256_XNONCE_AES_GCM_SEED"},
		},
		{
			name:  "DEK source version with a leading zero => unknown version",
			value: kmsv2Value(testProvider, keyID(1), "vault:v01:abc"),
			want:  Stored{Class: ClassKMSv2, Provider: testProvider, KeyID: keyID(1), TransitKey: "transit/kubernetes", DEKSourceType: "HKDF_SHA256_XNONCE_AES_GCM_SEED"},
		},
		{
			name:  "key_id without hex fingerprint => not this plugin's",
			value: kmsv2Value(testProvider, "vault-transit:transit/kubernetes:v1:xyz", dekSource(1)),
			want:  Stored{Class: ClassKMSv2, Provider: testProvider, KeyID: "vault-transit:transit/kubernetes:v1:xyz", TransitVersion: 1, DEKSourceType: "HKDF_SHA256_XNONCE_AES_GCM_SEED"},
		},
		{
			name:  "garbage after the kms v2 prefix => malformed, undecodable",
			value: []byte("k8s:enc:kms:v2:" + testProvider + ":\xff\xff\xff\xff"),
			want:  Stored{Class: ClassMalformed, Provider: testProvider, Reason: ReasonUndecodable},
		},
		{
			name:  "empty EncryptedObject => malformed, no key_id",
			value: []byte("k8s:enc:kms:v2:" + testProvider + ":"),
			want:  Stored{Class: ClassMalformed, Provider: testProvider, Reason: ReasonNoKeyID},
		},
		{
			name:  "no DEK source => malformed",
			value: kmsv2ValueObj(testProvider, &kmsv2api.EncryptedObject{EncryptedData: []byte("x"), KeyID: keyID(1)}),
			want:  Stored{Class: ClassMalformed, Provider: testProvider, Reason: ReasonNoEncryptedDEK},
		},
		{
			name:  "no data => malformed",
			value: kmsv2ValueObj(testProvider, &kmsv2api.EncryptedObject{KeyID: keyID(1), EncryptedDEKSource: []byte(dekSource(1))}),
			want:  Stored{Class: ClassMalformed, Provider: testProvider, Reason: ReasonNoEncryptedData},
		},
		{
			name: "unknown DEK source type => malformed",
			value: kmsv2ValueObj(testProvider, &kmsv2api.EncryptedObject{EncryptedData: []byte("x"), KeyID: keyID(1),
				EncryptedDEKSource: []byte(dekSource(1)), EncryptedDEKSourceType: 7}),
			want: Stored{Class: ClassMalformed, Provider: testProvider, Reason: ReasonUnknownDEKSrcType},
		},
		{
			name:  "kms v2 prefix without a provider name => malformed",
			value: []byte("k8s:enc:kms:v2:"),
			want:  Stored{Class: ClassMalformed, Reason: ReasonNoProviderName},
		},
		{
			name:  "kms v2 prefix with an empty provider name => malformed",
			value: []byte("k8s:enc:kms:v2::abc"),
			want:  Stored{Class: ClassMalformed, Reason: ReasonNoProviderName},
		},
		{name: "kms v1 => its provider", value: []byte("k8s:enc:kms:v1:old-kms:\x00\x10ciphertext"), want: Stored{Class: ClassKMSv1, Provider: "old-kms"}},
		{name: "aescbc => its provider", value: []byte("k8s:enc:aescbc:v1:key1:0123456789abcdef"), want: Stored{Class: ClassAESCBC, Provider: "key1"}},
		{name: "aesgcm => its provider", value: []byte("k8s:enc:aesgcm:v1:key2:nonce+ct"), want: Stored{Class: ClassAESGCM, Provider: "key2"}},
		{name: "secretbox => its provider", value: []byte("k8s:enc:secretbox:v1:key3:ct"), want: Stored{Class: ClassSecretbox, Provider: "key3"}},
		{name: "aescbc without a name => malformed", value: []byte("k8s:enc:aescbc:v1:"), want: Stored{Class: ClassMalformed, Reason: ReasonNoProviderName}},
		{name: "protobuf object => identity", value: []byte("k8s\x00\n\x0c\n\x02v1\x12\x06Secret"), want: Stored{Class: ClassIdentity}},
		{name: "JSON object => identity", value: []byte(`{"kind":"Secret","apiVersion":"v1"}`), want: Stored{Class: ClassIdentity}},
		{name: "empty value => identity", value: nil, want: Stored{Class: ClassIdentity}},
		{name: "unknown encryption version => identity", value: []byte("k8s:enc:kms:v3:p:x"), want: Stored{Class: ClassIdentity}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.value); got != tt.want {
				t.Errorf("Classify =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(kmsv2Value(testProvider, keyID(1), dekSource(1)))
	f.Add(kmsv2Value("p", "vault-transit:a:b:v2:ff", "vault:v2:"))
	f.Add([]byte("k8s:enc:kms:v2:p:\x0a\xff"))
	f.Add([]byte("k8s:enc:kms:v2:"))
	f.Add([]byte("k8s:enc:aescbc:v1:k:abc"))
	f.Add([]byte("k8s\x00abc"))
	f.Fuzz(func(t *testing.T, value []byte) {
		s := Classify(value)
		if _, ok := classRank[s.Class]; !ok {
			t.Fatalf("unknown class %q", s.Class)
		}
		if (s.Class == ClassMalformed) != (s.Reason != "") {
			t.Fatalf("class %q with reason %q", s.Class, s.Reason)
		}
		if s.TransitVersion < 0 || (s.TransitKey != "" && s.Class != ClassKMSv2) {
			t.Fatalf("inconsistent %+v", s)
		}
	})
}

func TestKeyPrefix(t *testing.T) {
	tests := []struct {
		prefix, resource, want string
	}{
		{"/registry", "secrets", "/registry/secrets/"},
		{"/registry", "configmaps", "/registry/configmaps/"},
		{"/registry", "services", "/registry/services/specs/"},
		{"/registry", "endpoints", "/registry/services/endpoints/"},
		{"/registry", "nodes", "/registry/minions/"},
		{"/registry", "replicationcontrollers", "/registry/controllers/"},
		{"/registry", "ingresses.networking.k8s.io", "/registry/ingress/"},
		{"/registry", "deployments.apps", "/registry/deployments/"},
		{"/registry", "cronjobs.batch", "/registry/cronjobs/"},
		{"/registry", "clusterroles.rbac.authorization.k8s.io", "/registry/clusterroles/"},
		{"/registry", "newthings.apps", "/registry/newthings/"},
		{"/registry", "customresourcedefinitions.apiextensions.k8s.io", "/registry/apiextensions.k8s.io/customresourcedefinitions/"},
		{"/registry", "apiservices.apiregistration.k8s.io", "/registry/apiregistration.k8s.io/apiservices/"},
		{"/registry", "widgets.example.com", "/registry/example.com/widgets/"},
		{"/registry", "httproutes.gateway.networking.k8s.io", "/registry/gateway.networking.k8s.io/httproutes/"},
		{"/kubernetes.io/", "secrets", "/kubernetes.io/secrets/"},
		{"registry", "secrets", "/registry/secrets/"},
		{"/", "secrets", "/secrets/"},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+" "+tt.resource+" => "+tt.want, func(t *testing.T) {
			got, err := KeyPrefix(tt.prefix, tt.resource)
			if err != nil || got != tt.want {
				t.Errorf("KeyPrefix(%q, %q) = %q, %v; want %q", tt.prefix, tt.resource, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "*.*", "*.apps", "Secrets", "secrets/x"} {
		t.Run(fmt.Sprintf("%q => refused", bad), func(t *testing.T) {
			if got, err := KeyPrefix("/registry", bad); err == nil {
				t.Errorf("KeyPrefix(%q) = %q, want an error", bad, got)
			}
		})
	}
}
