package config

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// FieldError is one invalid field, named by its YAML path.
type FieldError struct {
	Field string // e.g. vault.vaultAddress
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Errors are all the invalid fields of a Config, in file order; Error
// prints one per line.
type Errors []*FieldError

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, fe := range e {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Fields returns the names of the invalid fields.
func (e Errors) Fields() []string {
	out := make([]string, len(e))
	for i, fe := range e {
		out[i] = fe.Field
	}
	return out
}

// OpenShift's rules (config.openshift.io/v1 VaultKMSPluginConfig), in Go.
var (
	imageNameRE  = regexp.MustCompile(`^([a-zA-Z0-9-]+\.)+[a-zA-Z0-9-]+(:[0-9]{2,5})?(/[a-zA-Z0-9._-]+)+$`)
	imageDigest  = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
	keyPathChars = regexp.MustCompile(`^[a-zA-Z0-9._~/-]+$`)
	keyPathShape = regexp.MustCompile(`^[a-zA-Z0-9._~-]+(/[a-zA-Z0-9._~-]+)*/keys/[a-zA-Z0-9_]([a-zA-Z0-9_.-]*[a-zA-Z0-9_])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

var (
	// vaultName is what Vault keeps as written for role and policy names
	// (it lower-cases them, so upper case would not round-trip).
	vaultName = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)
	// labelValue is a Kubernetes label value.
	labelValue = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	// resourceName is an EncryptionConfiguration resource: resource[.group],
	// with * for any resource of a group (*. is the core group) and *.* for
	// all.
	resourceName = regexp.MustCompile(`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)?)?$`)
)

// reservedNamespaces may not be used as a Vault namespace (OpenShift's rule).
var reservedNamespaces = []string{"root", "sys", "audit", "auth", "cubbyhole", "identity"}

// sharedDirs are directories other software relies on. The socket and
// credentials directories are chowned and chmod'ed for the plugin, so they
// must be directories of their own.
var sharedDirs = []string{
	"/", "/bin", "/boot", "/dev", "/etc", "/etc/kubernetes", "/etc/kubernetes/manifests",
	"/etc/kubernetes/pki", "/home", "/lib", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin",
	"/srv", "/sys", "/tmp", "/usr", "/usr/local", "/var", "/var/lib", "/var/lib/kubelet",
	"/var/run", "/var/tmp",
}

// maxSocketPath is the longest unix socket path: sun_path is 108 bytes
// including the terminating NUL.
const maxSocketPath = 107

// Validate checks the configuration as OpenShift's API validates the same
// fields, plus what the node side needs. It returns Errors (one line per
// invalid field) or nil.
func (c *Config) Validate() error {
	var errs Errors
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}

	if c.APIVersion != APIVersion {
		add("apiVersion", "must be %q, not %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		add("kind", "must be %q, not %q", Kind, c.Kind)
	}

	v := &c.Vault
	if msg := imageProblem(v.KMSPluginImage); msg != "" {
		add("vault.kmsPluginImage", "%s", msg)
	}
	addressesOK := true
	if len(v.Addresses()) == 0 {
		add("vault.vaultAddress", "is required: https://host[:port], or a comma-separated list of the Vault cluster's nodes")
		addressesOK = false
	}
	seen := map[string]bool{}
	for _, a := range v.Addresses() {
		if msg := addressProblem(a, v.InsecureAllowHTTPLoopback); msg != "" {
			add("vault.vaultAddress", "%q %s", a, msg)
			addressesOK = false
			continue
		}
		if seen[strings.ToLower(a)] {
			add("vault.vaultAddress", "%q is listed twice", a)
		}
		seen[strings.ToLower(a)] = true
	}
	if msg := namespaceProblem(v.VaultNamespace); msg != "" {
		add("vault.vaultNamespace", "%q %s", v.VaultNamespace, msg)
	}
	if msg := namespaceProblem(v.VaultAuthNamespace); msg != "" {
		add("vault.vaultAuthNamespace", "%q %s", v.VaultAuthNamespace, msg)
	} else if a, t := v.VaultAuthNamespace, v.VaultNamespace; a != "" && a != t && !strings.HasPrefix(t, a+"/") {
		add("vault.vaultAuthNamespace", "%q must be vault.vaultNamespace (%q) or one of its parents: a token reaches only its own namespace and those below it", a, t)
	}
	if p := v.TLS.CABundlePath; p != "" {
		if msg := pathProblem(p); msg != "" {
			add("vault.tls.caBundlePath", "%q %s", p, msg)
		}
	}
	if n := v.TLS.ServerName; n != "" && (len(n) > 253 || !dnsSubdomain.MatchString(n)) {
		add("vault.tls.serverName", "%q must be a DNS name: lower-case letters, digits, '-' and '.', at most 253 characters", n)
	}
	if v.Authentication.Type != AuthTypeAppRole {
		add("vault.authentication.type", "must be %q, not %q", AuthTypeAppRole, v.Authentication.Type)
	}
	ar := &v.Authentication.AppRole
	if msg := roleIDProblem(ar.RoleID); msg != "" {
		add("vault.authentication.appRole.roleID", "%s", msg)
	}
	credsDir := ""
	if msg := pathProblem(ar.SecretIDPath); msg != "" {
		add("vault.authentication.appRole.secretIDPath", "%q %s", ar.SecretIDPath, msg)
	} else if d := ar.CredentialsDir(); slices.Contains(sharedDirs, d) {
		add("vault.authentication.appRole.secretIDPath", "%q must be in a directory of its own, not %s: vault-setup.sh makes that directory 0750 root:<node.pluginGID>", ar.SecretIDPath, d)
	} else {
		credsDir = d
	}
	for _, f := range []struct{ field, value string }{
		{"vault.authentication.appRole.roleName", ar.RoleName},
		{"vault.authentication.appRole.policyName", ar.PolicyName},
	} {
		switch {
		case f.value == "":
			add(f.field, "is required")
		case !vaultName.MatchString(f.value) || len(f.value) > 128:
			add(f.field, "%q must be lower-case letters, digits, '.', '_' and '-', at most 128 characters", f.value)
		case f.value == "root" || f.value == "default":
			add(f.field, "%q is one of Vault's built-in policies", f.value)
		}
	}
	keyOK := false
	if msg := keyPathProblem(v.VaultKeyPath); msg != "" {
		add("vault.vaultKeyPath", "%s", msg)
	} else if len(v.KeyMount())+len(v.KeyName()) > 512 {
		add("vault.vaultKeyPath", "mount and key name together must be at most 512 bytes: both appear in every key_id")
	} else {
		keyOK = true
	}

	n := &c.Node
	if msg := pathProblem(n.SocketDir); msg != "" {
		add("node.socketDir", "%q %s", n.SocketDir, msg)
	} else if slices.Contains(sharedDirs, n.SocketDir) {
		add("node.socketDir", "%q must be a directory of its own: the plugin's init container makes it 0750 and owned by the plugin's user", n.SocketDir)
	} else if n.SocketDir == credsDir {
		add("node.socketDir", "%q must not be the credentials directory (the directory of vault.authentication.appRole.secretIDPath)", n.SocketDir)
	} else if addressesOK && keyOK && len(c.SocketPath()) > maxSocketPath {
		add("node.socketDir", "%q is too long: the socket path %s must be at most %d bytes", n.SocketDir, c.SocketPath(), maxSocketPath)
	}
	if msg := pathProblem(n.ManifestDir); msg != "" {
		add("node.manifestDir", "%q %s", n.ManifestDir, msg)
	}
	if n.PluginUID <= 0 || n.PluginUID > 1<<31-1 {
		add("node.pluginUID", "must be a non-root user ID between 1 and 2147483647, not %d", n.PluginUID)
	}
	if n.PluginGID <= 0 || n.PluginGID > 1<<31-1 {
		add("node.pluginGID", "must be a non-root group ID between 1 and 2147483647, not %d", n.PluginGID)
	}
	if n.MetricsPort < 1 || n.MetricsPort > 65535 {
		add("node.metricsPort", "must be between 1 and 65535, not %d: the probes need /livez and /readyz", n.MetricsPort)
	}

	if len(c.Encryption.Resources) == 0 {
		add("encryption.resources", "must list at least one resource (for example secrets)")
	}
	for i, r := range c.Encryption.Resources {
		if msg := resourceProblem(r); msg != "" {
			add(fmt.Sprintf("encryption.resources[%d]", i), "%q %s", r, msg)
		}
	}
	if msg := resourceOverlap(c.Encryption.Resources); msg != "" {
		add("encryption.resources", "%s", msg)
	}

	if c.Revision == "" {
		add("revision", "is required: it labels the rendered pods (for example \"1\")")
	} else if len(c.Revision) > 63 || !labelValue.MatchString(c.Revision) {
		add("revision", "%q must be a label value: at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", c.Revision)
	}

	if len(errs) > 0 {
		return errs
	}
	return nil
}

func imageProblem(img string) string {
	const want = "host[:port]/name@sha256:<64 lower-case hex digits>"
	if img == "" {
		return "is required: the plugin image pinned by digest, " + want
	}
	name, digest, ok := strings.Cut(img, "@")
	switch {
	case !ok:
		return fmt.Sprintf("%q must be pinned by digest (%s); a tag is refused", img, want)
	case !imageDigest.MatchString(digest):
		return fmt.Sprintf("%q must end with @sha256:<64 lower-case hex digits>", img)
	case !imageNameRE.MatchString(name):
		if i := strings.LastIndex(name, "/"); i >= 0 && strings.Contains(name[i:], ":") {
			return fmt.Sprintf("%q must be pinned by digest alone (%s); a tag is refused", img, want)
		}
		return fmt.Sprintf("%q must be %s: a registry host with at least one dot is required, short names are refused", img, want)
	case len(img) < 75 || len(img) > 447:
		return fmt.Sprintf("%q must be between 75 and 447 characters", img)
	}
	return ""
}

func addressProblem(a string, allowHTTPLoopback bool) string {
	const want = "must be https://host[:port] with no path"
	if len(a) > 512 {
		return want + ", at most 512 characters"
	}
	u, err := url.Parse(a)
	if err != nil || u.Host == "" || u.Hostname() == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
		strings.Contains(a, "#") || (u.Path != "" && u.Path != "/") || u.Opaque != "" {
		return want
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		switch {
		case !isLoopback(u.Hostname()):
			return want + " (plain http is allowed only for a loopback host)"
		case !allowHTTPLoopback:
			return want + " (plain http to a loopback host needs vault.insecureAllowHTTPLoopback: true)"
		}
		return ""
	}
	return want
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func namespaceProblem(ns string) string {
	switch {
	case ns == "":
		return ""
	case len(ns) > 4096:
		return "must be at most 4096 characters"
	case strings.HasPrefix(ns, "/") || strings.HasSuffix(ns, "/"):
		return "must not start or end with a forward slash"
	case strings.Contains(ns, "//"):
		return "must not contain consecutive forward slashes"
	case strings.IndexFunc(ns, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return "must not contain spaces"
	case slices.Contains(reservedNamespaces, ns):
		return "is reserved (root, sys, audit, auth, cubbyhole, identity)"
	}
	return ""
}

func keyPathProblem(p string) string {
	const want = "must be <mount>/keys/<key name>, for example transit/keys/kubernetes"
	switch {
	case p == "":
		return "is required: " + want[len("must be "):]
	case len(p) < 8 || len(p) > 1542:
		return fmt.Sprintf("%q must be between 8 and 1542 characters", p)
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/"):
		return fmt.Sprintf("%q must not start or end with a forward slash", p)
	case strings.Contains(p, "//"):
		return fmt.Sprintf("%q must not contain consecutive forward slashes", p)
	case !keyPathChars.MatchString(p):
		return fmt.Sprintf("%q must only contain letters, digits, '-', '.', '_', '~' and '/'", p)
	case slices.ContainsFunc(strings.Split(p, "/"), func(s string) bool { return s == "." || s == ".." }):
		return fmt.Sprintf("%q must not contain '.' or '..' segments", p)
	case !keyPathShape.MatchString(p):
		return fmt.Sprintf("%q %s; the key name starts and ends with a letter, digit or '_'", p, want)
	}
	return ""
}

func roleIDProblem(id string) string {
	switch {
	case id == "":
		return "is required: the AppRole role ID (not a secret; vault-setup.sh sets the role to it)"
	case len(id) > 512:
		return "must be at most 512 characters"
	case strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return "must not contain spaces or control characters"
	case strings.HasPrefix(id, "@") || strings.HasPrefix(id, "-"):
		// The vault CLI reads key=@file from a file and key=- from stdin.
		return "must not start with '@' or '-'"
	}
	return ""
}

func pathProblem(p string) string {
	switch {
	case p == "":
		return "is required: an absolute path"
	case !path.IsAbs(p):
		return "must be an absolute path"
	case path.Clean(p) != p:
		return fmt.Sprintf("must be a clean path (%s)", path.Clean(p))
	case p == "/":
		return "must not be /"
	case strings.IndexFunc(p, unicode.IsControl) >= 0:
		return "must not contain control characters"
	}
	return ""
}

// resourceProblem applies the API server's rules for one resource name
// (k8s.io/apiserver validation of EncryptionConfiguration).
func resourceProblem(r string) string {
	switch {
	case r == "":
		return "must not be empty"
	case strings.ToLower(r) != r:
		return "must be lower case"
	case r == "*":
		return "is not accepted by the API server: use *.* for every resource"
	case r == "apiserveripinfo" || r == "serviceipallocations" || r == "servicenodeportallocations":
		return "is not a REST resource and cannot be encrypted"
	case !resourceName.MatchString(r):
		return "must be resource[.group], *.group or *.*"
	}
	res, group, _ := strings.Cut(r, ".")
	switch {
	case group == "events.k8s.io":
		return "cannot be encrypted (events.k8s.io)"
	case group == "extensions":
		return "cannot be encrypted (the extensions group)"
	case group == "*" && res != "*":
		return "must name a group: resource.* is refused"
	}
	return ""
}

// resourceOverlap refuses duplicates and wildcards that cover another
// listed resource, as the API server does.
func resourceOverlap(rs []string) string {
	type gr struct{ group, resource string }
	parsed := make([]gr, len(rs))
	for i, r := range rs {
		res, group, _ := strings.Cut(r, ".")
		parsed[i] = gr{group: group, resource: res}
	}
	for i, a := range parsed {
		for j, b := range parsed {
			switch {
			case i >= j:
			case a == b:
				return fmt.Sprintf("%q is listed twice", rs[j])
			case a == gr{"*", "*"} || b == gr{"*", "*"}:
				return fmt.Sprintf("%q and %q overlap: *.* covers every resource", rs[i], rs[j])
			case a.group == b.group && (a.resource == "*" || b.resource == "*"):
				return fmt.Sprintf("%q and %q overlap", rs[i], rs[j])
			}
		}
	}
	return ""
}
