package imagebuild

import (
	"bytes"
	"debug/elf"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// elfMachines maps the architectures the plugin is published for to their
// ELF machine.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// CheckBinary reports whether plugin can run as the entrypoint of an image
// for platform: a Linux ELF executable for that architecture with no
// program interpreter. The image has no libc and no loader, so a binary
// built with cgo fails only on the node, as "no such file or directory";
// and a binary for the wrong architecture fails there as "exec format error".
func CheckBinary(platform v1.Platform, plugin []byte) error {
	if platform.OS != "linux" {
		return fmt.Errorf("platform %s: only linux images are built", platform)
	}
	want, ok := elfMachines[platform.Architecture]
	if !ok {
		return fmt.Errorf("platform %s: architecture not supported (want amd64 or arm64)", platform)
	}
	f, err := elf.NewFile(bytes.NewReader(plugin))
	if err != nil {
		return fmt.Errorf("platform %s: not an ELF executable: %w", platform, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("platform %s: ELF type %s, want an executable", platform, f.Type)
	}
	if f.Machine != want {
		return fmt.Errorf("platform %s: binary is for %s, want %s", platform, f.Machine, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("platform %s: binary is dynamically linked (build with CGO_ENABLED=0)", platform)
		}
	}
	return nil
}
