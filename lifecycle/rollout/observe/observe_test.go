package observe

import (
	"errors"
	"reflect"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
)

func TestRemotePlugins(t *testing.T) {
	r1 := lifecycle.Revision{Name: "1", Provider: "vault-a-11111111", ImageDigest: "sha256:i1", ArgsHash: "sha256:a1"}
	r2 := lifecycle.Revision{Name: "2", Provider: "vault-a-11111111", ImageDigest: "sha256:i2", ArgsHash: "sha256:a2"}
	const sidecar = "vault-sidecar-33333333"
	onDisk := lifecycle.NodeConfig{
		Pods:      []lifecycle.Revision{r2},
		Providers: []lifecycle.Provider{{Name: r2.Provider, KMS: true}, {Name: sidecar, KMS: true}, {Name: lifecycle.IdentityProvider}},
	}
	apiOK := lifecycle.APIServerHealth{ReadyzKMS: true}
	tests := []struct {
		name    string
		running map[string]lifecycle.Revision
		runErr  error
		api     lifecycle.APIServerHealth
		want    map[string]lifecycle.PluginHealth
	}{
		{
			name:    "Ready mirror pod at the revision on disk, API server passes kms-providers => both healthy",
			running: map[string]lifecycle.Revision{r2.Provider: r2},
			api:     apiOK,
			want: map[string]lifecycle.PluginHealth{
				r2.Provider: {Running: r2, StatusOK: true, PreflightOK: true},
				sidecar:     {StatusOK: true},
			},
		},
		{
			name:    "Ready mirror pod still at the old revision => reported as running it",
			running: map[string]lifecycle.Revision{r2.Provider: r1},
			api:     apiOK,
			want: map[string]lifecycle.PluginHealth{
				r2.Provider: {Running: r1, StatusOK: true, PreflightOK: true},
				sidecar:     {StatusOK: true},
			},
		},
		{
			name:    "no Ready mirror pod => the pod's plugin does not answer",
			running: map[string]lifecycle.Revision{},
			api:     apiOK,
			want: map[string]lifecycle.PluginHealth{
				r2.Provider: {Err: "no Ready pod of provider vault-a-11111111 on node cp-2"},
				sidecar:     {StatusOK: true},
			},
		},
		{
			name:   "pod list failed => says why",
			runErr: errors.New("list the plugin pods on node cp-2: forbidden"),
			api:    apiOK,
			want: map[string]lifecycle.PluginHealth{
				r2.Provider: {Err: "list the plugin pods on node cp-2: forbidden"},
				sidecar:     {StatusOK: true},
			},
		},
		{
			name:    "API server fails kms-providers => a provider with no pod does not answer",
			running: map[string]lifecycle.Revision{r2.Provider: r2},
			api:     lifecycle.APIServerHealth{},
			want: map[string]lifecycle.PluginHealth{
				r2.Provider: {Running: r2, StatusOK: true, PreflightOK: true},
				sidecar:     {Err: "node cp-2's API server does not pass kms-providers"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := remotePlugins("cp-2", onDisk, tt.running, tt.runErr, tt.api)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
