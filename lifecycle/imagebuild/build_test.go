package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}
	// commitTime is in a zone other than UTC on purpose: the image must
	// carry it in UTC.
	commitTime = time.Date(2026, 11, 20, 14, 3, 7, 0, time.FixedZone("CET", 3600))
)

// testSpec is a spec with two fake binaries of a few bytes: Build does not
// look inside them.
func testSpec() Spec {
	return Spec{
		Binaries: []Binary{
			{Platform: amd64, Plugin: []byte("plugin for amd64")},
			{Platform: arm64, Plugin: []byte("plugin for arm64")},
		},
		Source:   "https://github.com/vaultkms/vault-kms-plugin",
		Revision: "0123456789abcdef0123456789abcdef01234567",
		Version:  "v0.3.0-2-g0123456",
		Created:  commitTime,
	}
}

func mustBuild(t *testing.T, spec Spec) v1.ImageIndex {
	t.Helper()
	idx, err := Build(spec)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return idx
}

func mustDigest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	return h
}

// images returns the index's images by platform, checking each manifest
// descriptor on the way.
func images(t *testing.T, idx v1.ImageIndex) map[string]v1.Image {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatalf("IndexManifest: %v", err)
	}
	out := map[string]v1.Image{}
	for _, d := range m.Manifests {
		if d.MediaType != types.OCIManifestSchema1 {
			t.Errorf("manifest %s: media type %s, want %s", d.Digest, d.MediaType, types.OCIManifestSchema1)
		}
		if d.Platform == nil {
			t.Fatalf("manifest %s has no platform", d.Digest)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatalf("Image(%s): %v", d.Digest, err)
		}
		out[d.Platform.String()] = img
	}
	return out
}

