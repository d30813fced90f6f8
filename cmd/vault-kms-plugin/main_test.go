package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/plugin"
	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

func TestBadFlagsExit2WithOneLine(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret-id")
	if err := os.WriteFile(secret, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := []string{
		"-listen-address=unix://" + filepath.Join(dir, "kms.sock"),
		"-vault-address=http://127.0.0.1:8200",
		"-transit-key=k",
		"-approle-role-id=r",
		"-approle-secret-id-path=" + secret,
	}
	// without returns good minus the flag with that prefix, plus extra.
	without := func(prefix string, extra ...string) []string {
		var out []string
		for _, a := range good {
			if !strings.HasPrefix(a, prefix) {
				out = append(out, a)
			}
		}
		return append(out, extra...)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no listen address => error", args: without("-listen-address"), want: "-listen-address is required"},
		{name: "listen address without unix scheme => error", args: without("-listen-address", "-listen-address=/tmp/kms.sock"), want: "unix:///absolute/path.sock"},
		{name: "relative socket path => error", args: without("-listen-address", "-listen-address=unix://kms.sock"), want: "unix:///absolute/path.sock"},
		{name: "no vault address => error", args: without("-vault-address"), want: "-vault-address is required"},
		{name: "vault address without scheme => error", args: without("-vault-address", "-vault-address=vault:8200"), want: "not an http(s)://host:port"},
		{name: "vault address with credentials => error", args: without("-vault-address", "-vault-address=https://u:p@vault:8200"), want: "not an http(s)://host:port"},
		{name: "duplicate vault address => error", args: without("-vault-address", "-vault-address=http://a:1,http://a:1"), want: "twice"},
		{name: "no transit key => error", args: without("-transit-key"), want: "-transit-key (or -vault-key-path=<mount>/keys/<name>) is required"},
		{name: "empty transit mount => error", args: append(good, "-transit-mount=/"), want: "-transit-mount must not be empty"},
		{name: "no credentials => error", args: without("-approle"), want: "no Vault credentials"},
		{name: "approle and token file => error", args: append(good, "-vault-token-path="+secret), want: "not both"},
		{name: "role id and role id path => error", args: append(good, "-approle-role-id-path="+secret), want: "either -approle-role-id or -approle-role-id-path"},
		{name: "secret id path without role id => error", args: without("-approle-role-id"), want: "needs -approle-role-id"},
		{name: "role id without secret id path => error", args: without("-approle-secret-id-path"), want: "-approle-secret-id-path is required"},
		{name: "unreadable secret id file => error", args: without("-approle-secret-id-path", "-approle-secret-id-path="+filepath.Join(dir, "nope")), want: "-approle-secret-id-path: open"},
		{name: "unreadable token file => error", args: []string{good[0], good[1], good[2], "-vault-token-path=" + filepath.Join(dir, "nope")}, want: "-vault-token-path: open"},
		{name: "client cert without key => error", args: append(good, "-tls-client-cert="+secret), want: "given together"},
		{name: "unreadable CA file => error", args: append(good, "-tls-ca-file="+filepath.Join(dir, "ca.pem")), want: "-tls-ca-file: open"},
		{name: "metrics port out of range => error", args: append(good, "-metrics-port=70000"), want: "-metrics-port must be between"},
		{name: "zero refresh interval => error", args: append(good, "-status-refresh-interval=0s"), want: "-status-refresh-interval must be at least"},
		{name: "unknown log level => error", args: append(good, "-log-level=loud"), want: "-log-level must be"},
		{name: "unknown socket group => error", args: append(good, "-socket-group=no-such-group-xyz"), want: "-socket-group: no group"},
		{name: "secret id as a flag => refused with a hint", args: append(good, "-approle-secret-id=hunter2"), want: "never taken as flags"},
		{name: "unknown flag => error", args: append(good, "-bogus"), want: "flag provided but not defined: -bogus"},
		{name: "batch size zero => error", args: append(good, "-batch-max-size=0"), want: "-batch-max-size must be between"},
		{name: "batch in flight zero => error", args: append(good, "-batch-max-in-flight=0"), want: "-batch-max-in-flight must be at least 1"},
		{name: "negative batch window => error", args: append(good, "-batch-window=-1ms"), want: "-batch-window must be between"},
		{name: "positional argument => error", args: append(good, "extra"), want: "unexpected argument"},
		{name: "key path beside transit key => error", args: append(good, "-vault-key-path=transit/keys/k"), want: "drop -transit-mount and -transit-key"},
		{name: "key path beside an explicit default transit mount => error", args: append(without("-transit-key"), "-transit-mount=transit", "-vault-key-path=transit/keys/k"), want: "drop -transit-mount"},
		{name: "key path without /keys/ => error", args: append(without("-transit-key"), "-vault-key-path=transit/k"), want: "<mount>/keys/<name>"},
		{name: "key path without a mount => error", args: append(without("-transit-key"), "-vault-key-path=keys/k"), want: "<mount>/keys/<name>"},
		{name: "key path without a name => error", args: append(without("-transit-key"), "-vault-key-path=transit/keys/"), want: "<mount>/keys/<name>"},
		{name: "key path with a nested name => error", args: append(without("-transit-key"), "-vault-key-path=transit/keys/a/b"), want: "<mount>/keys/<name>"},
		{name: "prepare without owner => error", args: []string{"-prepare-socket-dir=/run/kms"}, want: "must be given together"},
		{name: "prepare with a relative dir => error", args: []string{"-prepare-socket-dir=run/kms", "-prepare-socket-dir-owner=1:1"}, want: "absolute path"},
		{name: "prepare for root => error", args: []string{"-prepare-socket-dir=/run/kms", "-prepare-socket-dir-owner=0:0"}, want: "non-root UID"},
		{name: "prepare with a malformed owner => error", args: []string{"-prepare-socket-dir=/run/kms", "-prepare-socket-dir-owner=nonroot"}, want: "UID:GID"},
		{name: "prepare beside serving flags => error", args: append(good, "-prepare-socket-dir=/run/kms", "-prepare-socket-dir-owner=1:1"), want: "cannot be combined with -prepare-socket-dir"},
		{name: "malformed duration => error", args: append(good, "-status-refresh-interval=soon"), want: "invalid value"},
		{name: "unknown key_id mode => error naming both modes", args: append(good, "-key-id-mode=version"), want: `-key-id-mode must be metadata or hmac, not "version"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(tt.args, &stderr)
			out := stderr.String()
			if code != 2 {
				t.Fatalf("exit code = %d, want 2 (stderr %q)", code, out)
			}
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "vault-kms-plugin: ") {
				t.Fatalf("stderr = %q, want exactly one line", out)
			}
			if !strings.Contains(out, tt.want) {
				t.Fatalf("stderr = %q, want it to mention %q", out, tt.want)
			}
			if strings.Contains(out, "hunter2") {
				t.Fatalf("stderr echoes a secret: %q", out)
			}
		})
	}
}

func TestGoodFlagsValidate(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret-id")
	if err := os.WriteFile(secret, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := options{
		listenAddress: "unix://" + filepath.Join(dir, "kms.sock"), vaultAddress: "https://a:8200, https://b:8200/",
		transitMount: "transit", transitKey: "k", approleMount: "approle",
		approleRoleID: "r", approleSecretIDPath: secret, logLevel: "debug-extended",
		statusRefreshInterval: 20e9, socketGroup: "0", batchMaxSize: 128, batchMaxInFlight: 8,
		keyIDModeName: "hmac",
	}
	if err := o.validate(nil); err != nil {
		t.Fatal(err)
	}
	if len(o.addresses) != 2 || o.addresses[1] != "https://b:8200" || o.verbosity != 6 || o.gid != 0 || o.keyIDMode != plugin.KeyIDHMAC {
		t.Fatalf("derived = %v %d %d %q", o.addresses, o.verbosity, o.gid, o.keyIDMode)
	}
}

func TestVaultAddressSchemes(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret-id")
	if err := os.WriteFile(secret, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		addr  string
		extra []string
		want  string // error text; empty: accepted
	}{
		{name: "http to a remote Vault => error naming -insecure-allow-http", addr: "http://vault.example.com:8200", want: "http://vault.example.com:8200 is plain http to a host that is not loopback, which sends the Vault token and DEK seeds in clear text: use https://, or pass -insecure-allow-http"},
		{name: "http to a remote Vault listed after a loopback one => error", addr: "http://127.0.0.1:8200,http://10.0.0.7:8200", want: "http://10.0.0.7:8200 is plain http"},
		{name: "http to a name that merely starts with localhost => error", addr: "http://localhost.example.com:8200", want: "pass -insecure-allow-http"},
		{name: "http to 0.0.0.0 => error", addr: "http://0.0.0.0:8200", want: "pass -insecure-allow-http"},
		{name: "https to a remote Vault => accepted", addr: "https://vault.example.com:8200"},
		{name: "http to 127.0.0.1 => accepted without a flag", addr: "http://127.0.0.1:8200"},
		{name: "http to elsewhere in 127.0.0.0/8 => accepted without a flag", addr: "http://127.3.2.1:8200"},
		{name: "http to localhost => accepted without a flag", addr: "http://LocalHost:8200"},
		{name: "http to ::1 => accepted without a flag", addr: "http://[::1]:8200"},
		{name: "http to a remote Vault with -insecure-allow-http => accepted", addr: "http://vault.example.com:8200", extra: []string{"-insecure-allow-http"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o options
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			o.addFlags(fs)
			args := append([]string{"-listen-address=unix://" + filepath.Join(dir, "kms.sock"), "-vault-address=" + tt.addr,
				"-transit-key=k", "-approle-role-id=r", "-approle-secret-id-path=" + secret}, tt.extra...)
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			o.set = map[string]bool{}
			err := o.validate(fs.Args())
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("validate = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// OpenShift's KMS plugin lifecycle passes exactly these arguments
// (openshift/library-go pkg/operator/encryption/kms/pluginlifecycle/vault.go);
// the plugin must accept them as they are.
func TestOpenShiftArgumentListValidates(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret-id")
	ca := filepath.Join(dir, "ca.pem")
	for _, f := range []string{secret, ca} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{
		"-listen-address=unix:///var/run/kmsplugin/kms-1.sock",
		"-vault-address=https://vault.example.com:8200",
		"-vault-key-path=team/transit/keys/kube",
		"-approle-role-id=3f1c0c7e-role",
		"-approle-secret-id-path=" + secret,
		"-tls-ca-file=" + ca,
		"-tls-sni=vault.internal",
		"-vault-namespace=ns1",
		"-vault-auth-namespace=ns1/auth",
		"-metrics-port=0",
	}
	var o options
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	o.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if err := o.validate(fs.Args()); err != nil {
		t.Fatalf("OpenShift's argument list refused: %v", err)
	}
	if o.transitMount != "team/transit" || o.transitKey != "kube" {
		t.Fatalf("-vault-key-path split into mount %q key %q, want team/transit and kube", o.transitMount, o.transitKey)
	}
	// OpenShift passes no -key-id-mode, and its users grant HashiCorp's
	// minimum policy: the default must be the mode that needs nothing more.
	if o.keyIDMode != plugin.KeyIDMetadata {
		t.Fatalf("key_id mode with OpenShift's arguments = %q, want %q", o.keyIDMode, plugin.KeyIDMetadata)
	}
	// Every flag the lifecycle renders must exist in the sidecar.
	for _, name := range append(append([]string{}, contract.RenderedFlags...), contract.PrepareFlags...) {
		if fs.Lookup(name) == nil {
			t.Errorf("contract flag -%s is not defined by the sidecar", name)
		}
	}
}

func TestPrepareModeHandsOverTheSocketDirAndExits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the prepare mode chowns a directory and must be tested as root (CI is)")
	}
	dir := filepath.Join(t.TempDir(), "kmsplugin")
	var stderr bytes.Buffer
	if code := run([]string{"-prepare-socket-dir=" + dir, "-prepare-socket-dir-owner=65532:65532"}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o750 || st.Uid != 65532 || st.Gid != 65532 {
		t.Fatalf("socket dir mode %v owner %d:%d", fi.Mode(), st.Uid, st.Gid)
	}
}
