package render

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with what Render produces")

// goldenCases are the directories under testdata/: each holds a kms.yaml
// and the files Render makes of it.
var goldenCases = []string{"dev", "enterprise"}

// load parses and validates testdata/<name>/kms.yaml.
func load(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cfg
}

func renderFiles(t *testing.T, cfg *config.Config) map[string]File {
	t.Helper()
	files, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]File{}
	for _, f := range files {
		out[f.Name] = f
	}
	return out
}

func TestGolden(t *testing.T) {
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", name)
			for _, f := range renderFiles(t, load(t, filepath.Join(dir, "kms.yaml"))) {
				p := filepath.Join(dir, f.Name)
				if *update {
					if err := os.WriteFile(p, f.Data, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(p)
				if err != nil {
					t.Fatalf("%v (run go test ./lifecycle/render -update to create it)", err)
				}
				if !bytes.Equal(f.Data, want) {
					t.Errorf("%s differs from what Render produces (run go test ./lifecycle/render -update and review the diff):\n%s", p, diff(string(want), string(f.Data)))
				}
			}
		})
	}
}

// The reviewed examples in manifests/ are what `kmsctl render` makes of
// manifests/kms.yaml today, and nothing else is left there.
func TestManifestsAreCurrent(t *testing.T) {
	const regenerate = "run `make manifests` (go run ./cmd/kmsctl render --config manifests/kms.yaml --out manifests) and review the diff"
	dir := filepath.Join("..", "..", "manifests")
	files := renderFiles(t, load(t, filepath.Join(dir, "kms.yaml")))
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%v: %s", err, regenerate)
			continue
		}
		if !bytes.Equal(got, f.Data) {
			t.Errorf("manifests/%s is stale: %s\n%s", f.Name, regenerate, diff(string(got), string(f.Data)))
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o111 != f.Mode&0o111 {
			t.Errorf("manifests/%s has mode %v, want %v: %s", f.Name, fi.Mode().Perm(), f.Mode, regenerate)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := files[e.Name()]; !ok && e.Name() != "kms.yaml" && !handWritten(e.Name()) {
			t.Errorf("manifests/%s is not rendered from manifests/kms.yaml: remove it, or render it", e.Name())
		}
	}
}

// handWritten says whether a file in manifests/ is written by hand rather
// than rendered: the monitoring files, which package manifests' own tests
// check, and those tests.
func handWritten(name string) bool {
	switch name {
	case "prometheus-rules.yaml", "prometheus-rules_test.yaml", "grafana-dashboard.json":
		return true
	}
	return strings.HasSuffix(name, ".go")
}

func TestRenderRefusesAnInvalidConfig(t *testing.T) {
	cfg := load(t, filepath.Join("testdata", "dev", "kms.yaml"))
	cfg.Vault.KMSPluginImage = "127.0.0.1:5000/vault-kms-plugin:latest"
	files, err := Render(cfg)
	if err == nil || files != nil {
		t.Fatalf("Render = %d files, %v; want no files and an error", len(files), err)
	}
	if !strings.Contains(err.Error(), "vault.kmsPluginImage: ") {
		t.Fatalf("error %q does not name vault.kmsPluginImage", err)
	}
}

func TestEveryFileHasAHeader(t *testing.T) {
	for _, name := range goldenCases {
		for _, f := range renderFiles(t, load(t, filepath.Join("testdata", name, "kms.yaml"))) {
			t.Run(name+"/"+f.Name, func(t *testing.T) {
				text := string(f.Data)
				if f.Name == SetupScriptFile {
					first, rest, _ := strings.Cut(text, "\n")
					if first != "#!/usr/bin/env bash" {
						t.Fatalf("first line %q, want a bash shebang", first)
					}
					text = rest
				}
				if !strings.HasPrefix(text, "# ") {
					t.Fatalf("%s does not start with a comment:\n%s", f.Name, text)
				}
				// The plugin's policy is the tested policy verbatim
				// (plugin/vaulttest.Policy), whose header says what it
				// is but not who wrote it.
				if f.Name != PolicyFile && !strings.Contains(text, "`kmsctl render`") {
					t.Fatalf("%s does not say kmsctl render generated it", f.Name)
				}
				wantMode := manifestMode
				if f.Name == SetupScriptFile {
					wantMode = scriptMode
				}
				if f.Mode != wantMode {
					t.Fatalf("mode %v, want %v", f.Mode, wantMode)
				}
			})
		}
	}
}

func TestSetupScriptParses(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash not found: the rendered vault-setup.sh is a bash script")
	}
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			script, err := SetupScript(load(t, filepath.Join("testdata", name, "kms.yaml")))
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bash, "-n")
			cmd.Stdin = bytes.NewReader(script)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("bash -n: %v\n%s", err, out)
			}
		})
	}
}

// The image's flag interface is a contract: a flag the plugin does not
// declare would make it exit on start.
func TestArgsAreInTheFlagContract(t *testing.T) {
	cfg := load(t, filepath.Join("testdata", "enterprise", "kms.yaml"))
	names := func(args []string) []string {
		var out []string
		for _, a := range args {
			if !strings.HasPrefix(a, "-") || strings.HasPrefix(a, "--") || !strings.Contains(a, "=") {
				t.Errorf("argument %q is not -name=value", a)
				continue
			}
			name, _, _ := strings.Cut(a[1:], "=")
			out = append(out, name)
		}
		return out
	}
	got := names(PluginArgs(cfg))
	for _, n := range got {
		if !slices.Contains(contract.RenderedFlags, n) {
			t.Errorf("PluginArgs passes -%s, which is not in contract.RenderedFlags", n)
		}
	}
	// The enterprise config sets every optional field, so every rendered
	// flag is used: a flag added to the contract and forgotten here shows.
	if want := contract.RenderedFlags; !sameSet(got, want) {
		t.Errorf("PluginArgs flags %q, want exactly contract.RenderedFlags %q", got, want)
	}
	if got := names(PrepareArgs(cfg)); !sameSet(got, contract.PrepareFlags) {
		t.Errorf("PrepareArgs flags %q, want exactly contract.PrepareFlags %q", got, contract.PrepareFlags)
	}

	t.Run("a flag outside the contract => Render's check refuses it", func(t *testing.T) {
		if err := checkContract([]string{"-listen-address=x", "-transit-key=k"}, contract.RenderedFlags); err == nil || !strings.Contains(err.Error(), "-transit-key") {
			t.Fatalf("checkContract = %v, want an error naming -transit-key", err)
		}
	})
	t.Run("optional fields unset => their flags left out", func(t *testing.T) {
		dev := names(PluginArgs(load(t, filepath.Join("testdata", "dev", "kms.yaml"))))
		want := []string{"listen-address", "vault-address", "vault-key-path", "approle-role-id", "approle-secret-id-path", "metrics-port"}
		if !slices.Equal(dev, want) {
			t.Fatalf("flags %q, want %q", dev, want)
		}
	})
}

func sameSet(a, b []string) bool {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return slices.Equal(a, b)
}

// diff lists the lines that differ, position by position: enough to see
// what changed in a golden file (the test says how to regenerate it).
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("line " + strconv.Itoa(i+1) + ":\n  file:   " + wl + "\n  render: " + gl + "\n")
			if b.Len() > 2000 {
				b.WriteString("...\n")
				break
			}
		}
	}
	return b.String()
}
