package lifecycle

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
)

// dnsLabel is what a label value and a pod-name segment accept.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// The name is written into every stored value: a change to this function
// that renames an existing key's provider would make the API server unable
// to find the provider for data it already wrote. These values are pinned.
func TestProviderNameIsPinned(t *testing.T) {
	tests := []struct {
		name      string
		addresses []string
		namespace string
		keyPath   string
		want      string
	}{
		{
			name:      "one address, no namespace => pinned name",
			addresses: []string{"https://vault.example.com:8200"},
			keyPath:   "transit/keys/kubernetes",
			want:      "vault-kubernetes-" + hash8("https://vault.example.com:8200|"+"|transit/keys/kubernetes"),
		},
		{
			name:      "three addresses and a namespace => pinned name",
			addresses: []string{"https://vault-3.example.com:8200", "https://vault-1.example.com:8200", "https://vault-2.example.com:8200"},
			namespace: "team-a",
			keyPath:   "kms/prod/keys/etcd-key",
			want: "vault-etcd-key-" + hash8("https://vault-1.example.com:8200,https://vault-2.example.com:8200,https://vault-3.example.com:8200"+
				"|team-a|kms/prod/keys/etcd-key"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ProviderName(tc.addresses, tc.namespace, tc.keyPath); got != tc.want {
				t.Fatalf("ProviderName = %q, want %q", got, tc.want)
			}
		})
	}
	// A literal, so that a change to the hashing itself (not only to this
	// test's helper) fails too.
	if got, want := ProviderName([]string{"https://vault.example.com:8200"}, "", "transit/keys/kubernetes"), "vault-kubernetes-696a2417"; got != want {
		t.Fatalf("ProviderName of the README example = %q, want %q", got, want)
	}
}

func TestProviderNameSameKey(t *testing.T) {
	base := ProviderName([]string{"https://vault-1.example.com:8200", "https://vault-2.example.com:8200"}, "ns", "transit/keys/k")
	tests := []struct {
		name      string
		addresses []string
	}{
		{name: "addresses in another order => same name", addresses: []string{"https://vault-2.example.com:8200", "https://vault-1.example.com:8200"}},
		{name: "upper-case host and scheme => same name", addresses: []string{"HTTPS://Vault-1.Example.com:8200", "https://vault-2.example.com:8200"}},
		{name: "trailing slash => same name", addresses: []string{"https://vault-1.example.com:8200/", "https://vault-2.example.com:8200"}},
		{name: "surrounding spaces => same name", addresses: []string{" https://vault-1.example.com:8200", "https://vault-2.example.com:8200 "}},
		{name: "an address listed twice => same name", addresses: []string{"https://vault-1.example.com:8200", "https://vault-2.example.com:8200", "https://vault-1.example.com:8200"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ProviderName(tc.addresses, "ns", "transit/keys/k"); got != base {
				t.Fatalf("ProviderName = %q, want %q", got, base)
			}
		})
	}
	t.Run("https without a port => same name as :443", func(t *testing.T) {
		a := ProviderName([]string{"https://vault.example.com"}, "", "transit/keys/k")
		b := ProviderName([]string{"https://vault.example.com:443"}, "", "transit/keys/k")
		if a != b {
			t.Fatalf("%q != %q", a, b)
		}
	})
}

func TestProviderNameDifferentKey(t *testing.T) {
	type key struct {
		addresses []string
		namespace string
		keyPath   string
	}
	base := key{addresses: []string{"https://vault.example.com:8200"}, namespace: "ns", keyPath: "transit/keys/k"}
	tests := []struct {
		name  string
		other key
	}{
		{name: "another Vault cluster => another name", other: key{addresses: []string{"https://vault-dr.example.com:8200"}, namespace: "ns", keyPath: "transit/keys/k"}},
		{name: "another port => another name", other: key{addresses: []string{"https://vault.example.com:8300"}, namespace: "ns", keyPath: "transit/keys/k"}},
		{name: "one more node => another name", other: key{addresses: []string{"https://vault.example.com:8200", "https://vault-2.example.com:8200"}, namespace: "ns", keyPath: "transit/keys/k"}},
		{name: "another namespace => another name", other: key{addresses: base.addresses, namespace: "ns2", keyPath: "transit/keys/k"}},
		{name: "no namespace => another name", other: key{addresses: base.addresses, keyPath: "transit/keys/k"}},
		{name: "another mount => another name", other: key{addresses: base.addresses, namespace: "ns", keyPath: "transit2/keys/k"}},
		{name: "nested mount => another name", other: key{addresses: base.addresses, namespace: "ns", keyPath: "a/transit/keys/k"}},
		{name: "another key => another name", other: key{addresses: base.addresses, namespace: "ns", keyPath: "transit/keys/k2"}},
		{name: "key differing only in case => another name", other: key{addresses: base.addresses, namespace: "ns", keyPath: "transit/keys/K"}},
	}
	want := ProviderName(base.addresses, base.namespace, base.keyPath)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ProviderName(tc.other.addresses, tc.other.namespace, tc.other.keyPath); got == want {
				t.Fatalf("ProviderName = %q for both keys", got)
			}
		})
	}
}

func TestProviderNameShape(t *testing.T) {
	tests := []struct {
		name       string
		keyPath    string
		wantPrefix string
	}{
		{name: "plain key => key name kept", keyPath: "transit/keys/kubernetes", wantPrefix: "vault-kubernetes-"},
		{name: "upper case, dots and underscores => lower case and dashes", keyPath: "transit/keys/My_Key.v2", wantPrefix: "vault-my-key-v2-"},
		{name: "leading and repeated separators => trimmed and collapsed", keyPath: "transit/keys/__a..b__", wantPrefix: "vault-a-b-"},
		{name: "nothing usable in the key name => key", keyPath: "transit/keys/___", wantPrefix: "vault-key-"},
		{name: "mount named keys => last /keys/ splits", keyPath: "keys/keys/k", wantPrefix: "vault-k-"},
		{name: "long key name => truncated to fit 63 bytes", keyPath: "transit/keys/" + strings.Repeat("a", 100), wantPrefix: "vault-" + strings.Repeat("a", 48) + "-"},
		{name: "long key name cut after a separator => no dash before the hash", keyPath: "transit/keys/" + strings.Repeat("a", 47) + "_bbb", wantPrefix: "vault-" + strings.Repeat("a", 47) + "-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ProviderName([]string{"https://vault.example.com"}, "", tc.keyPath)
			if !strings.HasPrefix(got, tc.wantPrefix) || len(got) != len(tc.wantPrefix)+8 {
				t.Fatalf("ProviderName = %q, want %q followed by 8 hex digits", got, tc.wantPrefix)
			}
			if len(got) > 63 || !dnsLabel.MatchString(got) {
				t.Fatalf("ProviderName = %q is not a DNS label of at most 63 bytes", got)
			}
			// KMSv2 provider names may not contain ':' (the API server's validation).
			if strings.Contains(got, ":") {
				t.Fatalf("ProviderName = %q contains ':'", got)
			}
		})
	}
}

// hash8 is the first 8 hex digits of s's SHA-256.
func hash8(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:8]
}
