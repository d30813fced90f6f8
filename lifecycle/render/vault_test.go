package render

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// The policy render writes is the one the integration tests prove
// sufficient for the plugin.
func TestPluginPolicyIsTheTestedPolicy(t *testing.T) {
	tests := []struct {
		name      string
		keyPath   string
		namespace string
		auth      string
		wantMount string
	}{
		{name: "transit mount => transit", keyPath: "transit/keys/kubernetes", wantMount: "transit"},
		{name: "nested mount => nested", keyPath: "a/b/keys/k", wantMount: "a/b"},
		{name: "same namespace for auth and transit => mount alone", keyPath: "transit/keys/k", namespace: "admin", wantMount: "transit"},
		{name: "transit in a child of the auth namespace => relative path", keyPath: "transit/keys/k", namespace: "admin/team/x", auth: "admin", wantMount: "team/x/transit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := load(t, filepath.Join("testdata", "dev", "kms.yaml"))
			cfg.Vault.VaultKeyPath, cfg.Vault.VaultNamespace, cfg.Vault.VaultAuthNamespace = tc.keyPath, tc.namespace, tc.auth
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if got, want := PluginPolicy(cfg), vaulttest.Policy(tc.wantMount, cfg.Vault.KeyName()); got != want {
				t.Fatalf("PluginPolicy:\n%s\nwant vaulttest.Policy(%q, %q):\n%s", got, tc.wantMount, cfg.Vault.KeyName(), want)
			}
		})
	}
}

// fakeVault is a vault CLI that records each call (namespace and argv) in
// $FAKE_VAULT_STATE/calls and keeps just enough state for vault-setup.sh:
// mounts, the key, auth methods, policies, and numbered secret IDs.
const fakeVault = `#!/usr/bin/env bash
set -euo pipefail
s=$FAKE_VAULT_STATE
printf 'ns=%s argv=%s\n' "${VAULT_NAMESPACE-<unset>}" "$*" >>"$s/calls"
case "$1 $2" in
"secrets list") cat "$s/mounts" 2>/dev/null || echo '{}' ;;
"secrets enable") p=${3#-path=}; echo "{\"$p/\": {}}" >"$s/mounts" ;;
"auth list") cat "$s/auths" 2>/dev/null || echo '{}' ;;
"auth enable") p=${3#-path=}; echo "{\"$p/\": {}}" >"$s/auths" ;;
"policy write") cat >"$s/policy-$3" ;;
*)
  case "$1" in
  read) [ -f "$s/key" ] || { echo "no value found" >&2; exit 2; } ;;
  write)
    case "$*" in
    *-field=secret_id*)
      n=$(( $(cat "$s/counter" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$s/counter"
      printf 'fake-secret-%d' "$n" ;;
    */secret-id/destroy*) f=${3#secret_id=@}; { cat "$f"; echo; } >>"$s/destroyed" ;;
    */keys/*) touch "$s/key" ;;
    esac ;;
  esac ;;
esac
`

