package nodefs

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
)

// loadConfig is one of render's golden kms.yaml files ("dev",
// "enterprise"), validated.
func loadConfig(t *testing.T, name string) *config.Config {
	t.Helper()
	cfg, err := config.Load(filepath.Join("..", "..", "render", "testdata", name, "kms.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// inPlace is cfg's next revision of the same provider: another image.
func inPlace(cfg *config.Config, revision string) *config.Config {
	c := *cfg
	img := c.Vault.KMSPluginImage
	c.Vault.KMSPluginImage = img[:strings.LastIndex(img, "@")] + "@sha256:" + strings.Repeat("2", 64)
	c.Revision = revision
	return &c
}

// newKey is cfg moved to another transit key: a new provider.
func newKey(cfg *config.Config, revision string) *config.Config {
	c := *cfg
	c.Vault.VaultKeyPath = cfg.Vault.VaultKeyPath + "-2"
	c.Revision = revision
	return &c
}

func staticPod(t *testing.T, cfg *config.Config) []byte {
	t.Helper()
	b, err := render.StaticPod(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func renderedConfig(t *testing.T, cfg *config.Config) []byte {
	t.Helper()
	b, err := render.EncryptionConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rendered(t *testing.T, cfg *config.Config) Rendered {
	return Rendered{Pod: staticPod(t, cfg), Provider: render.KMSProvider(cfg)}
}

// otherResources are resource entries kmsctl does not manage (no KMS
// provider), in render's layout, appended to a rendered
// EncryptionConfiguration: they must come back byte for byte.
const otherResources = `- providers:
  - aescbc:
      keys:
      - name: key1
        secret: c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Cg==
  - identity: {}
  resources:
  - configmaps
- providers:
  - identity: {}
  resources:
  - events
`

// Files of other owners in the manifest directory, which kmsctl must skip
// and never touch.
var foreignManifests = map[string]string{
	// A kube-apiserver patched with the sidecar carries the revision label
	// only.
	"kube-apiserver.yaml": `apiVersion: v1
kind: Pod
metadata:
  labels:
    component: kube-apiserver
    ` + render.LabelRevision + `: "7"
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - name: kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.37.2
    command: [kube-apiserver, --encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml]
`,
	"etcd.yaml": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\nspec:\n  containers:\n  - name: etcd\n    image: registry.k8s.io/etcd:3.7.0\n",
	"notes.txt": "kubelet reads every file here: {{{ not YAML\n",
	// An editor's swap file: hidden, so neither kubelet nor Observe reads
	// it, though it carries the label (so do kmsctl's temp files).
	".vault-kms-plugin.yaml.swp": "metadata:\n  labels:\n    " + render.LabelProvider + ": half-written\n",
}

// newNode is a node whose files are what render makes of cfg (pod at
// podFile, render.NodeManifestFile when empty), the EncryptionConfiguration
// followed by extra resource entries, and other owners' manifests.
func newNode(t *testing.T, name string, cfg *config.Config, podFile, extra string) NodeFiles {
	t.Helper()
	root := t.TempDir()
	f := NodeFiles{
		Name:                 name,
		ManifestDir:          filepath.Join(root, "manifests"),
		EncryptionConfigPath: filepath.Join(root, "enc", "encryption-config.yaml"),
	}
	if podFile == "" {
		podFile = render.NodeManifestFile(cfg.ProviderName())
	}
	for _, d := range []string{f.ManifestDir, filepath.Dir(f.EncryptionConfigPath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(f.ManifestDir, podFile), staticPod(t, cfg))
	for n, data := range foreignManifests {
		write(t, filepath.Join(f.ManifestDir, n), []byte(data))
	}
	write(t, f.EncryptionConfigPath, append(renderedConfig(t, cfg), extra...))
	return f
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// snapshot is every file of a node, by path, with its bytes.
func snapshot(t *testing.T, f NodeFiles) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range []string{f.ManifestDir, filepath.Dir(f.EncryptionConfigPath)} {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			out[p] = string(read(t, p))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// sameFiles fails unless got and want hold the same paths and bytes.
func sameFiles(t *testing.T, got, want map[string]string) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s is gone", p)
		case g != w:
			t.Errorf("%s differs:\n got: %q\nwant: %q", p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s is new", p)
		}
	}
}

func sha(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// observe is Observe that must succeed, and checks the hash against the
// file's bytes.
func observe(t *testing.T, f NodeFiles) lifecycle.NodeConfig {
	t.Helper()
	got, hash, err := Observe(f)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha(read(t, f.EncryptionConfigPath)); hash != want {
		t.Fatalf("ConfigHash %s, want %s (sha256 of the file)", hash, want)
	}
	return got
}

func mustEqual(t *testing.T, got, want lifecycle.NodeConfig) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("observed [%s]\n    want [%s]", got, want)
	}
}

func kms(names ...string) []lifecycle.Provider {
	out := make([]lifecycle.Provider, 0, len(names))
	for _, n := range names {
		out = append(out, lifecycle.Provider{Name: n, KMS: n != lifecycle.IdentityProvider})
	}
	return out
}

func pods(rs ...lifecycle.Revision) []lifecycle.Revision { return rs }

// tempFiles lists kmsctl temp files left in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.Contains(e.Name(), tmpInfix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func open(t *testing.T) *Store {
	t.Helper()
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
