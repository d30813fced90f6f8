package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// pluginImageLayout is the OCI layout `make image` writes.
var pluginImageLayout = binary{env: "PLUGIN_IMAGE_LAYOUT", fallback: ".build/image/oci", target: "run `make image`"}

// PushPluginImage pushes the plugin image that `make image` built (an OCI
// index for linux/amd64 and linux/arm64) to repo:e2e on a plain-http
// registry, as a release pipeline would, and returns repo@sha256:<index
// digest>.
func PushPluginImage(t testing.TB, repo string) string {
	return PushPluginImageAs(t, repo+":e2e", nil)
}

// PushPluginImageAs pushes the plugin image that `make image` built to tag,
// with annotations added to its index (another index digest for the same
// platform images, as a rebuild of the same code would give), and returns
// repo@sha256:<index digest>.
func PushPluginImageAs(t testing.TB, tag string, annotations map[string]string) string {
	t.Helper()
	dir := pluginImageLayout.path()
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		t.Fatalf("plugin image layout not found at %s ($%s overrides the path): %s", dir, pluginImageLayout.env, pluginImageLayout.target)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	outer, err := lp.ImageIndex()
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	// A layout's index.json points at the image index it holds.
	m, err := outer.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("%s: want one image index in the layout, got %d (%v)", dir, len(m.Manifests), err)
	}
	idx, err := outer.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	if len(annotations) > 0 {
		idx = mutate.Annotations(idx, annotations).(v1.ImageIndex)
	}
	return pushIndex(t, tag, idx)
}

func pushIndex(t testing.TB, tag string, idx v1.ImageIndex) string {
	t.Helper()
	ref, err := name.ParseReference(tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push %s: %v", tag, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref.Context().Name() + "@" + d.String()
}

// PushPauseImage builds the node's sandbox image from e2e/cmd/pause (a
// static binary on an empty base) and pushes it to registry; it returns the
// reference for containerd's sandbox_image.
func PushPauseImage(t testing.TB, registry string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/pause")
	cmd.Dir = filepath.Join(RepoRoot(), "e2e")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the pause binary: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Entrypoint, cfg.Config.User = []string{"/pause"}, "65535:65535"
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(registry+"/pause:e2e", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push the pause image: %v", err)
	}
	return ref.Name()
}
