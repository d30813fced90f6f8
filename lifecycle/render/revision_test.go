package render

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
)

// A rollout compares the revision kms.yaml renders with the one read back
// from the pod on disk: they must be equal for the same kms.yaml, and
// differ when the image or a flag does.
func TestPodRevisionReadsBackRevision(t *testing.T) {
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			cfg := load(t, filepath.Join("testdata", name, "kms.yaml"))
			data, err := StaticPod(cfg)
			if err != nil {
				t.Fatal(err)
			}
			want := Revision(cfg)
			if want.Name != cfg.Revision || want.Provider != cfg.ProviderName() ||
				!strings.HasSuffix(cfg.Vault.KMSPluginImage, "@"+want.ImageDigest) || !strings.HasPrefix(want.ImageDigest, "sha256:") ||
				want.ArgsHash != lifecycle.ArgsHash(PluginArgs(cfg)) {
				t.Fatalf("Revision = %+v", want)
			}
			pod := parsePod(t, data)
			got, err := PodRevision(pod)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("PodRevision = %+v\nRevision    = %+v", got, want)
			}

			other := *cfg
			other.Node.MetricsPort++
			if Revision(&other).ArgsHash == want.ArgsHash {
				t.Error("another metrics port gives the same ArgsHash")
			}
			other = *cfg
			img := cfg.Vault.KMSPluginImage
			other.Vault.KMSPluginImage = img[:len(img)-1] + map[bool]string{true: "0", false: "1"}[img[len(img)-1] != '0']
			if Revision(&other).ImageDigest == want.ImageDigest {
				t.Error("another image gives the same ImageDigest")
			}
		})
	}
}

func TestPodRevisionRefusesPodsItCannotRead(t *testing.T) {
	cfg := load(t, filepath.Join("testdata", "dev", "kms.yaml"))
	for _, tc := range []struct {
		name    string
		change  func(labels map[string]string, containerName *string, image *string)
		wantErr string
		want    func(r lifecycle.Revision) bool
	}{
		{name: "no revision label => error naming the label", change: func(l map[string]string, _, _ *string) { delete(l, LabelRevision) }, wantErr: LabelRevision},
		{name: "no provider label => error naming the label", change: func(l map[string]string, _, _ *string) { delete(l, LabelProvider) }, wantErr: LabelProvider},
		{name: "plugin container renamed => error naming the container", change: func(_ map[string]string, c, _ *string) { *c = "other" }, wantErr: pluginContainer},
		{name: "image by tag => no digest", change: func(_ map[string]string, _, i *string) { *i = "127.0.0.1:5000/vault-kms-plugin:latest" }, want: func(r lifecycle.Revision) bool { return r.ImageDigest == "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := StaticPodObject(cfg)
			tc.change(pod.Labels, &pod.Spec.Containers[0].Name, &pod.Spec.Containers[0].Image)
			got, err := PodRevision(pod)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.want(got) {
				t.Fatalf("PodRevision = %+v, %v", got, err)
			}
		})
	}
}

func TestNodeManifestFileIsPerProvider(t *testing.T) {
	cfg := load(t, filepath.Join("testdata", "dev", "kms.yaml"))
	if got, want := NodeManifestFile(cfg.ProviderName()), PodName(cfg)+".yaml"; got != want {
		t.Fatalf("NodeManifestFile = %q, want %q", got, want)
	}
	if NodeManifestFile("vault-a-11111111") == NodeManifestFile("vault-b-22222222") {
		t.Fatal("two providers share a manifest file name")
	}
}
