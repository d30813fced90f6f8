package imagebuild

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// refNameAnnotation names an index.json entry of an OCI layout, so tools can
// address it (`skopeo copy oci:DIR:NAME ...`).
const refNameAnnotation = "org.opencontainers.image.ref.name"

// WriteLayout writes idx as an OCI image layout at dir, replacing what was
// there: index.json lists one entry, idx itself, named refName, and blobs/
// holds idx, its manifests, configs and layers (the layout docker buildx
// writes for --output type=oci).
//
// The layout is built next to dir in dir+".tmp" and renamed into place, so
// dir is never a half-written layout; an existing layout is moved to
// dir+".old" first and removed after. It refuses to replace a directory that
// is not an OCI layout, so a mistyped --layout cannot delete a tree.
func WriteLayout(dir string, idx v1.ImageIndex, refName string) error {
	dir = filepath.Clean(dir)
	tmp, old := dir+".tmp", dir+".old"
	for _, d := range []string{dir, tmp, old} {
		if err := ownedOrAbsent(d); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove stale %s: %w", tmp, err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create parent of %s: %w", dir, err)
	}
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("start layout in %s: %w", tmp, err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{refNameAnnotation: refName})); err != nil {
		return fmt.Errorf("write index to %s: %w", tmp, err)
	}

	if _, err := os.Stat(dir); err == nil {
		if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("remove stale %s: %w", old, err)
		}
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("move previous layout aside: %w", err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("move layout into place: %w", err)
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("remove previous layout %s: %w", old, err)
	}
	return nil
}

// ownedOrAbsent accepts a path that does not exist, an empty directory, or
// an OCI layout (a directory with an oci-layout file, which layout.Write
// creates first, so an interrupted build's leftovers qualify too).
func ownedOrAbsent(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory; refusing to replace it", dir)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("%s exists and is not an OCI layout (no oci-layout file); refusing to replace it", dir)
	}
	return nil
}
