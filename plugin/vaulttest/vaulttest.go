// Package vaulttest runs a real HashiCorp Vault server for tests: a dev
// server, or a persistent single node on integrated storage that can be
// stopped and started again with its data. It is to Vault what
// net/http/httptest is to HTTP.
//
// The Vault binary is found through $VAULT_BIN, else at .build/bin/vault in
// the repository (built by `make vault`). A test that cannot find it fails:
// a skipped test would pass without testing anything.
package vaulttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

// Binary returns the path of the Vault binary or fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("VAULT_BIN"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "..", ".build", "bin", "vault")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Vault binary not found at %s and $VAULT_BIN is unset: run `make vault` (this test needs a real Vault)", p)
	}
	return p
}

// Server is a running Vault.
type Server struct {
	Addr      string // http://127.0.0.1:port
	RootToken string
	Client    *api.Client // authenticated as root
	Dir       string
	LogPath   string

	t          testing.TB
	bin        string
	persistent bool
	unsealKey  string
	port       int
	cmd        *exec.Cmd
	exited     chan struct{}
	tls        *TLSFiles    // nil: plain HTTP
	httpc      *http.Client // for health checks; nil: http.DefaultClient
}

// plainHealthClient checks health of plain-HTTP servers; the timeout keeps a
// paused or dying node from stalling the check.
var plainHealthClient = &http.Client{Timeout: 2 * time.Second}

// healthGet returns the status code of /v1/sys/health with query.
func (s *Server) healthGet(query string) (int, error) {
	c := s.httpc
	if c == nil {
		c = plainHealthClient
	}
	resp, err := c.Get(s.Addr + "/v1/sys/health" + query)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// StartDev starts `vault server -dev` on a free loopback port. It is stopped
// when the test ends.
func StartDev(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, bin: Binary(t), Dir: t.TempDir(), port: FreePort(t)}
	s.RootToken = "root-" + randomHex(8)
	s.Addr = fmt.Sprintf("http://127.0.0.1:%d", s.port)
	s.LogPath = filepath.Join(s.Dir, "vault.log")
	s.start()
	s.Client = s.newClient()
	t.Cleanup(s.Stop)
	return s
}

// StartPersistent starts a single Vault node with integrated storage in a
// temporary directory, initialises and unseals it. Stop and Start keep its
// data, as a real outage would.
func StartPersistent(t testing.TB) *Server {
	t.Helper()
	s := startRaftNode(t, Binary(t), "node1", nil)
	s.initialise()
	s.unseal()
	return s
}

