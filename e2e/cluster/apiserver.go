package cluster

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/apiserver"
	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// ProviderName is the KMS provider's name in the EncryptionConfiguration;
// stored values start with "k8s:enc:kms:v2:" + ProviderName + ":".
const ProviderName = "vault"

// StoragePrefix is how every value the KMS provider wrote starts in etcd.
const StoragePrefix = "k8s:enc:kms:v2:" + ProviderName + ":"

// EncryptionConfig returns an EncryptionConfiguration that encrypts
// resources (Secrets if none) with the KMSv2 plugin at endpoint and can
// still read unencrypted ones.
func EncryptionConfig(endpoint string, resources ...string) string {
	if len(resources) == 0 {
		resources = []string{"secrets"}
	}
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - %s
    providers:
      - kms:
          apiVersion: v2
          name: %s
          endpoint: %s
          timeout: 3s
      - identity: {}
`, strings.Join(resources, "\n      - "), ProviderName, endpoint)
}

// APIServer is one kube-apiserver process with its KMS plugin.
type APIServer struct {
	Name   string
	URL    string // https://127.0.0.1:port
	Port   int
	Dir    string
	Plugin *Plugin
	// EncryptionConfigPath is the file passed to --encryption-provider-config.
	EncryptionConfigPath string
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Client is a clientset built from Config.
	Client *kubernetes.Clientset
	Proc   *Process

	t testing.TB
}

// StartAPIServer starts kube-apiserver on etcd with plugin as its KMS, and
// waits until /livez answers. Call WaitReady to wait for /readyz.
func StartAPIServer(t testing.TB, name string, etcd *Etcd, pki *PKI, plugin *Plugin) *APIServer {
	t.Helper()
	return StartAPIServerWith(t, name, etcd, pki, APIServerOptions{Plugin: plugin})
}

// APIServerOptions say how StartAPIServerWith runs an API server.
type APIServerOptions struct {
	// Plugin is the KMS plugin process the API server uses, if the harness
	// runs it (nil when a kubelet runs the plugin as a static pod).
	Plugin *Plugin
	// EncryptionConfig is the EncryptionConfiguration file's content, for
	// example one kmsctl rendered; EncryptionConfig(Plugin.Endpoint()) if nil.
	EncryptionConfig []byte
	// Namespaces, if set, are a node's (see Namespaces): the API server runs
	// in its mount namespace and reaches the node's plugin sockets at the
	// paths kms.yaml names, as the node's kube-apiserver would. Its network
	// stays the host's, where its clients, etcd and the tests are.
	Namespaces *Namespaces
	// Port is the secure port, chosen beforehand when a kubelet's kubeconfig
	// must name the API server before it starts; a free port if zero.
	Port int
}

// StartAPIServerWith starts kube-apiserver on etcd as opts say, and waits
// until /livez answers. Call WaitReady to wait for /readyz.
func StartAPIServerWith(t testing.TB, name string, etcd *Etcd, pki *PKI, opts APIServerOptions) *APIServer {
	t.Helper()
	bin := kubeAPIServerBinary.find(t)
	if opts.Port == 0 {
		opts.Port = vaulttest.FreePort(t)
	}
	if opts.EncryptionConfig == nil {
		opts.EncryptionConfig = []byte(EncryptionConfig(opts.Plugin.Endpoint()))
	}
	a := &APIServer{Name: name, Port: opts.Port, Dir: t.TempDir(), Plugin: opts.Plugin, t: t}
	a.URL = fmt.Sprintf("https://127.0.0.1:%d", a.Port)
	a.EncryptionConfigPath = writeFile(t, a.Dir, "encryption-config.yaml", opts.EncryptionConfig)
	args := []string{
		"--etcd-servers=" + etcd.Endpoint,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(a.Port),
		"--cert-dir=" + filepath.Join(a.Dir, "certs"),
		"--tls-cert-file=" + pki.Serving.CertPath,
		"--tls-private-key-file=" + pki.Serving.KeyPath,
		"--client-ca-file=" + pki.CA.CertPath,
		// Node lets a kubelet registered with its system:node credentials
		// publish its node and the mirror pods of its static pods.
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.SAPubPath,
		"--service-account-signing-key-file=" + pki.SAKeyPath,
		"--service-cluster-ip-range=10.96.0.0/16",
		// Several API servers share one address here; the lease reconciler
		// would make them fight over the kubernetes Service's endpoints.
		"--endpoint-reconciler-type=none",
		"--encryption-provider-config=" + a.EncryptionConfigPath,
		"--encryption-provider-config-automatic-reload=true",
		"--profiling=false",
		// v=2 logs the KMS health probe's failures.
		"--v=2",
	}
	if opts.Namespaces != nil {
		args = opts.Namespaces.Enter(false, bin, args...)
		bin = "nsenter"
	}
	a.Proc = newProcess(t, name, a.Dir, bin, args, nil)
	a.Config = &rest.Config{
		Host: a.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   pki.CA.CertPEM,
			CertData: pki.Admin.CertPEM,
			KeyData:  pki.Admin.KeyPEM,
		},
		QPS:     200,
		Burst:   400,
		Timeout: 15 * time.Second,
	}
	c, err := kubernetes.NewForConfig(a.Config)
	if err != nil {
		t.Fatalf("clientset for %s: %v", name, err)
	}
	a.Client = c
	a.Start()
	return a
}

// Start starts the API server and waits until /livez answers 200.
func (a *APIServer) Start() {
	a.t.Helper()
	a.Proc.Start()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		code, _, err := a.Get(context.Background(), "/livez")
		if err == nil && code == http.StatusOK {
			return
		}
		select {
		case <-a.Proc.Exited():
			a.t.Fatalf("%s exited while starting:\n%s", a.Name, a.Proc.LogTail(40))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: /livez not ok within 3m (last: %d %v)\n%s", a.Name, code, err, a.Proc.LogTail(40))
		}
	}
}

// Stop stops the API server gracefully.
func (a *APIServer) Stop() { a.Proc.Stop() }

// Restart stops the API server and starts it again with the same flags.
func (a *APIServer) Restart() {
	a.t.Helper()
	a.Stop()
	a.Start()
}

// Get performs an admin GET of a non-resource path and returns the status
// code and body.
func (a *APIServer) Get(ctx context.Context, path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var code int
	p, query, _ := strings.Cut(path, "?")
	req := a.Client.Discovery().RESTClient().Get().AbsPath(p)
	for _, kv := range strings.Split(query, "&") {
		if k, v, _ := strings.Cut(kv, "="); k != "" {
			req = req.Param(k, v)
		}
	}
	body, err := req.Do(ctx).StatusCode(&code).Raw()
	if code != 0 {
		// A non-2xx answer is an answer: return its body, not an error.
		return code, string(body), nil
	}
	return code, string(body), err
}

// Readyz returns /readyz?verbose: its status code and the check lines.
func (a *APIServer) Readyz(ctx context.Context) (int, string, error) {
	code, body, err := a.Get(ctx, "/readyz?verbose")
	if err != nil {
		return 0, "", err
	}
	return code, body, nil
}

// KMSHealthy reports whether /readyz lists the kms-providers check as ok,
// and returns the readyz text.
func (a *APIServer) KMSHealthy(ctx context.Context) (bool, string, error) {
	_, body, err := a.Readyz(ctx)
	if err != nil {
		return false, "", err
	}
	switch {
	case strings.Contains(body, "[+]kms-providers ok"):
		return true, body, nil
	case strings.Contains(body, "[-]kms-providers failed"):
		return false, body, nil
	}
	return false, body, fmt.Errorf("%s: /readyz?verbose lists no kms-providers check:\n%s", a.Name, body)
}

// WaitReady waits until /readyz answers 200 (every check, KMS included).
func (a *APIServer) WaitReady(timeout time.Duration) {
	a.t.Helper()
	var (
		code int
		body string
		err  error
	)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		code, body, err = a.Readyz(context.Background())
		if err == nil && code == http.StatusOK {
			return
		}
		select {
		case <-a.Proc.Exited():
			a.t.Fatalf("%s exited:\n%s", a.Name, a.Proc.LogTail(40))
		case <-time.After(250 * time.Millisecond):
		}
	}
	a.t.Fatalf("%s not ready within %s (last: %d %v):\n%s", a.Name, timeout, code, err, body)
}

// WaitKMS waits until the kms-providers readiness check reports healthy
// (true) or failing (false), and returns the readyz text it saw last.
func (a *APIServer) WaitKMS(healthy bool, timeout time.Duration) (string, bool) {
	var body string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ok, b, err := a.KMSHealthy(context.Background())
		body = b
		if err == nil && ok == healthy {
			return body, true
		}
		time.Sleep(500 * time.Millisecond)
	}
	return body, false
}

// Metrics returns the API server's /metrics text.
func (a *APIServer) Metrics(ctx context.Context) (string, error) {
	code, body, err := a.Get(ctx, "/metrics")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("%s /metrics: %d", a.Name, code)
	}
	return body, nil
}

// KeyIDHash is how kube-apiserver labels a key_id in its metrics.
func KeyIDHash(keyID string) string { return apiserver.KeyIDHash(keyID) }

// HasSeenKeyID reports whether the API server's metrics show that the
// plugin's Status returned keyID.
func (a *APIServer) HasSeenKeyID(ctx context.Context, keyID string) (bool, error) {
	m, err := a.Metrics(ctx)
	if err != nil {
		return false, err
	}
	n := Sum(ParseMetrics(m), "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds", map[string]string{"key_id_hash": KeyIDHash(keyID)})
	return n > 0, nil
}

// WriteKubeconfig writes a kubeconfig for the admin user to path.
func (a *APIServer) WriteKubeconfig(path string) error {
	enc := base64.StdEncoding.EncodeToString
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: e2e-admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: e2e
  context:
    cluster: e2e
    user: e2e-admin
current-context: e2e
`, a.URL, enc(a.Config.CAData), enc(a.Config.CertData), enc(a.Config.KeyData))
	return os.WriteFile(path, []byte(cfg), 0o600)
}