func TestBuild(t *testing.T) {
	spec := testSpec()
	idx := mustBuild(t, spec)

	t.Run("the index is a valid OCI index of exactly linux/amd64 and linux/arm64", func(t *testing.T) {
		if err := validate.Index(idx); err != nil {
			t.Fatalf("validate.Index: %v", err)
		}
		mt, err := idx.MediaType()
		if err != nil || mt != types.OCIImageIndex {
			t.Errorf("index media type %s (%v), want %s", mt, err, types.OCIImageIndex)
		}
		var got []string
		for p := range images(t, idx) {
			got = append(got, p)
		}
		slices.Sort(got)
		if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(got, want) {
			t.Errorf("platforms %v, want %v", got, want)
		}
		m, _ := idx.IndexManifest()
		if m.Annotations[LabelRevision] != spec.Revision || m.Annotations[LabelCreated] != "2026-11-20T13:03:07Z" {
			t.Errorf("index annotations %v, want revision and UTC created", m.Annotations)
		}
	})

	for platform, img := range images(t, idx) {
		t.Run(platform+" has the runtime config and labels the pod and verify-image rely on", func(t *testing.T) {
			if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
				t.Errorf("manifest media type %s, want %s", mt, types.OCIManifestSchema1)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			if m.Config.MediaType != types.OCIConfigJSON {
				t.Errorf("config media type %s, want %s", m.Config.MediaType, types.OCIConfigJSON)
			}
			if len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
				t.Errorf("layers %+v, want one %s", m.Layers, types.OCILayer)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if got := cf.OS + "/" + cf.Architecture; got != platform {
				t.Errorf("config platform %s, want %s", got, platform)
			}
			if cf.Config.User != "65532:65532" {
				t.Errorf("User %q, want 65532:65532", cf.Config.User)
			}
			if !slices.Equal(cf.Config.Entrypoint, []string{"/vault-kms-plugin"}) || cf.Config.Cmd != nil {
				t.Errorf("Entrypoint %q Cmd %q, want [/vault-kms-plugin] and no Cmd", cf.Config.Entrypoint, cf.Config.Cmd)
			}
			if cf.Config.WorkingDir != "/" {
				t.Errorf("WorkingDir %q, want /", cf.Config.WorkingDir)
			}
			if !cf.Created.Time.Equal(commitTime) || cf.Created.Location() != time.UTC {
				t.Errorf("Created %v, want the commit time %v in UTC", cf.Created.Time, commitTime)
			}
			wantLabels := map[string]string{
				"org.opencontainers.image.source":              spec.Source,
				"org.opencontainers.image.revision":            spec.Revision,
				"org.opencontainers.image.version":             spec.Version,
				"org.opencontainers.image.created":             "2026-11-20T13:03:07Z",
				"org.opencontainers.image.title":               "vault-kms-plugin",
				"io.github.vaultkms.kms-plugin.flag-interface": contract.FlagInterfaceVersion,
			}
			for k, v := range wantLabels {
				if cf.Config.Labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, cf.Config.Labels[k], v)
				}
			}
			if len(cf.Config.Labels) != len(wantLabels) {
				t.Errorf("labels %v, want exactly %v", cf.Config.Labels, wantLabels)
			}
			if len(cf.History) != 1 || !cf.History[0].Created.Time.Equal(commitTime) {
				t.Errorf("history %+v, want one entry at the commit time", cf.History)
			}
		})

		t.Run(platform+" layer holds the plugin at /vault-kms-plugin (0755, root) and the /etc files", func(t *testing.T) {
			layers, err := img.Layers()
			if err != nil || len(layers) != 1 {
				t.Fatalf("Layers: %d, %v", len(layers), err)
			}
			entries := readLayer(t, layers[0])
			var names []string
			for _, e := range entries {
				names = append(names, e.hdr.Name)
				if !e.hdr.ModTime.Equal(commitTime) {
					t.Errorf("%s: mtime %v, want the commit time", e.hdr.Name, e.hdr.ModTime)
				}
				if e.hdr.Uid != 0 || e.hdr.Gid != 0 || e.hdr.Uname != "" || e.hdr.Gname != "" {
					t.Errorf("%s: owner %d:%d (%q:%q), want 0:0 and no names", e.hdr.Name, e.hdr.Uid, e.hdr.Gid, e.hdr.Uname, e.hdr.Gname)
				}
			}
			want := []string{"etc/", "etc/group", "etc/nsswitch.conf", "etc/passwd", "vault-kms-plugin"}
			if !slices.Equal(names, want) {
				t.Fatalf("layer entries %q, want %q", names, want)
			}
			plugin := entries[4]
			if plugin.hdr.Typeflag != tar.TypeReg || plugin.hdr.Mode != 0o755 {
				t.Errorf("plugin: type %c mode %o, want a regular file 0755", plugin.hdr.Typeflag, plugin.hdr.Mode)
			}
			if wantPlugin := "plugin for " + strings.TrimPrefix(platform, "linux/"); string(plugin.content) != wantPlugin {
				t.Errorf("plugin content %q, want %q", plugin.content, wantPlugin)
			}
			if entries[0].hdr.Typeflag != tar.TypeDir || entries[0].hdr.Mode != 0o755 {
				t.Errorf("etc/: type %c mode %o, want a directory 0755", entries[0].hdr.Typeflag, entries[0].hdr.Mode)
			}
			for _, e := range entries[1:4] {
				if e.hdr.Mode != 0o644 {
					t.Errorf("%s: mode %o, want 0644", e.hdr.Name, e.hdr.Mode)
				}
			}
			if !strings.Contains(string(entries[3].content), "nonroot:x:65532:65532:") {
				t.Errorf("etc/passwd has no nonroot 65532 entry:\n%s", entries[3].content)
			}
			if !strings.Contains(string(entries[1].content), "nonroot:x:65532:") {
				t.Errorf("etc/group has no nonroot 65532 entry:\n%s", entries[1].content)
			}
		})
	}
}

type tarEntry struct {
	hdr     *tar.Header
	content []byte
}

func readLayer(t *testing.T, l v1.Layer) []tarEntry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatalf("Uncompressed: %v", err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var out []tarEntry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read layer tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s: %v", hdr.Name, err)
		}
		out = append(out, tarEntry{hdr: hdr, content: b})
	}
}

