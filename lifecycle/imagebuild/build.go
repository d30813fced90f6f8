// Package imagebuild assembles the plugin's container image without a
// container engine: one OCI image per platform, each a single layer holding
// the static plugin binary and the few /etc files a non-root user needs, and
// an OCI index over them.
//
// The image is reproducible: everything in it is a function of the Spec. No
// clock is read (the commit time stands in for every timestamp), the tar
// headers are fixed, the layer is compressed here with the standard
// library's gzip (which writes no name or time), and platforms are ordered,
// so two builds of one commit with one toolchain give one index digest.
//
// Build is pure; WriteLayout and Push do the I/O.
package imagebuild

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

// Title is the image's org.opencontainers.image.title label.
const Title = "vault-kms-plugin"

// Entrypoint is where the plugin binary lives in the image; the rendered
// static pod and the Dockerfile rely on this path.
const Entrypoint = "/vault-kms-plugin"

// User is the image's user: distroless's nonroot, which /etc/passwd in the
// image names so that tools resolving the user find it.
const User = "65532:65532"

// OCI annotation keys used as config labels and index annotations
// (github.com/opencontainers/image-spec, annotations.md).
const (
	LabelSource   = "org.opencontainers.image.source"
	LabelRevision = "org.opencontainers.image.revision"
	LabelVersion  = "org.opencontainers.image.version"
	LabelCreated  = "org.opencontainers.image.created"
	LabelTitle    = "org.opencontainers.image.title"
)

// Spec is everything the image is made of. Equal Specs give equal digests.
type Spec struct {
	// Binaries holds one static plugin binary per platform.
	Binaries []Binary
	// Source is the repository URL (org.opencontainers.image.source).
	Source string
	// Revision is the commit the binaries were built from.
	Revision string
	// Version is the human version, such as `git describe` prints.
	Version string
	// Created is the commit time; it stands in for every timestamp in the
	// image, truncated to the second and taken in UTC.
	Created time.Time
}

// Binary is the plugin built for one platform.
type Binary struct {
	// Platform is where the binary runs; only OS, Architecture and Variant
	// are used.
	Platform v1.Platform
	// Plugin is the executable's content.
	Plugin []byte
}

// Build assembles the OCI index for spec, its manifests ordered by platform
// so the order of spec.Binaries does not change the digest.
func Build(spec Spec) (v1.ImageIndex, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	created := spec.Created.UTC().Truncate(time.Second)
	binaries := slices.Clone(spec.Binaries)
	slices.SortFunc(binaries, func(a, b Binary) int {
		return strings.Compare(platformOf(a.Platform).String(), platformOf(b.Platform).String())
	})

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, b := range binaries {
		img, err := buildImage(b, spec, created)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", b.Platform, err)
		}
		platform := platformOf(b.Platform)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				MediaType: types.OCIManifestSchema1,
				Platform:  &platform,
			},
		})
	}
	annotated, ok := mutate.Annotations(idx, map[string]string{
		LabelSource:   spec.Source,
		LabelRevision: spec.Revision,
		LabelVersion:  spec.Version,
		LabelCreated:  created.Format(time.RFC3339),
	}).(v1.ImageIndex)
	if !ok {
		// mutate.Annotations returns its argument's kind; this would be a
		// change in go-containerregistry, not bad input.
		return nil, errors.New("annotate index: go-containerregistry returned no ImageIndex")
	}
	return annotated, nil
}

// labels are the config labels every image of spec carries.
func labels(spec Spec) map[string]string {
	return map[string]string{
		LabelSource:                 spec.Source,
		LabelRevision:               spec.Revision,
		LabelVersion:                spec.Version,
		LabelCreated:                spec.Created.UTC().Truncate(time.Second).Format(time.RFC3339),
		LabelTitle:                  Title,
		contract.FlagInterfaceLabel: contract.FlagInterfaceVersion,
	}
}

func (s Spec) validate() error {
	if len(s.Binaries) == 0 {
		return errors.New("no plugin binaries")
	}
	seen := map[string]bool{}
	for _, b := range s.Binaries {
		p := platformOf(b.Platform)
		if p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("platform %q: want OS/ARCH", b.Platform.String())
		}
		if seen[p.String()] {
			return fmt.Errorf("platform %s given twice", p)
		}
		seen[p.String()] = true
		if len(b.Plugin) == 0 {
			return fmt.Errorf("platform %s: empty plugin binary", p)
		}
	}
	switch {
	case s.Source == "":
		return errors.New("no source")
	case s.Revision == "":
		return errors.New("no revision")
	case s.Version == "":
		return errors.New("no version")
	}
	if s.Created.IsZero() {
		return errors.New("no creation time")
	}
	return nil
}

// platformOf keeps the fields that select an image; the rest would only
// make equal platforms compare unequal.
func platformOf(p v1.Platform) v1.Platform {
	return v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}

func buildImage(b Binary, spec Spec, created time.Time) (v1.Image, error) {
	layer, err := buildLayer(b.Plugin, created)
	if err != nil {
		return nil, err
	}
	platform := platformOf(b.Platform)
	cfg := &v1.ConfigFile{
		Architecture: platform.Architecture,
		OS:           platform.OS,
		Variant:      platform.Variant,
		Created:      v1.Time{Time: created},
		Config: v1.Config{
			User:       User,
			Entrypoint: []string{Entrypoint},
			WorkingDir: "/",
			Labels:     labels(spec),
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "kmsctl image build",
			Comment:   "vault-kms-plugin and /etc/passwd, /etc/group, /etc/nsswitch.conf",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return img, nil
}

// buildLayer compresses the layer here, once, rather than letting
// go-containerregistry gzip on every read: the bytes are then fixed by this
// package (level, no header name or time) and not by how a caller reads them.
func buildLayer(plugin []byte, created time.Time) (v1.Layer, error) {
	uncompressed, err := layerTar(plugin, created)
	if err != nil {
		return nil, err
	}
	compressed, err := gzipBytes(uncompressed)
	if err != nil {
		return nil, err
	}
	l := &memLayer{uncompressed: uncompressed, compressed: compressed}
	if l.digest, _, err = v1.SHA256(bytes.NewReader(compressed)); err != nil {
		return nil, fmt.Errorf("layer digest: %w", err)
	}
	if l.diffID, _, err = v1.SHA256(bytes.NewReader(uncompressed)); err != nil {
		return nil, fmt.Errorf("layer diff ID: %w", err)
	}
	return l, nil
}

// memLayer is a gzipped tar held in memory with both of its digests. (A
// tarball.LayerFromOpener layer would do, but its descriptor carries an
// empty annotations map that does not survive a JSON round trip, which
// validate.Index rejects.)
type memLayer struct {
	uncompressed, compressed []byte
	digest, diffID           v1.Hash
}

var _ v1.Layer = (*memLayer)(nil)

// Digest is the sha256 of the compressed layer.
func (l *memLayer) Digest() (v1.Hash, error) { return l.digest, nil }

// DiffID is the sha256 of the uncompressed tar.
func (l *memLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// Compressed returns the gzipped tar.
func (l *memLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}

// Uncompressed returns the tar.
func (l *memLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.uncompressed)), nil
}

// Size is the compressed size.
func (l *memLayer) Size() (int64, error) { return int64(len(l.compressed)), nil }

// MediaType is the OCI gzipped layer type.
func (l *memLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
