package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
)

const exampleConfig = "../../manifests/kms.yaml"

func runRender(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return execute(newRenderCmd(), args...)
}

func TestRenderCommand(t *testing.T) {
	cfg, err := config.Load(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	want, err := render.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("valid config => every file written with its mode, paths printed", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out") // created by render
		out, err := runRender(t, "--config", exampleConfig, "--out", dir)
		if err != nil {
			t.Fatal(err)
		}
		var printed []string
		for _, f := range want {
			p := filepath.Join(dir, f.Name)
			printed = append(printed, p)
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, f.Data) {
				t.Errorf("%s differs from render.Render", f.Name)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != f.Mode {
				t.Errorf("%s: mode %v, want %v", f.Name, fi.Mode().Perm(), f.Mode)
			}
		}
		if got := strings.Fields(out); strings.Join(got, "\n") != strings.Join(printed, "\n") {
			t.Errorf("printed %q, want the paths %q", got, printed)
		}
	})

	t.Run("files already there => replaced, no temporary file left", func(t *testing.T) {
		dir := t.TempDir()
		stale := filepath.Join(dir, render.StaticPodFile)
		if err := os.WriteFile(stale, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := runRender(t, "--config", exampleConfig, "--out", dir); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(stale)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[0].Data) {
			t.Errorf("%s was not replaced", stale)
		}
		if fi, _ := os.Stat(stale); fi.Mode().Perm() != 0o644 {
			t.Errorf("replaced file mode %v, want 0644", fi.Mode().Perm())
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != len(want) {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("directory holds %q, want the %d rendered files alone", names, len(want))
		}
	})

	t.Run("invalid config => error naming the field, nothing written", func(t *testing.T) {
		base, err := os.ReadFile(exampleConfig)
		if err != nil {
			t.Fatal(err)
		}
		bad := filepath.Join(t.TempDir(), "kms.yaml")
		text := strings.Replace(string(base), "vaultAddress: https://vault-1.example.com:8200", "vaultAddress: http://vault-1.example.com:8200", 1)
		if err := os.WriteFile(bad, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "out")
		_, err = runRender(t, "--config", bad, "--out", dir)
		if err == nil || !strings.Contains(err.Error(), `vault.vaultAddress: "http://vault-1.example.com:8200" must be https://host[:port] with no path`) {
			t.Fatalf("render = %v, want an error naming vault.vaultAddress", err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("output directory exists after a refused config: %v", err)
		}
	})

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "no --config => error naming it", args: []string{"--out", "x"}, want: "--config is required"},
		{name: "no --out => error naming it", args: []string{"--config", exampleConfig}, want: "--out is required"},
		{name: "missing config file => error naming it", args: []string{"--config", "/nonexistent/kms.yaml", "--out", "x"}, want: "/nonexistent/kms.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := runRender(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("render = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
