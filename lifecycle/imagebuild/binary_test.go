package imagebuild

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fakeELF is the smallest ELF64 file debug/elf accepts: a header for
// machine, and with interp a PT_INTERP program header, as a binary built
// with cgo has.
func fakeELF(t *testing.T, machine elf.Machine, interp bool) []byte {
	t.Helper()
	h := elf.Header64{
		Ident:     [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)},
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(machine),
		Version:   uint32(elf.EV_CURRENT),
		Ehsize:    64,
		Phentsize: 56,
	}
	if interp {
		h.Phoff, h.Phnum = 64, 1
	}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, h); err != nil {
		t.Fatal(err)
	}
	if interp {
		if err := binary.Write(&buf, binary.LittleEndian, elf.Prog64{Type: uint32(elf.PT_INTERP)}); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestCheckBinary(t *testing.T) {
	cases := map[string]struct {
		platform v1.Platform
		plugin   []byte
		want     string // "" for no error
	}{
		"static amd64 ELF for linux/amd64 => ok": {platform: amd64, plugin: fakeELF(t, elf.EM_X86_64, false)},
		"static arm64 ELF for linux/arm64 => ok": {platform: arm64, plugin: fakeELF(t, elf.EM_AARCH64, false)},
		"amd64 ELF for linux/arm64 => wrong architecture": {
			platform: arm64, plugin: fakeELF(t, elf.EM_X86_64, false), want: "binary is for EM_X86_64, want EM_AARCH64"},
		"dynamically linked ELF => build with CGO_ENABLED=0": {
			platform: amd64, plugin: fakeELF(t, elf.EM_X86_64, true), want: "dynamically linked (build with CGO_ENABLED=0)"},
		"a shell script => not ELF": {
			platform: amd64, plugin: []byte("#!/bin/sh\nexit 0\n"), want: "not an ELF executable"},
		"windows platform => only linux": {
			platform: v1.Platform{OS: "windows", Architecture: "amd64"}, plugin: fakeELF(t, elf.EM_X86_64, false), want: "only linux"},
		"linux/s390x => architecture not supported": {
			platform: v1.Platform{OS: "linux", Architecture: "s390x"}, plugin: fakeELF(t, elf.EM_S390, false), want: "not supported"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := CheckBinary(tc.platform, tc.plugin)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("CheckBinary: %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("CheckBinary: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
