package image

import "testing"

func TestRepoAsGiven(t *testing.T) {
	for _, tc := range []struct{ ref, want string }{
		{ref: "127.0.0.1:5000/plugin:v1", want: "127.0.0.1:5000/plugin"},
		{ref: "127.0.0.1:5000/plugin", want: "127.0.0.1:5000/plugin"},
		{ref: "127.0.0.1:5000/plugin@sha256:ab", want: "127.0.0.1:5000/plugin"},
		{ref: "registry.example/mirror/plugin:v1@sha256:ab", want: "registry.example/mirror/plugin"},
		{ref: "vault-kms-plugin:v1", want: "vault-kms-plugin"},
		{ref: "vault-kms-plugin", want: "vault-kms-plugin"},
	} {
		if got := repoAsGiven(tc.ref); got != tc.want {
			t.Errorf("repoAsGiven(%q) = %q; want %q", tc.ref, got, tc.want)
		}
	}
}