func TestBuildIsReproducible(t *testing.T) {
	first := mustDigest(t, mustBuild(t, testSpec()))

	t.Run("same inputs => same index digest", func(t *testing.T) {
		if again := mustDigest(t, mustBuild(t, testSpec())); again != first {
			t.Errorf("second build %s, first %s", again, first)
		}
	})
	t.Run("binaries given in the other order => same index digest", func(t *testing.T) {
		spec := testSpec()
		slices.Reverse(spec.Binaries)
		if got := mustDigest(t, mustBuild(t, spec)); got != first {
			t.Errorf("reordered build %s, first %s", got, first)
		}
	})
	t.Run("same instant in another time zone => same index digest", func(t *testing.T) {
		spec := testSpec()
		spec.Created = commitTime.UTC()
		if got := mustDigest(t, mustBuild(t, spec)); got != first {
			t.Errorf("UTC build %s, first %s", got, first)
		}
	})

	changes := map[string]func(*Spec){
		"another revision":      func(s *Spec) { s.Revision = "fedcba9876543210fedcba9876543210fedcba98" },
		"another version":       func(s *Spec) { s.Version = "v0.3.1" },
		"another source":        func(s *Spec) { s.Source = "https://example.com/fork" },
		"another commit time":   func(s *Spec) { s.Created = s.Created.Add(time.Second) },
		"another arm64 binary":  func(s *Spec) { s.Binaries[1].Plugin = []byte("plugin for arm64, rebuilt") },
		"one platform only":     func(s *Spec) { s.Binaries = s.Binaries[:1] },
		"an arm64 variant (v8)": func(s *Spec) { s.Binaries[1].Platform.Variant = "v8" },
	}
	for name, change := range changes {
		t.Run(name+" => another index digest", func(t *testing.T) {
			spec := testSpec()
			change(&spec)
			if got := mustDigest(t, mustBuild(t, spec)); got == first {
				t.Errorf("digest unchanged: %s", got)
			}
		})
	}
}

func TestLayerBytesAreDeterministic(t *testing.T) {
	// The index digest covers the layer digest, but this says where a
	// difference would come from: the tar or the gzip stream.
	plugin := bytes.Repeat([]byte("not really an executable "), 4096)
	tar1, err := layerTar(plugin, commitTime)
	if err != nil {
		t.Fatal(err)
	}
	tar2, _ := layerTar(slices.Clone(plugin), commitTime)
	if !bytes.Equal(tar1, tar2) {
		t.Fatal("two tars of the same input differ")
	}
	gz1, err := gzipBytes(tar1)
	if err != nil {
		t.Fatal(err)
	}
	gz2, _ := gzipBytes(tar2)
	if !bytes.Equal(gz1, gz2) {
		t.Fatal("two gzip streams of the same tar differ")
	}
	// RFC 1952: bytes 3..9 are FLG, MTIME (4 bytes), XFL, OS. No name, no
	// comment, no time: nothing from the build machine.
	if flg, mtime := gz1[3], gz1[4:8]; flg != 0 || !bytes.Equal(mtime, []byte{0, 0, 0, 0}) {
		t.Errorf("gzip header FLG %#x MTIME %x, want 0 and 0", flg, mtime)
	}
}

func TestBuildRejectsIncompleteSpecs(t *testing.T) {
	cases := map[string]struct {
		change func(*Spec)
		want   string
	}{
		"no binaries => error":           {change: func(s *Spec) { s.Binaries = nil }, want: "no plugin binaries"},
		"a platform twice => error":      {change: func(s *Spec) { s.Binaries[1].Platform = amd64 }, want: "linux/amd64 given twice"},
		"a platform without OS => error": {change: func(s *Spec) { s.Binaries[0].Platform.OS = "" }, want: "want OS/ARCH"},
		"an empty binary => error":       {change: func(s *Spec) { s.Binaries[1].Plugin = nil }, want: "linux/arm64: empty plugin binary"},
		"no revision => error":           {change: func(s *Spec) { s.Revision = "" }, want: "no revision"},
		"no creation time => error":      {change: func(s *Spec) { s.Created = time.Time{} }, want: "no creation time"},
		"no source => error":             {change: func(s *Spec) { s.Source = "" }, want: "no source"},
		"no version => error":            {change: func(s *Spec) { s.Version = "" }, want: "no version"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			spec := testSpec()
			tc.change(&spec)
			_, err := Build(spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
