package lifecycle

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
)

// Revision is one rendered configuration of the plugin for one provider:
// what one static pod manifest deploys. Two revisions are the same only if
// every field is: a label reused for another image or other flags is a
// different revision, and the planner refuses it.
type Revision struct {
	// Name is the revision label (kmsctl.vaultkms.io/revision, kms.yaml's
	// revision).
	Name string `json:"name"`
	// Provider is the provider the plugin serves (ProviderName); it also
	// names the socket and the pod.
	Provider string `json:"provider"`
	// ImageDigest is the plugin image's digest, "sha256:<hex>".
	ImageDigest string `json:"imageDigest"`
	// ArgsHash is the sha256 of the plugin's arguments, "sha256:<hex>"
	// (ArgsHash).
	ArgsHash string `json:"argsHash"`
}

// ArgsHash is Revision.ArgsHash of a plugin container's arguments: the
// sha256 of each argument followed by a NUL byte. The terminator keeps
// ["-a b"] apart from ["-a", "b"] and [] apart from [""]; argv cannot hold
// a NUL, so no two argument lists share the bytes hashed. Rendering the
// desired revision and reading a pod back from disk both call this one
// function, so the two can only agree.
func ArgsHash(args []string) string {
	h := sha256.New()
	for _, a := range args {
		h.Write([]byte(a))
		h.Write([]byte{0})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// IsZero reports whether r names no revision.
func (r Revision) IsZero() bool { return r == Revision{} }

// String is the revision as a step or a reason names it: "r2/vault-k-1a2b3c4d".
func (r Revision) String() string { return r.Name + "/" + r.Provider }

// IdentityProvider is the name given to EncryptionConfiguration's identity
// provider (which stores plaintext) in a provider list.
const IdentityProvider = "identity"

// Provider is one entry of an EncryptionConfiguration's provider list. The
// first entry writes; every entry reads.
type Provider struct {
	// Name is a KMS provider's name; other kinds are named by their type
	// (IdentityProvider, "aescbc", ...).
	Name string `json:"name"`
	// KMS says a plugin on the node serves it, so its socket must answer.
	KMS bool `json:"kms,omitempty"`
}

// NodeConfig is what kmsctl writes on one node: the plugin's static pods
// and the provider list of the EncryptionConfiguration. It is both what a
// node has on disk and what a node is rolled back to.
type NodeConfig struct {
	// Pods are the static pod manifests, one per provider, in any order.
	Pods []Revision `json:"pods"`
	// Providers is the EncryptionConfiguration's provider list, in file order.
	Providers []Provider `json:"providers"`
}

// WriteProvider is the name of the provider that writes (the first), or ""
// when the list is empty.
func (c NodeConfig) WriteProvider() string {
	if len(c.Providers) == 0 {
		return ""
	}
	return c.Providers[0].Name
}

// Lists reports whether the provider list names provider.
func (c NodeConfig) Lists(provider string) bool {
	return slices.ContainsFunc(c.Providers, func(p Provider) bool { return p.Name == provider })
}

// Pod returns the static pod of provider.
func (c NodeConfig) Pod(provider string) (Revision, bool) {
	i := slices.IndexFunc(c.Pods, func(r Revision) bool { return r.Provider == provider })
	if i < 0 {
		return Revision{}, false
	}
	return c.Pods[i], true
}

// Equal reports whether c and o are the same pods (in any order) and the
// same provider list (in order).
func (c NodeConfig) Equal(o NodeConfig) bool {
	if len(c.Pods) != len(o.Pods) || !slices.Equal(c.Providers, o.Providers) {
		return false
	}
	for _, r := range c.Pods {
		if p, ok := o.Pod(r.Provider); !ok || p != r {
			return false
		}
	}
	return true
}

// String spells c on one line: "pods r1/a; providers a,identity".
func (c NodeConfig) String() string {
	pods := make([]string, 0, len(c.Pods))
	for _, r := range c.Pods {
		pods = append(pods, r.String())
	}
	slices.Sort(pods)
	names := make([]string, 0, len(c.Providers))
	for _, p := range c.Providers {
		names = append(names, p.Name)
	}
	return "pods " + strings.Join(pods, ",") + "; providers " + strings.Join(names, ",")
}

// Node is what was observed on one control-plane node.
type Node struct {
	// Name is the node's name (nodes.yaml).
	Name string
	// OnDisk is what its manifest directory and EncryptionConfiguration hold.
	OnDisk NodeConfig
	// ConfigHash is the sha256 of the EncryptionConfiguration file's bytes,
	// "sha256:<hex>", as the API server's metric spells it.
	ConfigHash string
	// Plugins is the health of each plugin socket, by provider name; a
	// provider with no entry did not answer.
	Plugins map[string]PluginHealth
	// APIServer is the health of the node's API server.
	APIServer APIServerHealth
}

// PluginHealth is what one plugin socket answered.
type PluginHealth struct {
	// Running is the revision of the process that answered, as the observer
	// could tell it (the pod's labels, image and args); zero if unknown. A
	// socket answering for an older revision says nothing about the new one.
	Running Revision
	// Healthz and KeyID are what Status answered, when it answered.
	Healthz, KeyID string
	// StatusOK: Status answered version v2, healthz ok and a key_id.
	StatusOK bool
	// PreflightOK: an Encrypt then Decrypt round trip returned the plaintext.
	PreflightOK bool
	// Err says what failed, for reasons; never a secret.
	Err string
}

// APIServerHealth is what one API server reported.
type APIServerHealth struct {
	// ReadyzKMS: /readyz?verbose answered and listed kms-providers ok.
	ReadyzKMS bool
	// LoadedConfigHash is the hash in
	// apiserver_encryption_config_controller_last_config_info, or "" when
	// the metric could not be read.
	LoadedConfigHash string
	// Err says what failed, for reasons.
	Err string
}
