package imagebuild

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

// repoRoot is where the Makefile and the Dockerfile live, seen from this
// package's directory (go test's working directory).
const repoRoot = "../.."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd, args string
}

func readDockerfile(t *testing.T) []instruction {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// finalStage is what the Dockerfile's image is made of: the instructions
// after its last FROM.
func finalStage(t *testing.T, all []instruction) []instruction {
	t.Helper()
	last := -1
	for i, in := range all {
		if in.cmd == "FROM" {
			last = i
		}
	}
	if last < 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	return all[last+1:]
}

var labelRE = regexp.MustCompile(`([A-Za-z0-9._-]+)=("(?:[^"\\]|\\.)*"|\S+)`)

func dockerfileLabels(stage []instruction) map[string]string {
	labels := map[string]string{}
	for _, in := range stage {
		if in.cmd != "LABEL" {
			continue
		}
		for _, m := range labelRE.FindAllStringSubmatch(in.args, -1) {
			labels[m[1]] = strings.Trim(m[2], `"`)
		}
	}
	return labels
}

func TestDockerfileBuildsTheSameImage(t *testing.T) {
	all := readDockerfile(t)
	stage := finalStage(t, all)
	got := dockerfileLabels(stage)

	t.Run("its flag-interface label equals contract.FlagInterfaceVersion", func(t *testing.T) {
		v, ok := got[contract.FlagInterfaceLabel]
		if !ok {
			t.Fatalf("no LABEL %s in the Dockerfile's final stage (labels: %v)", contract.FlagInterfaceLabel, got)
		}
		if v != contract.FlagInterfaceVersion {
			t.Errorf("Dockerfile LABEL %s=%q, contract.FlagInterfaceVersion is %q", contract.FlagInterfaceLabel, v, contract.FlagInterfaceVersion)
		}
	})

	t.Run("it sets every label kmsctl image build sets", func(t *testing.T) {
		for k := range labels(testSpec()) {
			if _, ok := got[k]; !ok {
				t.Errorf("Dockerfile sets no LABEL %s", k)
			}
		}
		if got[LabelTitle] != Title {
			t.Errorf("title label %q, want %q", got[LabelTitle], Title)
		}
	})

	t.Run("user, entrypoint and /etc files are the same", func(t *testing.T) {
		var user, entrypoint string
		var copies []string
		for _, in := range stage {
			switch in.cmd {
			case "USER":
				user = in.args
			case "ENTRYPOINT":
				entrypoint = in.args
			case "COPY":
				copies = append(copies, in.args)
			}
		}
		if user != User {
			t.Errorf("USER %q, want %q", user, User)
		}
		var ep []string
		if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || !slices.Equal(ep, []string{Entrypoint}) {
			t.Errorf("ENTRYPOINT %s, want [%q] in exec form", entrypoint, Entrypoint)
		}
		if !slices.Contains(copies, "lifecycle/imagebuild/rootfs/ /") {
			t.Errorf("final stage COPYs %q, want the /etc files from lifecycle/imagebuild/rootfs/", copies)
		}
		if !slices.ContainsFunc(copies, func(c string) bool { return strings.HasSuffix(c, " "+Entrypoint) }) {
			t.Errorf("final stage COPYs %q, want the plugin at %s", copies, Entrypoint)
		}
	})

	t.Run("its go build uses the Makefile's image flags", func(t *testing.T) {
		var build string
		for _, in := range all {
			if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
				build = in.args
			}
		}
		if ldflags := "-ldflags='" + makefileVar(t, "IMAGE_LDFLAGS") + "'"; !strings.Contains(build, ldflags) {
			t.Errorf("Dockerfile go build lacks %s: %s", ldflags, build)
		}
		fields := strings.Fields(build)
		for _, w := range strings.Fields(makefileVar(t, "IMAGE_GOENV") + " " + makefileVar(t, "IMAGE_GOFLAGS")) {
			if !slices.Contains(fields, w) {
				t.Errorf("Dockerfile go build lacks %s: %s", w, build)
			}
		}
	})
}

// makefileVar returns the value of a `NAME := value` line of the Makefile.
func makefileVar(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*:=[ \t]*(.*)$`)
	m := re.FindSubmatch(b)
	if m == nil {
		t.Fatalf("Makefile has no %s := line", name)
	}
	return strings.TrimSpace(string(m[1]))
}
