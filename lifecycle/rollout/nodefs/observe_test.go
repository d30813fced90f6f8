package nodefs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
)

func TestObserve(t *testing.T) {
	dev := loadConfig(t, "dev")
	ent := loadConfig(t, "enterprise")
	for _, tc := range []struct {
		name  string
		files func(t *testing.T) NodeFiles
		want  lifecycle.NodeConfig
	}{
		{
			name:  "rendered dev node => its revision and its one provider",
			files: func(t *testing.T) NodeFiles { return newNode(t, "a", dev, "", "") },
			want:  lifecycle.NodeConfig{Pods: pods(render.Revision(dev)), Providers: kms(dev.ProviderName())},
		},
		{
			name:  "rendered enterprise node (identity kept, three resources) => provider then identity",
			files: func(t *testing.T) NodeFiles { return newNode(t, "a", ent, "", "") },
			want:  lifecycle.NodeConfig{Pods: pods(render.Revision(ent)), Providers: kms(ent.ProviderName(), lifecycle.IdentityProvider)},
		},
		{
			name:  "pod under render's output name, other resources without KMS => the same, those entries ignored",
			files: func(t *testing.T) NodeFiles { return newNode(t, "a", dev, render.StaticPodFile, otherResources) },
			want:  lifecycle.NodeConfig{Pods: pods(render.Revision(dev)), Providers: kms(dev.ProviderName())},
		},
		{
			name: "two providers' pods side by side => both",
			files: func(t *testing.T) NodeFiles {
				f := newNode(t, "a", dev, "", "")
				q := newKey(dev, "8")
				write(t, filepath.Join(f.ManifestDir, render.NodeManifestFile(q.ProviderName())), staticPod(t, q))
				return f
			},
			want: lifecycle.NodeConfig{Pods: pods(render.Revision(dev), render.Revision(newKey(dev, "8"))), Providers: kms(dev.ProviderName())},
		},
		{
			name: "no KMS provider yet, two identity entries => the one list, identity",
			files: func(t *testing.T) NodeFiles {
				f := newNode(t, "a", dev, "", "")
				write(t, f.EncryptionConfigPath, []byte("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- providers:\n  - identity: {}\n  resources:\n  - secrets\n- providers:\n  - identity: {}\n  resources:\n  - events\n"))
				return f
			},
			want: lifecycle.NodeConfig{Pods: pods(render.Revision(dev)), Providers: kms(lifecycle.IdentityProvider)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustEqual(t, observe(t, tc.files(t)), tc.want)
		})
	}
}

