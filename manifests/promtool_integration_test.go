//go:build integration

package manifests

import (
	"os/exec"
	"strings"
	"testing"
)

// promtool finds promtool, or fails the test: the rules are not checked
// without it, and a skipped check would look like a passing one.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found in PATH: run `make promtool` (apt-get install prometheus; Debian's package ships promtool): %v", err)
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), promtool(t), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestPromtoolChecksTheRules(t *testing.T) {
	runPromtool(t, "check", "rules", rulesFile)
}

func TestPromtoolRunsTheRuleTests(t *testing.T) {
	runPromtool(t, "test", "rules", ruleTestsFile)
}
