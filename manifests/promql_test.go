package manifests

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// metricNames returns, sorted and once each, the metric names an
// expression selects. It knows as much PromQL as rules and dashboards use,
// without Prometheus's parser (a large dependency): it skips strings, label
// matchers, ranges, grouping label lists, functions, keywords, numbers,
// durations and Grafana variables; whatever identifier is left is a
// metric name. A selector by {__name__=...} is refused, so no metric hides
// from the check.
func metricNames(expr string) ([]string, error) {
	var names []string
	s := expr
	for len(s) > 0 {
		c := s[0]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			s = s[1:]
		case c == '#':
			_, s, _ = strings.Cut(s, "\n")
		case c == '"' || c == '\'' || c == '`':
			rest, err := skipString(s)
			if err != nil {
				return nil, err
			}
			s = rest
		case c == '{':
			body, rest, err := skipTo(s, '{', '}')
			if err != nil {
				return nil, err
			}
			if strings.Contains(body, "__name__") {
				return nil, fmt.Errorf("%q selects by __name__: name the metric instead", expr)
			}
			s = rest
		case c == '[':
			_, rest, err := skipTo(s, '[', ']')
			if err != nil {
				return nil, err
			}
			s = rest
		case c == '$': // Grafana: $var, ${var}, $__rate_interval
			s = s[1:]
			if strings.HasPrefix(s, "{") {
				_, rest, err := skipTo(s, '{', '}')
				if err != nil {
					return nil, err
				}
				s = rest
			} else {
				s = strings.TrimLeftFunc(s, isIdentRune)
			}
		case c >= '0' && c <= '9' || c == '.':
			s = strings.TrimLeftFunc(s, func(r rune) bool { return isIdentRune(r) || r == '.' })
		case isIdentStart(rune(c)):
			end := strings.IndexFunc(s, func(r rune) bool { return !isIdentRune(r) })
			if end < 0 {
				end = len(s)
			}
			ident, rest := s[:end], s[end:]
			s = rest
			next := strings.TrimLeft(rest, " \t\r\n")
			switch {
			case grouping[ident]:
				if strings.HasPrefix(next, "(") {
					_, after, err := skipTo(next, '(', ')')
					if err != nil {
						return nil, err
					}
					s = after
				}
			case keywords[strings.ToLower(ident)]:
			case strings.HasPrefix(next, "("): // a function or aggregation
			default:
				if !slices.Contains(names, ident) {
					names = append(names, ident)
				}
			}
		default: // operators, parentheses, commas
			s = s[1:]
		}
	}
	slices.Sort(names)
	return names, nil
}

// grouping keywords are followed by a list of label names.
var grouping = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// keywords are the other identifiers that are not metric names: operators,
// modifiers, literals, and aggregations (which may come before by/without).
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true,
	"sum": true, "avg": true, "count": true, "min": true, "max": true, "group": true,
	"stddev": true, "stdvar": true, "topk": true, "bottomk": true, "quantile": true,
	"count_values": true, "limitk": true, "limit_ratio": true,
}

func isIdentStart(r rune) bool {
	return r == '_' || r == ':' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
}

func isIdentRune(r rune) bool { return isIdentStart(r) || r >= '0' && r <= '9' }

// skipString returns s after the quoted string it starts with.
func skipString(s string) (string, error) {
	q := s[0]
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && q != '`':
			i++
		case s[i] == q:
			return s[i+1:], nil
		}
	}
	return "", fmt.Errorf("unterminated string in %q", s)
}

// skipTo returns what is between s's opening bracket and its match, and s
// after the match; strings inside are skipped whole.
func skipTo(s string, open, closing byte) (body, rest string, err error) {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"', '\'', '`':
			after, err := skipString(s[i:])
			if err != nil {
				return "", "", err
			}
			i = len(s) - len(after) - 1
		case open:
			depth++
		case closing:
			depth--
			if depth == 0 {
				return s[1:i], s[i+1:], nil
			}
		}
	}
	return "", "", fmt.Errorf("no %q closes %q in %q", closing, open, s)
}

func TestMetricNames(t *testing.T) {
	cases := []struct {
		name  string
		expr  string
		want  []string
		isErr bool
	}{
		{name: "a bare name => it", expr: "up", want: []string{"up"}},
		{name: "label matchers with names in values => only the metric", expr: `up{job="x", instance=~"a{b}|c"} == 0`, want: []string{"up"}},
		{
			name: "aggregation, grouping and a range => the metric, not the labels",
			expr: `sum without (code) (rate(a_total{code!="OK"}[5m])) / sum by (method, le) (rate(a_total[$__rate_interval])) > 0.05`,
			want: []string{"a_total"},
		},
		{
			name: "histogram_quantile => the bucket series",
			expr: `histogram_quantile(0.99, sum by (le) (rate(h_bucket{method="Decrypt"}[5m]))) > 1`,
			want: []string{"h_bucket"},
		},
		{
			name: "set operators, offset and vector matching => both sides",
			expr: "a > 0 and on (instance) group_left (node) b offset 15m unless ignoring(x) c or d OFFSET -1h",
			want: []string{"a", "b", "c", "d"},
		},
		{name: "Grafana variables => nothing of them", expr: `g{instance=~"$instance"} * ${factor} + $k`, want: []string{"g"}},
		{name: "numbers and exponents => nothing", expr: "x * 1e-3 + 0x1f + .5 + Inf", want: []string{"x"}},
		{name: "aggregation with the grouping after => the metric", expr: "max(m) by (instance)", want: []string{"m"}},
		{name: "a subquery => the metric", expr: "max_over_time((m > 0)[15m:1m])", want: []string{"m"}},
		{name: "a comment => nothing of it", expr: "m # not_a_metric\n+ n", want: []string{"m", "n"}},
		{name: "__name__ selector => refused", expr: `{__name__=~"vault_.*"}`, isErr: true},
		{name: "an unterminated string => refused", expr: `m{a="b}`, isErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := metricNames(tc.expr)
			if tc.isErr {
				if err == nil {
					t.Fatalf("metricNames(%q) = %v, want an error", tc.expr, got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("metricNames(%q) = %v, %v; want %v", tc.expr, got, err, tc.want)
			}
		})
	}
}

func TestVariableExpr(t *testing.T) {
	cases := []struct {
		name, query, want string
		isErr             bool
	}{
		{name: "label_values of a selector => the selector", query: `label_values(m{job=~"$job"}, instance)`, want: `m{job=~"$job"}`},
		{name: "query_result => its expression", query: "query_result(max(m) by (job))", want: "max(m) by (job)"},
		{name: "a plain expression => itself", query: " up ", want: "up"},
		{name: "label_values of a label alone => refused", query: "label_values(instance)", isErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := variableExpr(tc.query)
			if (err != nil) != tc.isErr || got != tc.want {
				t.Errorf("variableExpr(%q) = %q, %v; want %q, error %v", tc.query, got, err, tc.want, tc.isErr)
			}
		})
	}
}
