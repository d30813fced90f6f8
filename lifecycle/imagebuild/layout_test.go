package imagebuild

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func TestWriteLayout(t *testing.T) {
	spec := testSpec()
	idx := mustBuild(t, spec)
	want := mustDigest(t, idx)
	dir := filepath.Join(t.TempDir(), "image", "oci")

	if err := WriteLayout(dir, idx, spec.Version); err != nil {
		t.Fatalf("WriteLayout: %v", err)
	}

	t.Run("the layout round-trips: index.json names the index, which reads back whole", func(t *testing.T) {
		outer, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatalf("ImageIndexFromPath: %v", err)
		}
		m, err := outer.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Manifests) != 1 {
			t.Fatalf("index.json lists %d entries, want 1", len(m.Manifests))
		}
		d := m.Manifests[0]
		if d.Digest != want || d.MediaType != types.OCIImageIndex {
			t.Errorf("index.json entry %s %s, want %s %s", d.MediaType, d.Digest, types.OCIImageIndex, want)
		}
		if got := d.Annotations["org.opencontainers.image.ref.name"]; got != spec.Version {
			t.Errorf("ref.name %q, want %q", got, spec.Version)
		}
		inner, err := outer.ImageIndex(d.Digest)
		if err != nil {
			t.Fatalf("ImageIndex(%s): %v", d.Digest, err)
		}
		if got := mustDigest(t, inner); got != want {
			t.Errorf("index read back as %s, built as %s", got, want)
		}
		// Every blob is read back and checked against its digest and size.
		if err := validate.Index(inner); err != nil {
			t.Errorf("validate.Index on the layout: %v", err)
		}
		imgs := images(t, inner)
		if len(imgs) != 2 {
			t.Errorf("%d images in the layout, want 2", len(imgs))
		}
	})

	t.Run("a second build replaces the layout and leaves no .tmp or .old", func(t *testing.T) {
		spec := testSpec()
		spec.Revision = "fedcba9876543210fedcba9876543210fedcba98"
		idx2 := mustBuild(t, spec)
		if err := WriteLayout(dir, idx2, spec.Version); err != nil {
			t.Fatalf("WriteLayout: %v", err)
		}
		outer, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := outer.IndexManifest()
		if len(m.Manifests) != 1 || m.Manifests[0].Digest != mustDigest(t, idx2) {
			t.Errorf("index.json %+v, want only the second build %s", m.Manifests, mustDigest(t, idx2))
		}
		for _, leftover := range []string{dir + ".tmp", dir + ".old"} {
			if _, err := os.Stat(leftover); !os.IsNotExist(err) {
				t.Errorf("%s left behind (stat: %v)", leftover, err)
			}
		}
	})
}

func TestWriteLayoutRefusesToReplaceOtherDirectories(t *testing.T) {
	idx := mustBuild(t, testSpec())
	for _, target := range []string{"", ".tmp", ".old"} {
		t.Run("a non-layout directory at DIR"+target+" => refused and left alone", func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "oci")
			victim := filepath.Join(dir+target, "precious.txt")
			if err := os.MkdirAll(filepath.Dir(victim), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
				t.Fatal(err)
			}
			err := WriteLayout(dir, idx, "v1")
			if err == nil || !strings.Contains(err.Error(), "is not an OCI layout") {
				t.Fatalf("WriteLayout: %v, want a refusal", err)
			}
			if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
				t.Errorf("%s after refusal: %q, %v", victim, b, err)
			}
		})
	}
}
