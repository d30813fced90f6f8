package kube

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestObjectPath(t *testing.T) {
	for _, tc := range []struct {
		gvr             schema.GroupVersionResource
		namespace, name string
		want            []string
	}{
		{schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, "default", "s", []string{"/api", "v1", "namespaces", "default", "secrets", "s"}},
		{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, "kube-system", "d", []string{"/apis", "apps", "v1", "namespaces", "kube-system", "deployments", "d"}},
		{schema.GroupVersionResource{Group: "example.com", Version: "v1beta1", Resource: "widgets"}, "", "w", []string{"/apis", "example.com", "v1beta1", "widgets", "w"}},
	} {
		if got := objectPath(tc.gvr, tc.namespace, tc.name); !slices.Equal(got, tc.want) {
			t.Errorf("objectPath(%v, %q, %q) = %v, want %v", tc.gvr, tc.namespace, tc.name, got, tc.want)
		}
	}
}
