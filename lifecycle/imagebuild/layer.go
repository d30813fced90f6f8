package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"embed"
	"fmt"
	"io/fs"
	"strings"
	"time"
)

// rootFS holds the image's /etc files. The Dockerfile copies the same
// directory, so both ways of building the image carry the same users and
// name-service order:
//   - passwd and group name root and nonroot (65532), so that tools which
//     map the image's UID to a name (scanners, `docker run --user nonroot`,
//     anything calling getpwuid in the container) find it;
//   - nsswitch.conf says "hosts: files dns": without it Go's resolver asks
//     DNS first, and a Vault name pinned in /etc/hosts (a static pod's
//     hostAliases) would lose to DNS.
//
//go:embed rootfs/etc
var rootFS embed.FS

const (
	dirMode    = 0o755
	fileMode   = 0o644
	pluginMode = 0o755
)

// layerTar writes the layer: the /etc files, then the plugin at Entrypoint.
// Every header is fixed (root-owned, no user or group names, mtime =
// created, USTAR), so the bytes depend only on the inputs.
func layerTar(plugin []byte, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	header := func(name string, typ byte, mode int64, size int) *tar.Header {
		return &tar.Header{
			Typeflag: typ,
			Name:     name,
			Mode:     mode,
			Size:     int64(size),
			ModTime:  created,
			Format:   tar.FormatUSTAR,
		}
	}
	// WalkDir visits in lexical order, which fixes the entry order.
	err := fs.WalkDir(rootFS, "rootfs", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(path, "rootfs/")
		if path == "rootfs" {
			return nil
		}
		if d.IsDir() {
			return tw.WriteHeader(header(name+"/", tar.TypeDir, dirMode, 0))
		}
		content, err := rootFS.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(header(name, tar.TypeReg, fileMode, len(content))); err != nil {
			return err
		}
		_, err = tw.Write(content)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("write /etc files to layer: %w", err)
	}
	if err := tw.WriteHeader(header(strings.TrimPrefix(Entrypoint, "/"), tar.TypeReg, pluginMode, len(plugin))); err != nil {
		return nil, fmt.Errorf("write plugin to layer: %w", err)
	}
	if _, err := tw.Write(plugin); err != nil {
		return nil, fmt.Errorf("write plugin to layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close layer tar: %w", err)
	}
	return buf.Bytes(), nil
}

// gzipBytes compresses with the standard library at a fixed level and an
// empty header (no name, mtime 0): same input and Go release, same bytes.
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	return buf.Bytes(), nil
}