// startRaftNode starts one Vault node on integrated storage in a temporary
// directory, with a TLS listener when tls is set (requiring client
// certificates unless tls.NoClientAuth). It is neither initialised nor
// unsealed; it stops when the test ends.
func startRaftNode(t testing.TB, bin, nodeID string, tls *TLSFiles) *Server {
	t.Helper()
	s := &Server{t: t, bin: bin, Dir: t.TempDir(), port: FreePort(t), persistent: true, tls: tls}
	scheme, listenerTLS := "http", "tls_disable = true"
	if tls != nil {
		scheme = "https"
		listenerTLS = fmt.Sprintf(`tls_cert_file = %q
  tls_key_file = %q`, tls.ServerCertFile, tls.ServerKey)
		if !tls.NoClientAuth {
			listenerTLS += fmt.Sprintf(`
  tls_client_ca_file = %q
  tls_require_and_verify_client_cert = true`, tls.CAFile)
		}
		s.httpc = tls.httpClient(t)
	}
	s.Addr = fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.port)
	s.LogPath = filepath.Join(s.Dir, "vault.log")
	clusterPort := FreePort(t)
	if err := os.MkdirAll(filepath.Join(s.Dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	// performance_multiplier 1 uses raft's tightest timings, so a killed
	// leader is replaced in seconds, as on a fast LAN.
	cfg := fmt.Sprintf(`
storage "raft" {
  path                   = %q
  node_id                = %q
  performance_multiplier = 1
}
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  %s
}
api_addr      = "%s://127.0.0.1:%d"
cluster_addr  = "https://127.0.0.1:%d"
disable_mlock = true
`, filepath.Join(s.Dir, "data"), nodeID, s.port, clusterPort, listenerTLS, scheme, s.port, clusterPort)
	if err := os.WriteFile(filepath.Join(s.Dir, "vault.hcl"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	s.start()
	s.Client = s.newClient()
	return s
}

// initialise runs `vault operator init` with one key share and keeps the
// unseal key and root token.
func (s *Server) initialise() {
	s.t.Helper()
	init, err := s.Client.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		s.t.Fatalf("vault operator init: %v\n%s", err, s.logTail())
	}
	s.unsealKey, s.RootToken = init.Keys[0], init.RootToken
	s.Client.SetToken(s.RootToken)
}

func (s *Server) start() {
	s.t.Helper()
	var args []string
	env := append(os.Environ(), "VAULT_LOG_LEVEL=info")
	if s.persistent {
		args = []string{"server", "-config=" + filepath.Join(s.Dir, "vault.hcl")}
	} else {
		args = []string{"server", "-dev", "-dev-no-store-token", fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", s.port)}
		// The root token goes through the environment, not argv.
		env = append(env, "VAULT_DEV_ROOT_TOKEN_ID="+s.RootToken)
	}
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.t.Fatalf("start vault: %v", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(s.exited) }()
	s.waitListening()
}

func (s *Server) waitListening() {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			s.t.Fatalf("vault exited while starting:\n%s", s.logTail())
		default:
		}
		if code, err := s.healthGet("?standbyok=true&sealedcode=200&uninitcode=200"); err == nil && code == http.StatusOK {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("vault did not start listening on %s in 60s:\n%s", s.Addr, s.logTail())
}

func (s *Server) unseal() {
	s.t.Helper()
	if _, err := s.Client.Sys().Unseal(s.unsealKey); err != nil {
		s.t.Fatalf("vault unseal: %v", err)
	}
	// Wait until the node is active: after unseal, integrated storage
	// elects a leader before it serves requests.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if code, err := s.healthGet(""); err == nil && code == http.StatusOK {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("vault did not become active in 60s:\n%s", s.logTail())
}

// Stop kills Vault and waits for it to exit.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // in case it is paused
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
	if s.t.Failed() {
		s.t.Logf("vault log (%s):\n%s", s.LogPath, s.logTail())
	}
}

// Pause freezes Vault (SIGSTOP): connections are accepted by the kernel but
// nothing answers, as with a hung server.
func (s *Server) Pause() {
	s.t.Helper()
	s.Must(s.cmd.Process.Signal(syscall.SIGSTOP), "pause vault")
}

// Resume thaws a paused Vault.
func (s *Server) Resume() {
	s.t.Helper()
	s.Must(s.cmd.Process.Signal(syscall.SIGCONT), "resume vault")
}

// Start starts a stopped persistent server again, on the same port, and
// unseals it.
func (s *Server) Start() {
	s.t.Helper()
	if !s.persistent {
		s.t.Fatal("vaulttest: a dev server loses its data when stopped; use StartPersistent")
	}
	s.start()
	s.unseal()
}

func (s *Server) newClient() *api.Client {
	s.t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	if s.tls != nil {
		s.Must(cfg.ConfigureTLS(s.tls.apiTLSConfig()), "configure TLS")
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	c.SetToken(s.RootToken)
	return c
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.LogPath)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// Must fails the test on err.
func (s *Server) Must(err error, what string) {
	s.t.Helper()
	if err != nil {
		s.t.Fatalf("%s: %v", what, err)
	}
}

// EnableTransit mounts transit at mount and creates key (aes256-gcm96).
func (s *Server) EnableTransit(mount, key string) {
	s.t.Helper()
	s.Must(s.Client.Sys().Mount(mount, &api.MountInput{Type: "transit"}), "enable transit")
	_, err := s.Client.Logical().Write(mount+"/keys/"+key, map[string]any{"type": "aes256-gcm96"})
	s.Must(err, "create transit key")
}

// RotateKey rotates the transit key and returns its new latest version.
func (s *Server) RotateKey(mount, key string) int {
	s.t.Helper()
	_, err := s.Client.Logical().Write(mount+"/keys/"+key+"/rotate", nil)
	s.Must(err, "rotate transit key")
	sec, err := s.Client.Logical().Read(mount + "/keys/" + key)
	s.Must(err, "read transit key")
	v, _ := sec.Data["latest_version"].(json.Number).Int64()
	return int(v)
}

// AppRole describes a role created by CreateAppRole.
type AppRole struct {
	Name   string
	RoleID string
}

// CreateAppRole enables AppRole at "approle" (once), writes policy as
// policyName and creates a role bound to it with the given token TTLs.
func (s *Server) CreateAppRole(name, policyName, policy string, tokenTTL, tokenMaxTTL time.Duration) AppRole {
	s.t.Helper()
	auths, err := s.Client.Sys().ListAuth()
	s.Must(err, "list auth methods")
	if _, ok := auths["approle/"]; !ok {
		s.Must(s.Client.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}), "enable approle")
	}
	s.Must(s.Client.Sys().PutPolicy(policyName, policy), "write policy")
	_, err = s.Client.Logical().Write("auth/approle/role/"+name, map[string]any{
		"token_policies": []string{policyName},
		"token_ttl":      strconv.Itoa(int(tokenTTL.Seconds())) + "s",
		"token_max_ttl":  strconv.Itoa(int(tokenMaxTTL.Seconds())) + "s",
	})
	s.Must(err, "create approle role")
	sec, err := s.Client.Logical().Read("auth/approle/role/" + name + "/role-id")
	s.Must(err, "read role id")
	return AppRole{Name: name, RoleID: sec.Data["role_id"].(string)}
}

// NewSecretID issues a secret ID for the role.
func (s *Server) NewSecretID(role AppRole) string {
	s.t.Helper()
	sec, err := s.Client.Logical().Write("auth/approle/role/"+role.Name+"/secret-id", nil)
	s.Must(err, "issue secret id")
	return sec.Data["secret_id"].(string)
}

// DestroySecretID revokes a secret ID so logins with it fail.
func (s *Server) DestroySecretID(role AppRole, secretID string) {
	s.t.Helper()
	_, err := s.Client.Logical().Write("auth/approle/role/"+role.Name+"/secret-id/destroy", map[string]any{"secret_id": secretID})
	s.Must(err, "destroy secret id")
}

// Policy is the least-privilege policy the plugin needs for key on mount
// (contract.VaultPolicy, what kmsctl renders); manifests/vault-policy.hcl is
// this with mount "transit" and key "kubernetes".
func Policy(mount, key string) string { return contract.VaultPolicy(mount, key) }

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// WaitFor polls cond every 50ms until it returns true or timeout passes.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return cond()
}

// RevokeAppRoleTokens revokes every token issued by AppRole logins, as an
// operator cleaning up after a leaked credential would.
func (s *Server) RevokeAppRoleTokens() {
	s.t.Helper()
	_, err := s.Client.Logical().Write("sys/leases/revoke-prefix/auth/approle/login", nil)
	s.Must(err, "revoke AppRole tokens")
}

// LockedUsers is the number of users (AppRole role_ids among them) that
// Vault's user lockout holds locked right now (sys/locked-users).
func (s *Server) LockedUsers() int {
	s.t.Helper()
	sec, err := s.Client.Logical().Read("sys/locked-users")
	s.Must(err, "read sys/locked-users")
	if sec == nil || sec.Data["total"] == nil {
		return 0
	}
	n, err := strconv.Atoi(fmt.Sprint(sec.Data["total"]))
	s.Must(err, "parse sys/locked-users total")
	return n
}
