package manifests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vault-kms-plugin/plugin/metrics"
)

const (
	rulesFile     = "prometheus-rules.yaml"
	ruleTestsFile = "prometheus-rules_test.yaml"
	dashboardFile = "grafana-dashboard.json"
	readme        = "../README.md"
	runbookPrefix = "https://github.com/vaultkms/vault-kms-plugin/blob/main/README.md#"
)

// fromPrometheus are series Prometheus itself writes for every target.
var fromPrometheus = []string{"up"}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	readYAML(t, rulesFile, &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s has no rules", rulesFile)
	}
	return rules
}

type ruleTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		Name        string `json:"name"`
		InputSeries []struct {
			Series string `json:"series"`
		} `json:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string            `json:"eval_time"`
			Alertname string            `json:"alertname"`
			ExpAlerts []json.RawMessage `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestEveryAlertIsTestedFiringAndQuiet(t *testing.T) {
	var tests ruleTests
	readYAML(t, ruleTestsFile, &tests)
	if !slices.Equal(tests.RuleFiles, []string{rulesFile}) {
		t.Errorf("%s tests rule_files %v, want [%s]", ruleTestsFile, tests.RuleFiles, rulesFile)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, r := range loadRules(t) {
		if r.Alert == "" {
			continue
		}
		if !firing[r.Alert] {
			t.Errorf("%s has no case where %s fires", ruleTestsFile, r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("%s has no case where %s stays quiet (exp_alerts: [])", ruleTestsFile, r.Alert)
		}
	}
}

func TestEveryAlertSaysHowBadAndWhatToDo(t *testing.T) {
	anchors := readmeAnchors(t)
	for _, r := range loadRules(t) {
		if r.Alert == "" {
			continue
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
			t.Errorf("%s: severity label %q, want critical, warning or info", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		url := r.Annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(url, runbookPrefix)
		switch {
		case !ok:
			t.Errorf("%s: runbook_url %q does not start with %s", r.Alert, url, runbookPrefix)
		case !anchors[anchor]:
			t.Errorf("%s: runbook_url %q: README.md has no heading with anchor #%s", r.Alert, url, anchor)
		}
	}
}

// The README section the runbook links land in links to others; a renamed
// heading must not leave it pointing nowhere.
func TestREADMELinksWithinItselfResolve(t *testing.T) {
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	anchors := readmeAnchors(t)
	for _, m := range inPageLink.FindAllStringSubmatch(string(b), -1) {
		if !anchors[m[1]] {
			t.Errorf("README.md links to #%s, which is no heading's anchor", m[1])
		}
	}
}

var inPageLink = regexp.MustCompile(`\]\(#([^)\s]+)\)`)

// readmeAnchors returns the anchors GitHub gives README.md's headings.
func readmeAnchors(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		m := heading.FindStringSubmatch(line)
		if fenced || m == nil {
			continue
		}
		a := githubAnchor(m[1])
		if n := seen[a]; n > 0 {
			seen[a]++
			a = fmt.Sprintf("%s-%d", a, n)
		} else {
			seen[a] = 1
		}
		anchors[a] = true
	}
	return anchors
}

var heading = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)

// githubAnchor is the anchor GitHub makes of a heading: lower case,
// punctuation dropped, spaces turned into hyphens.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestRulesUseOnlyMetricsThePluginExports(t *testing.T) {
	exported := exportedMetrics(t)
	for _, r := range loadRules(t) {
		names, err := metricNames(r.Expr)
		if err != nil {
			t.Errorf("%s%s: %v", r.Alert, r.Record, err)
		}
		if len(names) == 0 {
			t.Errorf("%s%s: no metric name found in %q", r.Alert, r.Record, r.Expr)
		}
		for _, n := range names {
			if !exported[n] {
				t.Errorf("%s%s uses %s, which the plugin does not export", r.Alert, r.Record, n)
			}
		}
	}
	// The unit tests' input series must be real series too, or they test
	// rules against data that never occurs.
	var tests ruleTests
	readYAML(t, ruleTestsFile, &tests)
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			name, _, _ := strings.Cut(s.Series, "{")
			if !exported[strings.TrimSpace(name)] {
				t.Errorf("%s, test %q: input series %s: the plugin does not export %s", ruleTestsFile, tc.Name, s.Series, name)
			}
		}
	}
}

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func (d *datasource) templated() bool {
	return d != nil && d.Type == "prometheus" && d.UID == "${datasource}"
}

