// Package manifests holds the files users copy or render onto their
// clusters, and has no code. kmsctl render writes most of them from
// kms.yaml (lifecycle/render's tests keep them current); the Prometheus
// alerting rules (prometheus-rules.yaml, with promtool unit tests in
// prometheus-rules_test.yaml) and the Grafana dashboard
// (grafana-dashboard.json) are written by hand, and this package's tests
// check them: promtool check and test rules, every metric they name is one
// the plugin exports, and every runbook link lands on a README.md heading.
package manifests
