package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFingerprintChangesWhenFileIsReplaced(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret-id")
	if err := os.WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := fingerprint(p)
	// Replace atomically, as a Kubernetes volume or an operator would.
	tmp := filepath.Join(dir, "tmp")
	if err := os.WriteFile(tmp, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if after := fingerprint(p); after == before {
		t.Fatalf("fingerprint unchanged after replacing the file: %s", after)
	}
}

func TestReadCredentialErrorsNeverHoldTheContent(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readCredential(empty, "secret ID"); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: err = %v", err)
	}
	if _, err := readCredential(filepath.Join(dir, "missing"), "secret ID"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: err = %v", err)
	}
	ok := filepath.Join(dir, "ok")
	if err := os.WriteFile(ok, []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := readCredential(ok, "secret ID"); err != nil || v != "s3cr3t" {
		t.Fatalf("readCredential = %q, %v", v, err)
	}
}