func TestDashboardUsesOnlyMetricsThePluginExports(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d, want 39 (Grafana 10.4) or later", d.SchemaVersion)
	}
	exported := exportedMetrics(t)
	check := func(where, expr string) {
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v", where, err)
		}
		if len(names) == 0 {
			t.Errorf("%s: no metric name found in %q", where, expr)
		}
		for _, n := range names {
			if !exported[n] {
				t.Errorf("%s uses %s, which the plugin does not export", where, n)
			}
		}
	}

	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type != "query" {
			continue
		}
		if !v.Datasource.templated() {
			t.Errorf("variable %s: datasource %+v, want the ${datasource} variable", v.Name, v.Datasource)
		}
		q := v.Definition
		var obj struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &obj); err == nil && obj.Query != "" {
			q = obj.Query
		} else if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("variable %s: query %s is neither a string nor {query: ...}", v.Name, v.Query)
		}
		expr, err := variableExpr(q)
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		check("variable "+v.Name, expr)
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("no datasource variable named datasource")
	}
	if vars["instance"] != "query" {
		t.Errorf("no query variable named instance to pick nodes")
	}

	var targets int
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if !p.Datasource.templated() {
				t.Errorf("panel %q: datasource %+v, want the ${datasource} variable", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no queries", p.Title)
			}
			for i, tg := range p.Targets {
				targets++
				where := fmt.Sprintf("panel %q query %d", p.Title, i)
				if !tg.Datasource.templated() {
					t.Errorf("%s: datasource %+v, want the ${datasource} variable", where, tg.Datasource)
				}
				if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
					t.Errorf("%s: %q ignores the instance variable", where, tg.Expr)
				}
				check(where, tg.Expr)
			}
		}
	}
	walk(d.Panels)
	if targets == 0 {
		t.Errorf("%s has no queries", dashboardFile)
	}
}

// variableExpr is the PromQL inside a Grafana Prometheus variable query:
// label_values(expr, label), query_result(expr), or the expression itself.
func variableExpr(q string) (string, error) {
	q = strings.TrimSpace(q)
	for _, fn := range []string{"label_values", "query_result"} {
		inner, ok := strings.CutPrefix(q, fn+"(")
		if !ok {
			continue
		}
		inner, ok = strings.CutSuffix(inner, ")")
		if !ok {
			return "", fmt.Errorf("%q: unbalanced parentheses", q)
		}
		if fn == "label_values" {
			i := strings.LastIndexByte(inner, ',')
			if i < 0 {
				return "", fmt.Errorf("%q: label_values without a metric selects every metric; name one", q)
			}
			inner = inner[:i]
		}
		return inner, nil
	}
	return q, nil
}

// exportedMetrics returns the series names the plugin's real registry
// exposes on /metrics, plus those Prometheus adds to every target.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New(func() time.Time { return time.Now().Add(time.Hour) }, func() int { return 3 }, func() error { return nil })
	// A vector exports nothing until it has a child: record one of each.
	// A vector added to plugin/metrics but not recorded here stays
	// invisible, and a rule using it fails this test until it is added.
	m.RequestStarted("Decrypt")
	m.ObserveRequest("Decrypt", codes.OK, time.Millisecond)
	m.ObserveVault("transit decrypt", time.Millisecond, nil)
	m.Login(nil)
	m.Renew(nil)

	rec := httptest.NewRecorder()
	m.Handler(func() error { return nil }).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	names := map[string]bool{}
	for _, n := range fromPrometheus {
		names[n] = true
	}
	for name, f := range families {
		names[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	for _, want := range []string{"vault_kms_plugin_healthy", "vault_kms_plugin_requests_total", "vault_kms_plugin_request_duration_seconds_bucket"} {
		if !names[want] {
			t.Fatalf("/metrics lacks %s; the registry was not read right:\n%s", want, strings.Join(slices.Sorted(maps.Keys(names)), "\n"))
		}
	}
	return names
}
