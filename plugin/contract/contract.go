// Package contract holds what the sidecar and kmsctl must agree on without
// sharing code: the flag interface the image declares and the lifecycle
// renders, and the label that carries its version. It imports nothing, so
// both binaries can link it without pulling each other's dependencies.
package contract

// FlagInterfaceLabel is the OCI image label (config Labels) that declares
// which argument list the image's entrypoint accepts. kmsctl verify-image
// refuses an image whose label differs from FlagInterfaceVersion, so a
// plugin expecting other flags never starts with the rendered arguments.
const FlagInterfaceLabel = "io.github.vaultkms.kms-plugin.flag-interface"

// FlagInterfaceVersion names the flag set below. Bump it when a flag that
// kmsctl render passes is renamed, removed, or changes meaning.
const FlagInterfaceVersion = "v1"

// RenderedFlags are the flags kmsctl render may pass to the plugin: exactly
// the set OpenShift's KMS plugin lifecycle passes to a Vault KMS sidecar
// (openshift/library-go pkg/operator/encryption/kms/pluginlifecycle/vault.go),
// so one image serves both. Every version of the plugin that declares
// FlagInterfaceVersion accepts all of them.
var RenderedFlags = []string{
	"listen-address",
	"vault-address",
	"vault-key-path",
	"approle-role-id",
	"approle-secret-id-path",
	"tls-ca-file",
	"tls-sni",
	"vault-namespace",
	"vault-auth-namespace",
	"metrics-port",
}

// PrepareFlags are the flags of the plugin's one-shot preparation mode,
// which kmsctl render runs as a root init container with only CAP_CHOWN: it
// creates the hostPath socket directory (kubelet makes it root 0755) and
// hands it to the plugin's non-root user, then exits. Part of
// FlagInterfaceVersion like RenderedFlags.
var PrepareFlags = []string{
	"prepare-socket-dir",       // absolute directory to create (mode 0750)
	"prepare-socket-dir-owner", // UID:GID to own it
}
