package main

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// staticELF is the smallest file that passes imagebuild.CheckBinary for
// machine: an ELF64 executable header with no program interpreter.
func staticELF(t *testing.T, machine elf.Machine) []byte {
	t.Helper()
	var buf bytes.Buffer
	err := binary.Write(&buf, binary.LittleEndian, elf.Header64{
		Ident:   [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)},
		Type:    uint16(elf.ET_EXEC),
		Machine: uint16(machine),
		Version: uint32(elf.EV_CURRENT),
		Ehsize:  64,
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// imageBuildArgs writes fake binaries for both platforms and returns the
// arguments of a complete `kmsctl image build` writing to layoutDir.
func imageBuildArgs(t *testing.T, layoutDir string) []string {
	t.Helper()
	dir := t.TempDir()
	amd := filepath.Join(dir, "vault-kms-plugin-linux-amd64")
	arm := filepath.Join(dir, "vault-kms-plugin-linux-arm64")
	if err := os.WriteFile(amd, staticELF(t, elf.EM_X86_64), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(arm, staticELF(t, elf.EM_AARCH64), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{"image", "build",
		"--binary", "linux/amd64=" + amd,
		"--binary", "linux/arm64=" + arm,
		"--source", "https://github.com/vaultkms/vault-kms-plugin",
		"--revision", "0123456789abcdef0123456789abcdef01234567",
		"--version", "v0.3.0",
		"--created", "2026-11-20T14:03:07+01:00",
		"--layout", layoutDir,
	}
}

// runKmsctl runs the root command as main does and returns its stdout.
func runKmsctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	err := root.Execute()
	t.Logf("stderr:\n%s", stderr.String())
	return stdout.String(), err
}

func TestImageBuildWritesTheLayoutAndPrintsTheDigest(t *testing.T) {
	layoutDir := filepath.Join(t.TempDir(), "oci")
	out, err := runKmsctl(t, imageBuildArgs(t, layoutDir)...)
	if err != nil {
		t.Fatalf("kmsctl image build: %v", err)
	}
	outer, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatalf("read the layout: %v", err)
	}
	m, err := outer.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("index.json: %v, %v", m, err)
	}
	if want := m.Manifests[0].Digest.String() + "\n"; out != want {
		t.Errorf("stdout %q, want the index digest %q alone", out, want)
	}

	t.Run("the same flags again => the same digest", func(t *testing.T) {
		again, err := runKmsctl(t, imageBuildArgs(t, layoutDir)...)
		if err != nil {
			t.Fatalf("second build: %v", err)
		}
		if again != out {
			t.Errorf("second build printed %q, first %q", again, out)
		}
	})
}

func TestImageBuildPushPrintsTheDigestReferenceLast(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	repo := strings.TrimPrefix(srv.URL, "http://") + "/vault-kms-plugin"

	args := append(imageBuildArgs(t, filepath.Join(t.TempDir(), "oci")), "--push", repo, "--allow-insecure-registry")
	out, err := runKmsctl(t, args...)
	if err != nil {
		t.Fatalf("kmsctl image build --push: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("stdout %q, want the digest then the reference", out)
	}
	digest, ref := lines[0], lines[1]
	if want := repo + "@" + digest; ref != want {
		t.Errorf("last line %q, want %q", ref, want)
	}
	r, err := name.NewDigest(ref)
	if err != nil {
		t.Fatalf("last line is not a digest reference: %v", err)
	}
	pulled, err := remote.Index(r)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if got, _ := pulled.Digest(); got.String() != digest {
		t.Errorf("registry serves %s at %s", got, ref)
	}
}

func TestImageBuildPushToAnUnreachableRegistrySaysWhich(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	args := append(imageBuildArgs(t, filepath.Join(t.TempDir(), "oci")), "--push", addr+"/vault-kms-plugin")
	_, err = runKmsctl(t, args...)
	if err == nil {
		t.Fatal("push to a closed port succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, "registry "+addr+" unreachable") || strings.Contains(msg, "\n") {
		t.Errorf("error %q, want one line saying registry %s is unreachable", msg, addr)
	}
}

func TestImageBuildRejectsBinariesThatCannotRunInTheImage(t *testing.T) {
	layoutDir := filepath.Join(t.TempDir(), "oci")
	args := imageBuildArgs(t, layoutDir)
	// Put the amd64 binary where arm64 belongs.
	amd := strings.TrimPrefix(args[3], "linux/amd64=")
	args[5] = "linux/arm64=" + amd
	_, err := runKmsctl(t, args...)
	if err == nil || !strings.Contains(err.Error(), "--binary "+amd+": platform linux/arm64: binary is for EM_X86_64, want EM_AARCH64") {
		t.Errorf("error %v, want --binary %s named as built for the wrong architecture", err, amd)
	}
	if _, err := os.Stat(layoutDir); !os.IsNotExist(err) {
		t.Errorf("a layout was written despite the bad binary (stat: %v)", err)
	}
}

func TestImageBuildOptionsValidate(t *testing.T) {
	valid := func() *imageBuildOptions {
		return &imageBuildOptions{
			binaries: []string{"linux/amd64=/a", "linux/arm64=/b"},
			source:   "https://github.com/vaultkms/vault-kms-plugin",
			revision: "0123456789abcdef0123456789abcdef01234567",
			version:  "v0.3.0",
			created:  "2026-11-20T14:03:07+01:00",
			layout:   "/tmp/oci",
		}
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	cases := map[string]struct {
		change func(*imageBuildOptions)
		want   string
	}{
		"no --binary => names --binary":             {change: func(o *imageBuildOptions) { o.binaries = nil }, want: "--binary is required"},
		"--binary without = => names it":            {change: func(o *imageBuildOptions) { o.binaries[0] = "linux/amd64" }, want: `--binary "linux/amd64": want OS/ARCH=PATH`},
		"--binary without arch => names it":         {change: func(o *imageBuildOptions) { o.binaries[0] = "linux=/a" }, want: `platform "linux" is not OS/ARCH`},
		"one platform twice => names --binary":      {change: func(o *imageBuildOptions) { o.binaries[1] = "linux/amd64=/b" }, want: "--binary: platform linux/amd64 given twice"},
		"--source not a URL => names --source":      {change: func(o *imageBuildOptions) { o.source = "github.com/x" }, want: "--source"},
		"short --revision => names --revision":      {change: func(o *imageBuildOptions) { o.revision = "0123456" }, want: "--revision"},
		"non-hex --revision => names --revision":    {change: func(o *imageBuildOptions) { o.revision = strings.Repeat("g", 40) }, want: "--revision"},
		"--version with a space => names --version": {change: func(o *imageBuildOptions) { o.version = "v1 beta" }, want: "--version"},
		"no time => names both flags":               {change: func(o *imageBuildOptions) { o.created = "" }, want: "--created or --source-date-epoch is required"},
		"both times => names both flags": {change: func(o *imageBuildOptions) { o.sourceDateEpoch = "1700000000" },
			want: "--created and --source-date-epoch both set"},
		"--created not RFC 3339 => names --created": {change: func(o *imageBuildOptions) { o.created = "2026-11-20 14:03" }, want: "--created"},
		"--source-date-epoch not a number => names it": {change: func(o *imageBuildOptions) { o.created, o.sourceDateEpoch = "", "yesterday" },
			want: "--source-date-epoch"},
		"no --layout => names --layout":               {change: func(o *imageBuildOptions) { o.layout = "" }, want: "--layout is required"},
		"--push with a tag => names --push":           {change: func(o *imageBuildOptions) { o.push = "registry.example/p:v1" }, want: "--push"},
		"--allow-insecure-registry alone => names it": {change: func(o *imageBuildOptions) { o.insecure = true }, want: "--allow-insecure-registry applies only with --push"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			o := valid()
			tc.change(o)
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}

	t.Run("--source-date-epoch => the same instant as --created", func(t *testing.T) {
		a, b := valid(), valid()
		b.created, b.sourceDateEpoch = "", "1795179787" // 2026-11-20T13:03:07Z
		if err := a.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := b.Validate(); err != nil {
			t.Fatal(err)
		}
		if !a.createdTime.Equal(b.createdTime) {
			t.Errorf("--created gives %v, --source-date-epoch %v", a.createdTime, b.createdTime)
		}
	})
}
