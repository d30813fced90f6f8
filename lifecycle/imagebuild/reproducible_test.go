//go:build integration

package imagebuild

import (
	"bytes"
	"crypto/sha256"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestPluginBuildIsReproducible builds the real plugin for linux/arm64
// twice with the Makefile's image variables (IMAGE_GOENV, IMAGE_GOFLAGS,
// IMAGE_LDFLAGS, read from the Makefile so the two cannot drift) and
// requires identical bytes. Build wraps the binary deterministically, so
// this is what makes two `make image` runs of one commit give one digest.
//
// The second build runs in a copy of the module at another path, outside
// any git checkout: a flag that let the source path (-trimpath) or VCS
// state (-buildvcs=false) into the binary makes the two differ. Both share
// the build cache, to keep the test near a minute on a busy machine; that
// compiling is deterministic is the Go toolchain's own promise (Go 1.21+).
func TestPluginBuildIsReproducible(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the plugin: %v", err)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	copyDir := filepath.Join(t.TempDir(), "elsewhere", "vault-kms-plugin")
	for _, p := range []string{"go.mod", "go.sum", "cmd/vault-kms-plugin", "plugin"} {
		copyTree(t, filepath.Join(root, p), filepath.Join(copyDir, p))
	}

	env := append(os.Environ(), strings.Fields(makefileVar(t, "IMAGE_GOENV"))...)
	env = append(env, "GOOS=linux", "GOARCH=arm64")
	args := append([]string{"build"}, strings.Fields(makefileVar(t, "IMAGE_GOFLAGS"))...)
	args = append(args, "-ldflags="+makefileVar(t, "IMAGE_LDFLAGS"))

	build := func(dir string) []byte {
		t.Helper()
		out := filepath.Join(t.TempDir(), "vault-kms-plugin-linux-arm64")
		cmd := exec.Command(goBin, append(args, "-o", out, "./cmd/vault-kms-plugin")...)
		cmd.Dir, cmd.Env = dir, env
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build in %s: %v\n%s", dir, err, msg)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := build(root)
	second := build(copyDir)

	if !bytes.Equal(first, second) {
		t.Fatalf("two builds of the same source differ: %x (%d bytes) in %s, %x (%d bytes) in %s",
			sha256.Sum256(first), len(first), root, sha256.Sum256(second), len(second), copyDir)
	}
	for _, leak := range []string{root, copyDir} {
		if bytes.Contains(first, []byte(leak)) {
			t.Errorf("the binary contains the build path %s", leak)
		}
	}
	if err := CheckBinary(v1.Platform{OS: "linux", Architecture: "arm64"}, first); err != nil {
		t.Errorf("the Makefile's flags do not give an image-ready binary: %v", err)
	}
}

// copyTree copies regular files from src to dst, keeping the layout.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}
