//go:build integration

package image_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/image"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/image/imagetest"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/registrytest"
	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

func goodLabels() map[string]string {
	return map[string]string{
		contract.FlagInterfaceLabel:      contract.FlagInterfaceVersion,
		"org.opencontainers.image.title": "vault-kms-plugin",
	}
}

func labelsWith(version string) map[string]string {
	return map[string]string{contract.FlagInterfaceLabel: version}
}

// fixture is one real registry and two cosign key pairs, shared by the
// subtests of a test; each subtest pushes to repositories of its own.
type fixture struct {
	host       string
	key, other imagetest.KeyPair
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	reg := registrytest.Start(t)
	return &fixture{host: reg.Host, key: imagetest.GenerateKeyPair(t), other: imagetest.GenerateKeyPair(t)}
}

func (f *fixture) verify(t *testing.T, o image.Options, ref string) (image.Verified, error) {
	t.Helper()
	if o.KeyPath == "" {
		o.KeyPath = f.key.Public
	}
	v, err := image.NewVerifier(o)
	if err != nil {
		t.Fatalf("NewVerifier(%+v): %v", o, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return v.Verify(ctx, ref)
}

func digestOf(t *testing.T, ref string) string {
	t.Helper()
	_, d, ok := strings.Cut(ref, "@")
	if !ok {
		t.Fatalf("%s is not a digest reference", ref)
	}
	return d
}

func exists(t *testing.T, ref string) bool {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Head(r)
	return err == nil
}

func TestVerify(t *testing.T) {
	f := newFixture(t)

	t.Run("an index signed with the classic .sig tag verifies offline and resolves its tag to the signed digest", func(t *testing.T) {
		ref := f.host + "/classic:v1"
		pinned := imagetest.PushIndex(t, ref, goodLabels(), goodLabels())
		imagetest.Sign(t, f.key, pinned, false)

		offsite.reset()
		got, err := f.verify(t, image.Options{}, ref)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if got.Ref != pinned || got.Digest != digestOf(t, pinned) || got.Format != image.FormatSigTag {
			t.Errorf("verified %+v; want Ref %s, format %s", got, pinned, image.FormatSigTag)
		}
		if got.Labels[contract.FlagInterfaceLabel] != contract.FlagInterfaceVersion || got.Labels["org.opencontainers.image.title"] != "vault-kms-plugin" {
			t.Errorf("labels %v; want the labels both platform images carry", got.Labels)
		}
		if hosts := offsite.seen(); len(hosts) != 0 {
			t.Errorf("verification reached hosts other than the registry: %v", hosts)
		}
	})

	t.Run("an index signed with a Sigstore bundle verifies offline through the sha256-<digest> fallback tag", func(t *testing.T) {
		ref := f.host + "/bundle:v1"
		pinned := imagetest.PushIndex(t, ref, goodLabels(), goodLabels())
		imagetest.Sign(t, f.key, pinned, true)
		tag := strings.Replace(digestOf(t, pinned), ":", "-", 1)
		if !exists(t, f.host+"/bundle:"+tag) || exists(t, f.host+"/bundle:"+tag+".sig") {
			t.Fatalf("cosign --new-bundle-format should have written the %s referrers tag and no .sig tag", tag)
		}

		offsite.reset()
		got, err := f.verify(t, image.Options{}, ref)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if got.Ref != pinned || got.Format != image.FormatBundle {
			t.Errorf("verified %+v; want Ref %s, format %s", got, pinned, image.FormatBundle)
		}
		if hosts := offsite.seen(); len(hosts) != 0 {
			t.Errorf("verification reached hosts other than the registry: %v", hosts)
		}
	})

	t.Run("a single-platform image given by digest verifies", func(t *testing.T) {
		pinned := imagetest.PushImage(t, f.host+"/single:v1", goodLabels())
		imagetest.Sign(t, f.key, pinned, false)
		got, err := f.verify(t, image.Options{}, pinned)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if got.Ref != pinned || got.Labels[contract.FlagInterfaceLabel] != contract.FlagInterfaceVersion {
			t.Errorf("verified %+v; want Ref %s with the flag-interface label", got, pinned)
		}
	})

	t.Run("an unsigned image is refused", func(t *testing.T) {
		ref := f.host + "/unsigned:v1"
		pinned := imagetest.PushIndex(t, ref, goodLabels(), goodLabels())
		_, err := f.verify(t, image.Options{}, ref)
		refused(t, err, image.ErrNoSignature, pinned, "cosign sign", "--signature-repository")
	})

	t.Run("an image signed by another key is refused, in either format", func(t *testing.T) {
		for _, bundle := range []bool{false, true} {
			ref := f.host + "/otherkey:" + map[bool]string{false: "classic", true: "bundle"}[bundle]
			pinned := imagetest.PushIndex(t, ref, goodLabels(), goodLabels())
			imagetest.Sign(t, f.other, pinned, bundle)
			_, err := f.verify(t, image.Options{}, ref)
			refused(t, err, image.ErrUntrusted, pinned, f.key.Public)
		}
	})

	t.Run("a tag moved to an unsigned image after signing is refused", func(t *testing.T) {
		ref := f.host + "/moved:v1"
		signed := imagetest.PushIndex(t, ref, goodLabels(), goodLabels())
		imagetest.Sign(t, f.key, signed, false)
		moved := imagetest.PushIndex(t, ref, goodLabels(), goodLabels())

		_, err := f.verify(t, image.Options{}, ref)
		refused(t, err, image.ErrNoSignature, moved, "tag v1")
		if strings.Contains(err.Error(), digestOf(t, signed)) {
			t.Errorf("message %q names the digest the tag used to point to", err)
		}
		// The signature is still there, for the digest it signed.
		if _, err := f.verify(t, image.Options{}, signed); err != nil {
			t.Errorf("the originally signed digest no longer verifies: %v", err)
		}
	})

	t.Run("a signature copied to another image is refused because its payload names the signed digest", func(t *testing.T) {
		for _, bundle := range []bool{false, true} {
			repo := f.host + "/copied-" + map[bool]string{false: "classic", true: "bundle"}[bundle]
			signed := imagetest.PushIndex(t, repo+":signed", goodLabels(), goodLabels())
			imagetest.Sign(t, f.key, signed, bundle)
			target := imagetest.PushIndex(t, repo+":target", goodLabels(), goodLabels())
			// Put the signature (classic) or the referrers index (bundle)
			// of one digest where the other digest's would be.
			from := strings.Replace(digestOf(t, signed), ":", "-", 1)
			to := strings.Replace(digestOf(t, target), ":", "-", 1)
			if !bundle {
				from, to = from+".sig", to+".sig"
			}
			imagetest.Copy(t, repo+":"+from, repo+":"+to)

			_, err := f.verify(t, image.Options{}, repo+":target")
			refused(t, err, image.ErrUntrusted, target)
		}
	})

	t.Run("a bundle holding an attestation rather than a signature is refused", func(t *testing.T) {
		ref := f.host + "/attested:v1"
		pinned := imagetest.PushIndex(t, ref, goodLabels(), goodLabels())
		imagetest.AttestBundle(t, f.key, pinned, "https://example.com/review/v1")
		_, err := f.verify(t, image.Options{}, ref)
		refused(t, err, image.ErrUntrusted, pinned, "https://example.com/review/v1")
	})

	t.Run("a signed image declaring another flag interface is refused", func(t *testing.T) {
		ref := f.host + "/flags-v0:v1"
		pinned := imagetest.PushIndex(t, ref, labelsWith("v0"), labelsWith("v0"))
		imagetest.Sign(t, f.key, pinned, false)
		_, err := f.verify(t, image.Options{}, ref)
		refused(t, err, image.ErrFlagInterface, pinned, `"v0"`, contract.FlagInterfaceLabel, contract.FlagInterfaceVersion)
	})

	t.Run("a signed image without the flag-interface label is refused", func(t *testing.T) {
		ref := f.host + "/nolabel:v1"
		pinned := imagetest.PushIndex(t, ref, nil, nil)
		imagetest.Sign(t, f.key, pinned, true)
		_, err := f.verify(t, image.Options{}, ref)
		refused(t, err, image.ErrFlagInterface, pinned, "does not declare its flag interface")
	})

	t.Run("a signed index whose arm64 image lacks the label is refused", func(t *testing.T) {
		ref := f.host + "/halflabel:v1"
		pinned := imagetest.PushIndex(t, ref, goodLabels(), nil)
		imagetest.Sign(t, f.key, pinned, false)
		_, err := f.verify(t, image.Options{}, ref)
		refused(t, err, image.ErrFlagInterface, pinned, "linux/arm64", "does not declare its flag interface")
	})

	t.Run("a mirrored image verifies only against the repository holding its signatures", func(t *testing.T) {
		for _, bundle := range []bool{false, true} {
			format := map[bool]string{false: "classic", true: "bundle"}[bundle]
			upstream := f.host + "/upstream-" + format
			mirror := f.host + "/mirror/" + format
			signed := imagetest.PushIndex(t, upstream+":v1", goodLabels(), goodLabels())
			imagetest.Sign(t, f.key, signed, bundle)
			imagetest.Copy(t, upstream+":v1", mirror+":v1")

			_, err := f.verify(t, image.Options{}, mirror+":v1")
			refused(t, err, image.ErrNoSignature, mirror, "--signature-repository")

			got, err := f.verify(t, image.Options{SignatureRepository: upstream}, mirror+":v1")
			if err != nil {
				t.Fatalf("%s: Verify with --signature-repository %s: %v", format, upstream, err)
			}
			if want := mirror + "@" + digestOf(t, signed); got.Ref != want {
				t.Errorf("%s: verified %s; want the mirror pinned, %s", format, got.Ref, want)
			}
		}
	})

	t.Run("an unreachable registry is refused quickly", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := l.Addr().String()
		l.Close()
		start := time.Now()
		_, err = f.verify(t, image.Options{}, closed+"/plugin:v1")
		refused(t, err, image.ErrRegistry, closed)
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("took %s to give up on a closed port", took)
		}
	})

	t.Run("--rekor-url requires a transparency-log entry, which an offline signature lacks", func(t *testing.T) {
		// Rekor's public key comes from where cosign reads it; a key of our
		// own keeps the Sigstore TUF root (network) out of the test.
		t.Setenv("SIGSTORE_REKOR_PUBLIC_KEY", writeECPublicKey(t))
		for _, bundle := range []bool{false, true} {
			ref := f.host + "/rekor:" + map[bool]string{false: "classic", true: "bundle"}[bundle]
			pinned := imagetest.PushIndex(t, ref, goodLabels(), goodLabels())
			imagetest.Sign(t, f.key, pinned, bundle)
			if _, err := f.verify(t, image.Options{}, ref); err != nil {
				t.Fatalf("offline Verify: %v", err)
			}
			offsite.reset()
			_, err := f.verify(t, image.Options{RekorURL: "https://rekor.invalid"}, ref)
			refused(t, err, image.ErrUntrusted, pinned)
			// A classic signature without an embedded entry is looked up
			// in the log named by the flag.
			if !bundle && !containsPrefix(offsite.seen(), "rekor.invalid") {
				t.Errorf("no request reached --rekor-url's host; requests beyond loopback: %v", offsite.seen())
			}
		}
	})
}

func writeECPublicKey(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "rekor.pub")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func containsPrefix(hosts []string, prefix string) bool {
	for _, h := range hosts {
		if strings.HasPrefix(h, prefix) {
			return true
		}
	}
	return false
}