// What Observe cannot read is an error naming the file and what is wrong.
func TestObserveRefusesFilesItCannotRead(t *testing.T) {
	dev := loadConfig(t, "dev")
	podFile := render.NodeManifestFile(dev.ProviderName())
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, f NodeFiles) string // returns the file the error must name
		want   string
	}{
		{name: "owned pod that does not parse => error naming it", want: "does not parse", change: func(t *testing.T, f NodeFiles) string {
			p := filepath.Join(f.ManifestDir, podFile)
			write(t, p, append(read(t, p), "\n  - : [\n"...))
			return p
		}},
		{name: "owned label on a Deployment => error naming it", want: `is a "Deployment", not a Pod`, change: func(t *testing.T, f NodeFiles) string {
			p := filepath.Join(f.ManifestDir, podFile)
			write(t, p, []byte(strings.Replace(string(read(t, p)), "kind: Pod", "kind: Deployment", 1)))
			return p
		}},
		{name: "owned pod with an unknown field => error naming it", want: "not a valid v1 Pod", change: func(t *testing.T, f NodeFiles) string {
			p := filepath.Join(f.ManifestDir, podFile)
			write(t, p, []byte(strings.Replace(string(read(t, p)), "hostNetwork: true", "hostNetwork: true\n  hostNetworking: true", 1)))
			return p
		}},
		{name: "owned pod without the revision label => error naming it and the label", want: render.LabelRevision, change: func(t *testing.T, f NodeFiles) string {
			p := filepath.Join(f.ManifestDir, podFile)
			write(t, p, []byte(strings.Replace(string(read(t, p)), "    "+render.LabelRevision+": \"7\"\n", "", 1)))
			return p
		}},
		{name: "two files for one provider => error naming both", want: "both the static pod of provider", change: func(t *testing.T, f NodeFiles) string {
			write(t, filepath.Join(f.ManifestDir, "copy.yaml"), read(t, filepath.Join(f.ManifestDir, podFile)))
			return filepath.Join(f.ManifestDir, "copy.yaml")
		}},
		{name: "no EncryptionConfiguration => error naming it", want: "no such file", change: func(t *testing.T, f NodeFiles) string {
			os.Remove(f.EncryptionConfigPath)
			return f.EncryptionConfigPath
		}},
		{name: "EncryptionConfiguration of another kind => error naming it", want: "not apiserver.config.k8s.io/v1 EncryptionConfiguration", change: func(t *testing.T, f NodeFiles) string {
			write(t, f.EncryptionConfigPath, []byte(strings.Replace(string(read(t, f.EncryptionConfigPath)), "kind: EncryptionConfiguration", "kind: AdmissionConfiguration", 1)))
			return f.EncryptionConfigPath
		}},
		{name: "EncryptionConfiguration with an unknown field => error naming it", want: "unknown field", change: func(t *testing.T, f NodeFiles) string {
			write(t, f.EncryptionConfigPath, []byte(strings.Replace(string(read(t, f.EncryptionConfigPath)), "timeout: 3s", "timeout: 3s\n      retries: 3", 1)))
			return f.EncryptionConfigPath
		}},
		{name: "two KMS resource entries with other lists => error naming both lists", want: "make them equal", change: func(t *testing.T, f NodeFiles) string {
			extra := "- providers:\n  - kms:\n      apiVersion: v2\n      endpoint: unix:///run/other.sock\n      name: other\n  resources:\n  - configmaps\n"
			write(t, f.EncryptionConfigPath, append(read(t, f.EncryptionConfigPath), extra...))
			return f.EncryptionConfigPath
		}},
		{name: "EncryptionConfiguration with a key spelled in another case => error naming it", want: "resources[0].providers[0].kms.cacheSize", change: func(t *testing.T, f NodeFiles) string {
			write(t, f.EncryptionConfigPath, []byte(strings.Replace(string(read(t, f.EncryptionConfigPath)), "timeout: 3s", "timeout: 3s\n      cacheSize: 10", 1)))
			return f.EncryptionConfigPath
		}},
		{name: "a provider entry of two types => error naming it", want: "sets 2 provider types", change: func(t *testing.T, f NodeFiles) string {
			write(t, f.EncryptionConfigPath, []byte(strings.Replace(string(read(t, f.EncryptionConfigPath)), "      timeout: 3s\n", "      timeout: 3s\n    identity: {}\n", 1)))
			return f.EncryptionConfigPath
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newNode(t, "a", dev, "", "")
			path := tc.change(t, f)
			_, _, err := Observe(f)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant one naming %s and saying %q", err, path, tc.want)
			}
		})
	}
}

// A file that render wrote and nothing changed is written back byte for
// byte: the layout kmsctl writes is render's, so an Apply that changes
// nothing changes no hash.
func TestEncryptionConfigRoundTripsByteForByte(t *testing.T) {
	for _, name := range []string{"dev", "enterprise"} {
		t.Run(name, func(t *testing.T) {
			data := append(renderedConfig(t, loadConfig(t, name)), otherResources...)
			c, err := parseEncryptionConfig(data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.marshal()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(data) {
				t.Fatalf("written back:\n%s\nwant:\n%s", got, data)
			}
		})
	}
}

// A new provider's plugin runs beside the old one on the host network: the
// same metrics port is refused, naming the pod that holds it; the provider's
// own pod (an in-place change) and other ports are not.
func TestCheckMetricsPort(t *testing.T) {
	dev := loadConfig(t, "dev")
	other := newKey(dev, "8")
	podFile := render.NodeManifestFile(dev.ProviderName())
	for _, tc := range []struct {
		name     string
		provider string
		port     int32
		wantErr  []string
	}{
		{name: "same provider, same port (in place) => ok", provider: dev.ProviderName(), port: dev.Node.MetricsPort},
		{name: "new provider, another port => ok", provider: other.ProviderName(), port: dev.Node.MetricsPort + 1},
		{name: "new provider, the old pod's port => refused naming the pod, its provider and the port",
			provider: other.ProviderName(), port: dev.Node.MetricsPort,
			wantErr: []string{podFile, dev.ProviderName(), fmt.Sprintf("metrics port %d", dev.Node.MetricsPort), "node.metricsPort"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newNode(t, "a", dev, "", "")
			err := CheckMetricsPort(f, tc.provider, tc.port)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("err = nil, want one saying %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to say %q", err, w)
				}
			}
		})
	}
	t.Run("manifest directory unreadable => error naming the node", func(t *testing.T) {
		f := newNode(t, "a", dev, "", "")
		f.ManifestDir = filepath.Join(f.ManifestDir, "missing")
		if err := CheckMetricsPort(f, other.ProviderName(), 1); err == nil || !strings.Contains(err.Error(), "node a") {
			t.Fatalf("err = %v, want one naming node a", err)
		}
	})
}
