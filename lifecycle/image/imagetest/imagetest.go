// Package imagetest gives tests of verify-image what a user has: the real
// cosign CLI signing with a key pair it generated, and small images pushed
// to a real registry (see lifecycle/registrytest).
//
// The cosign binary is $COSIGN_BIN, else .build/bin/cosign in the
// repository (built by `make cosign`). A test that cannot find it fails: a
// skipped test would pass without testing anything.
package imagetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// CosignBinary returns the path of the cosign CLI or fails the test.
func CosignBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("COSIGN_BIN"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "..", "..", ".build", "bin", "cosign")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("cosign not found at %s and $COSIGN_BIN is unset: run `make cosign` (this test signs with the real cosign CLI)", filepath.Clean(p))
	}
	return p
}

// KeyPair is a cosign key pair written by cosign generate-key-pair.
type KeyPair struct {
	Private  string // cosign.key, encrypted with Password
	Public   string // cosign.pub
	Password string
}

// GenerateKeyPair runs cosign generate-key-pair in a new temporary
// directory.
func GenerateKeyPair(t testing.TB) KeyPair {
	t.Helper()
	dir := t.TempDir()
	kp := KeyPair{
		Private:  filepath.Join(dir, "cosign.key"),
		Public:   filepath.Join(dir, "cosign.pub"),
		Password: "imagetest-password",
	}
	runCosign(t, dir, kp.Password, "generate-key-pair")
	return kp
}

// Sign signs ref (a digest reference) with the private key, offline: no
// transparency log, no Fulcio. newBundleFormat writes a Sigstore bundle as
// an OCI referrer (cosign v3's default) instead of the classic .sig tag.
func Sign(t testing.TB, kp KeyPair, ref string, newBundleFormat bool) {
	t.Helper()
	args := []string{"sign", "--key", kp.Private, "--tlog-upload=false", "--yes",
		"--allow-insecure-registry", "--allow-http-registry"}
	if newBundleFormat {
		args = append(args, "--new-bundle-format")
	}
	runCosign(t, filepath.Dir(kp.Private), kp.Password, append(args, ref)...)
}

// AttestBundle attaches to ref a Sigstore bundle holding an in-toto
// attestation of predicateType (not a signature), signed with the private
// key, offline.
func AttestBundle(t testing.TB, kp KeyPair, ref, predicateType string) {
	t.Helper()
	predicate := filepath.Join(t.TempDir(), "predicate.json")
	if err := os.WriteFile(predicate, []byte(`{"note":"imagetest"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	runCosign(t, filepath.Dir(kp.Private), kp.Password, "attest", "--key", kp.Private, "--tlog-upload=false", "--yes",
		"--allow-insecure-registry", "--allow-http-registry", "--new-bundle-format",
		"--type", predicateType, "--predicate", predicate, ref)
}

func runCosign(t testing.TB, dir, password string, args ...string) {
	t.Helper()
	cmd := exec.Command(CosignBinary(t), args...)
	cmd.Dir = dir
	cmd.Env = cosignEnv(t, password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// cosignEnv isolates cosign from the machine: its own HOME and docker
// config, no proxy (so a test that watches proxied traffic sees only the
// code under test), the key's password in the environment, not argv.
func cosignEnv(t testing.TB, password string) []string {
	home := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HOME", "DOCKER_CONFIG", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "COSIGN_PASSWORD", "COSIGN_REPOSITORY":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"), "COSIGN_PASSWORD="+password)
}

// PushIndex pushes to ref (REPO:TAG) an OCI index of two small images,
// linux/amd64 and linux/arm64, whose configs carry the given labels, and
// returns REPO@DIGEST of the index. Every call pushes new content (random
// layers), so pushing to the same tag moves it.
func PushIndex(t testing.TB, ref string, amd64Labels, arm64Labels map[string]string) string {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range []struct {
		arch   string
		labels map[string]string
	}{{"amd64", amd64Labels}, {"arm64", arm64Labels}} {
		img := newImage(t, p.arch, p.labels)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: p.arch}},
		})
	}
	r := parse(t, ref)
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return r.Context().Name() + "@" + d.String()
}

// PushImage pushes to ref a single linux/amd64 image (no index) whose config
// carries labels, and returns REPO@DIGEST.
func PushImage(t testing.TB, ref string, labels map[string]string) string {
	t.Helper()
	img := newImage(t, "amd64", labels)
	r := parse(t, ref)
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push image %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return r.Context().Name() + "@" + d.String()
}

// Copy copies a manifest (an index with its images, or an image) and its
// blobs from src to dst, as mirroring does: the digest stays the same.
func Copy(t testing.TB, src, dst string) {
	t.Helper()
	if err := crane.Copy(src, dst, crane.Insecure); err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

func newImage(t testing.TB, arch string, labels map[string]string) v1.Image {
	t.Helper()
	layer, err := random.Layer(512, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Labels = labels
	cf.Config.Entrypoint = []string{"/vault-kms-plugin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func parse(t testing.TB, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("parse %s: %v", ref, err)
	}
	return r
}
