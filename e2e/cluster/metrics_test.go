package cluster

import "testing"

func TestParseMetrics(t *testing.T) {
	text := `# HELP x help
# TYPE x counter
vault_kms_plugin_vault_logins_total{outcome="ok"} 3
vault_kms_plugin_vault_logins_total{outcome="400"} 2
apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash="sha256:ab",key_id_hash="sha256:cd",provider_name="vault"} 1.7e+09
process_open_fds 12
odd{a="x,y",b="z"} 1
`
	s := ParseMetrics(text)
	cases := []struct {
		name   string
		metric string
		labels map[string]string
		want   float64
	}{
		{name: "all series of a name => summed", metric: "vault_kms_plugin_vault_logins_total", want: 5},
		{name: "one label => that series", metric: "vault_kms_plugin_vault_logins_total", labels: map[string]string{"outcome": "ok"}, want: 3},
		{name: "label among several => matched", metric: "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds", labels: map[string]string{"key_id_hash": "sha256:cd"}, want: 1.7e9},
		{name: "unlabelled sample => read", metric: "process_open_fds", want: 12},
		{name: "comma inside a quoted value => one label", metric: "odd", labels: map[string]string{"a": "x,y", "b": "z"}, want: 1},
		{name: "no such label value => zero", metric: "vault_kms_plugin_vault_logins_total", labels: map[string]string{"outcome": "500"}, want: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Sum(s, tc.metric, tc.labels); got != tc.want {
				t.Errorf("Sum(%s, %v) = %v, want %v", tc.metric, tc.labels, got, tc.want)
			}
		})
	}
}

func TestParseStored(t *testing.T) {
	cases := []struct {
		name string
		raw  string
	}{
		{name: "identity value => error", raw: "\x6b\x38\x73\x00plain"},
		{name: "another provider => error", raw: "k8s:enc:kms:v2:other:xyz"},
		{name: "prefix without an object => error", raw: StoragePrefix},
		{name: "prefix and garbage => error", raw: StoragePrefix + "\xff\xff\xff"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseStored([]byte(tc.raw)); err == nil {
				t.Errorf("ParseStored(%q) succeeded", tc.raw)
			}
		})
	}
}