// runSetup runs the rendered vault-setup.sh with env and returns its
// combined output.
func runSetup(t *testing.T, cfg *config.Config, env ...string) (string, error) {
	t.Helper()
	script, err := SetupScript(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), SetupScriptFile)
	if err := os.WriteFile(p, script, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", p)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// assertCredentials checks the node's credential files as the plugin's
// user needs them, and that nothing else is left in the directory.
func assertCredentials(t *testing.T, cfg *config.Config, secretIDFile string) string {
	t.Helper()
	dir := filepath.Dir(secretIDFile)
	uid, gid := uint32(cfg.Node.PluginUID), uint32(cfg.Node.PluginGID)
	assertOwner(t, dir, 0o750, 0, gid)
	assertOwner(t, secretIDFile, 0o400, uid, gid)
	assertOwner(t, filepath.Join(dir, "role-id"), 0o400, uid, gid)
	roleID, err := os.ReadFile(filepath.Join(dir, "role-id"))
	if err != nil {
		t.Fatal(err)
	}
	if string(roleID) != cfg.Vault.Authentication.AppRole.RoleID {
		t.Errorf("role-id file holds %q, want %q", roleID, cfg.Vault.Authentication.AppRole.RoleID)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"role-id", filepath.Base(secretIDFile)}; !sameSet(names, want) {
		t.Errorf("credentials directory holds %q, want %q (temporary files left?)", names, want)
	}
	secret, err := os.ReadFile(secretIDFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(secret)
}

func assertOwner(t *testing.T, p string, mode os.FileMode, uid, gid uint32) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != mode || st.Uid != uid || st.Gid != gid {
		t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", p, fi.Mode().Perm(), st.Uid, st.Gid, mode, uid, gid)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("vault-setup.sh chowns the credential files to the plugin's user and must be tested as root (CI is)")
	}
}

func TestSetupScriptWithAFakeVault(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name      string
		transitNS string // namespace the transit commands must run in
		authNS    string // and the AppRole and policy commands
	}{
		{name: "dev", transitNS: "<unset>", authNS: "<unset>"},
		{name: "enterprise", transitNS: "admin/kubernetes", authNS: "admin"},
	} {
		t.Run(tc.name+" => credentials written, secrets never in argv or output, rerun rotates", func(t *testing.T) {
			cfg := load(t, filepath.Join("testdata", tc.name, "kms.yaml"))
			bin, state := t.TempDir(), t.TempDir()
			if err := os.WriteFile(filepath.Join(bin, "vault"), []byte(fakeVault), 0o755); err != nil {
				t.Fatal(err)
			}
			secretIDFile := filepath.Join(t.TempDir(), "vault-kms", "secret-id")
			env := []string{
				"PATH=" + bin + ":" + os.Getenv("PATH"),
				"HOME=" + t.TempDir(),
				"FAKE_VAULT_STATE=" + state,
				"SECRET_ID_FILE=" + secretIDFile,
				// Not kms.yaml's namespace: the script must not use it.
				"VAULT_NAMESPACE=from-the-environment",
			}

			for run := 1; run <= 2; run++ {
				out, err := runSetup(t, cfg, env...)
				if err != nil {
					t.Fatalf("run %d: %v\n%s", run, err, out)
				}
				if strings.Contains(out, "fake-secret") {
					t.Fatalf("run %d printed a secret ID:\n%s", run, out)
				}
				if got, want := assertCredentials(t, cfg, secretIDFile), "fake-secret-"+strconv.Itoa(run); got != want {
					t.Fatalf("run %d: secret-id file holds %q, want %q", run, got, want)
				}
			}

			calls := string(mustRead(t, filepath.Join(state, "calls")))
			if strings.Contains(calls, "fake-secret") {
				t.Errorf("a secret ID was on a vault command line:\n%s", calls)
			}
			if destroyed := string(mustRead(t, filepath.Join(state, "destroyed"))); destroyed != "fake-secret-1\n" {
				t.Errorf("destroyed secret IDs %q, want the first one alone", destroyed)
			}
			wantRoleID := "role_id=" + cfg.Vault.Authentication.AppRole.RoleID
			var transitCalls, authCalls []string
			for _, line := range strings.Split(strings.TrimSpace(calls), "\n") {
				ns, argv, _ := strings.Cut(strings.TrimPrefix(line, "ns="), " argv=")
				switch {
				case strings.HasPrefix(argv, "secrets ") || (strings.HasPrefix(argv, "read ") && !strings.Contains(argv, " auth/")) || strings.HasPrefix(argv, "write "+cfg.Vault.KeyMount()+"/"):
					transitCalls = append(transitCalls, argv)
					if ns != tc.transitNS {
						t.Errorf("%q ran in namespace %q, want %q", argv, ns, tc.transitNS)
					}
				default:
					authCalls = append(authCalls, argv)
					if ns != tc.authNS {
						t.Errorf("%q ran in namespace %q, want %q", argv, ns, tc.authNS)
					}
				}
			}
			// Created once, left alone on the second run.
			for _, prefix := range []string{"secrets enable", "write " + cfg.Vault.VaultKeyPath + " ", "auth enable"} {
				if n := countPrefix(append(transitCalls, authCalls...), prefix); n != 1 {
					t.Errorf("%d calls %q..., want 1 over two runs", n, prefix)
				}
			}
			if !slices.ContainsFunc(authCalls, func(a string) bool { return strings.HasSuffix(a, " "+wantRoleID) }) {
				t.Errorf("no call set %s exactly (shell quoting):\n%s", wantRoleID, calls)
			}
			ar := cfg.Vault.Authentication.AppRole
			if got := string(mustRead(t, filepath.Join(state, "policy-"+ar.PolicyName))); got != PluginPolicy(cfg) {
				t.Errorf("policy %s written as:\n%s\nwant vault-policy.hcl:\n%s", ar.PolicyName, got, PluginPolicy(cfg))
			}
			if got := string(mustRead(t, filepath.Join(state, "policy-"+ar.OperatorPolicyName()))); got != OperatorPolicy(cfg) {
				t.Errorf("policy %s written as:\n%s\nwant vault-operator-policy.hcl:\n%s", ar.OperatorPolicyName(), got, OperatorPolicy(cfg))
			}
		})
	}
}

func TestSetupScriptRefusesNonRoot(t *testing.T) {
	requireRoot(t) // to drop to another user
	cfg := load(t, filepath.Join("testdata", "dev", "kms.yaml"))
	script, err := SetupScript(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-s")
	cmd.Stdin = bytes.NewReader(script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SECRET_ID_FILE=/nonexistent/secret-id"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "run as root") {
		t.Fatalf("as nobody: %v\n%s\nwant a refusal saying to run as root", err, out)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func countPrefix(list []string, prefix string) int {
	n := 0
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}
