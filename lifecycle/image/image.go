// Package image verifies the plugin image before anything runs it: its
// cosign signature against the operator's public key, that the signed
// payload names the image's own digest, and that the image declares the
// flag interface kmsctl render passes. It is the only package of this
// project that imports cosign or sigstore.
//
// The order of work, for one reference:
//  1. Resolve the reference to a digest once; everything after uses
//     REPO@DIGEST, so a tag moved mid-way cannot mix two images.
//  2. Look for a classic cosign signature (the sha256-<hex>.sig tag, cosign
//     v2's default) and verify it with cosign's VerifyImageSignatures, which
//     also checks the digest inside the signed payload.
//  3. Failing that, look for Sigstore bundles (cosign sign
//     --new-bundle-format, cosign v3's default) attached as OCI 1.1
//     referrers, or listed in the index tagged sha256-<hex> where the
//     registry has no referrers API, and verify each with sigstore-go
//     through cosign's VerifyNewBundle, against the image digest.
//  4. Read the config of the image, or of every platform image of an index,
//     and require the flag-interface label.
//
// Verification is offline: the registry is the only host contacted, unless
// Options.RekorURL asks for transparency-log entries.
package image

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/types"
	rekorclient "github.com/sigstore/rekor/pkg/client"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

// bundleArtifactTypePrefix starts the artifactType of the referrer manifest
// cosign writes around a Sigstore bundle (cosign sign --new-bundle-format
// writes application/vnd.dev.sigstore.bundle.v0.3+json).
const bundleArtifactTypePrefix = "application/vnd.dev.sigstore.bundle"

// emptyConfigType is the config media type of cosign's referrer manifests.
// Where the registry has no referrers API, the client writing the
// sha256-<hex> index fills in each entry's artifactType, and
// go-containerregistry before v0.22 (cosign v2.6's) copies the config
// media type there instead of the manifest's artifactType, so a bundle is
// listed as this.
const emptyConfigType = "application/vnd.oci.empty.v1+json"

// buildkitReferenceType annotates the attestation manifests buildkit adds to
// an index. They describe an image and never run, so they carry no label.
const buildkitReferenceType = "vnd.docker.reference.type"

// Options are the inputs of verify-image.
type Options struct {
	// KeyPath is the PEM file of the cosign public key (cosign.pub) the
	// image must be signed with.
	KeyPath string
	// AllowInsecureRegistry lets the registry answer over plain HTTP or
	// with a TLS certificate that does not verify, as cosign's flag of the
	// same name. Signatures are verified all the same.
	AllowInsecureRegistry bool
	// SignatureRepository is where signatures are looked up, when they are
	// not stored beside the image: an image pulled from a mirror and signed
	// once upstream. Empty means the image's own repository.
	SignatureRepository string
	// RekorURL, when set, requires every accepted signature to have a
	// transparency-log entry, verified against Rekor's public key as cosign
	// finds it ($SIGSTORE_REKOR_PUBLIC_KEY, else the Sigstore TUF root).
	// Empty means offline: no log is consulted.
	RekorURL string
}

// Validate checks the options without touching the network or the key file;
// its errors name the flag.
func (o Options) Validate() error {
	if o.KeyPath == "" {
		return errors.New("--key is required: the cosign public key (cosign.pub) the image must be signed with")
	}
	if o.SignatureRepository != "" {
		if _, err := name.NewRepository(o.SignatureRepository, o.nameOptions()...); err != nil {
			return fmt.Errorf("--signature-repository %q is not a repository (REGISTRY/PATH, no tag or digest): %w", o.SignatureRepository, err)
		}
	}
	if o.RekorURL != "" {
		u, err := url.Parse(o.RekorURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("--rekor-url %q must be an http(s) URL, e.g. https://rekor.sigstore.dev", o.RekorURL)
		}
	}
	return nil
}

func (o Options) nameOptions() []name.Option {
	if o.AllowInsecureRegistry {
		return []name.Option{name.Insecure}
	}
	return nil
}

// Format says how the signature that verified was stored.
type Format string

const (
	// FormatSigTag is cosign's classic signature: a manifest tagged
	// sha256-<hex>.sig whose layers are signed payloads.
	FormatSigTag Format = "sig-tag"
	// FormatBundle is a Sigstore bundle attached to the image as an OCI
	// referrer (or under the sha256-<hex> fallback tag).
	FormatBundle Format = "bundle"
)

// Verified describes an image that passed every check.
type Verified struct {
	// Ref is REPO@sha256:<hex>, with REPO spelled as the caller gave it
	// (the mirror, for a mirrored image): what a manifest may deploy.
	Ref string
	// Digest is sha256:<hex>, the digest that was signed.
	Digest string
	// Format is how the verified signature was stored.
	Format Format
	// Labels are the config labels of the image; for an index, the labels
	// every platform image carries with the same value.
	Labels map[string]string
}

// Verifier checks images against one set of Options.
type Verifier interface {
	// Verify resolves ref (a tag or a digest reference) and returns the
	// digest reference once the signature and the flag interface check
	// out. Its refusals match the Err* values of this package.
	Verify(ctx context.Context, ref string) (Verified, error)
}

// NewVerifier validates o and loads its public key.
func NewVerifier(o Options) (Verifier, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	key, err := loadKey(o.KeyPath)
	if err != nil {
		return nil, err
	}
	v := &verifier{opts: o, key: key, nameOpts: o.nameOptions()}
	if o.SignatureRepository != "" {
		repo, _ := name.NewRepository(o.SignatureRepository, v.nameOpts...) // checked by Validate
		v.sigRepo = &repo
	}
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	if o.AllowInsecureRegistry {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by --allow-insecure-registry; signatures still verify
	}
	v.transport = tr
	return v, nil
}

type verifier struct {
	opts      Options
	key       signature.Verifier
	nameOpts  []name.Option
	sigRepo   *name.Repository // nil: the image's repository
	transport http.RoundTripper
}

var _ Verifier = (*verifier)(nil)

func (v *verifier) Verify(ctx context.Context, ref string) (Verified, error) {
	r, err := name.ParseReference(ref, v.nameOpts...)
	if err != nil {
		return Verified{}, fmt.Errorf("image %q is not a reference (REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:HEX): %w", ref, err)
	}
	ropts := v.remoteOptions(ctx)

	// STEP 1: one resolution; from here on only the digest is used.
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return Verified{}, registryError(err, fmt.Sprintf("resolve %s", ref), r.Context().RegistryStr())
	}
	digest := r.Context().Digest(desc.Digest.String())
	pinned := repoAsGiven(ref) + "@" + desc.Digest.String()
	subject := pinned
	if t, ok := r.(name.Tag); ok {
		subject = fmt.Sprintf("%s (tag %s)", pinned, t.TagStr())
	}

	// STEPS 2 and 3.
	format, err := v.verifySignature(ctx, digest, subject, ropts)
	if err != nil {
		return Verified{}, err
	}

	// STEP 4.
	labels, err := checkFlagInterface(desc, pinned, r.Context().RegistryStr())
	if err != nil {
		return Verified{}, err
	}
	return Verified{Ref: pinned, Digest: desc.Digest.String(), Format: format, Labels: labels}, nil
}

func (v *verifier) remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithTransport(v.transport),
		remote.WithUserAgent("kmsctl"),
	}
}

// verifySignature accepts the digest if a classic signature or a Sigstore
// bundle for it verifies with the key. subject names the image in errors.
func (v *verifier) verifySignature(ctx context.Context, digest name.Digest, subject string, ropts []remote.Option) (Format, error) {
	sigRepo := digest.Context()
	if v.sigRepo != nil {
		sigRepo = *v.sigRepo
	}
	co, bundleTrust, err := v.checkOpts(ctx, sigRepo, ropts)
	if err != nil {
		return "", err
	}

	// The classic format first: one GET of the .sig tag answers it.
	var reasons []string
	sigTagFound := false
	_, _, err = cosign.VerifyImageSignatures(ctx, digest, co)
	var noSigs *cosign.ErrNoSignaturesFound
	var noMatch *cosign.ErrNoMatchingSignatures
	switch {
	case err == nil:
		return FormatSigTag, nil
	case errors.As(err, &noSigs):
	case errors.As(err, &noMatch):
		sigTagFound = true
		reasons = append(reasons, ".sig tag: "+short(err))
	case isRegistryErr(err):
		return "", registryError(err, "read the .sig signatures of "+subject, sigRepo.RegistryStr())
	default:
		sigTagFound = true
		reasons = append(reasons, ".sig tag: "+short(err))
	}

	// Then bundles. ggcr falls back to the sha256-<hex> tag when the
	// registry has no referrers API. No artifactType filter: see
	// emptyConfigType.
	idx, err := remote.Referrers(sigRepo.Digest(digest.DigestStr()), ropts...)
	if err != nil {
		return "", registryError(err, "list the Sigstore bundles of "+subject, sigRepo.RegistryStr())
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return "", registryError(err, "list the Sigstore bundles of "+subject, sigRepo.RegistryStr())
	}
	bco := *co
	bco.TrustedMaterial = bundleTrust
	bundles := 0
	for _, m := range im.Manifests {
		declared := strings.HasPrefix(m.ArtifactType, bundleArtifactTypePrefix)
		if !declared && m.ArtifactType != emptyConfigType && m.ArtifactType != "" {
			continue // an SBOM or another kind of referrer
		}
		b, err := ociremote.Bundle(sigRepo.Digest(m.Digest.String()), ociremote.WithRemoteOptions(ropts...))
		if err != nil {
			if isRegistryErr(err) {
				return "", registryError(err, "read the Sigstore bundle "+m.Digest.String()+" of "+subject, sigRepo.RegistryStr())
			}
			if declared {
				bundles++
				reasons = append(reasons, "bundle "+m.Digest.String()+": "+short(err))
			}
			continue // not a bundle after all
		}
		bundles++
		if err := verifyBundle(ctx, &bco, b, digest); err != nil {
			reasons = append(reasons, "bundle "+m.Digest.String()+": "+short(err))
			continue
		}
		return FormatBundle, nil
	}

	where := sigRepo.Name()
	if !sigTagFound && bundles == 0 {
		hint := ""
		if v.sigRepo == nil {
			hint = ", or pass --signature-repository if the image was signed in another repository"
		}
		return "", refuse(ErrNoSignature, nil, fmt.Sprintf(
			"no cosign signature for %s: looked for the .sig tag and Sigstore bundles (referrers and sha256-<digest> tag) in %s; sign it with cosign sign --key <private key of %s> %s%s",
			subject, where, v.opts.KeyPath, digest, hint))
	}
	var found []string
	if sigTagFound {
		found = append(found, "a .sig tag")
	}
	switch {
	case bundles == 1:
		found = append(found, "1 Sigstore bundle")
	case bundles > 1:
		found = append(found, fmt.Sprintf("%d Sigstore bundles", bundles))
	}
	return "", refuse(ErrUntrusted, nil, fmt.Sprintf(
		"no signature on %s verifies with --key %s: found %s in %s and rejected each (%s); sign this digest with the private key of %s, or pass the public key it was signed with",
		subject, v.opts.KeyPath, strings.Join(found, " and "), where, strings.Join(reasons, "; "), v.opts.KeyPath))
}

// checkOpts returns cosign's verification settings (the key, and the claim
// check that the signed payload names the digest) and the trusted material
// bundles are verified against. Offline unless --rekor-url is set.
func (v *verifier) checkOpts(ctx context.Context, sigRepo name.Repository, ropts []remote.Option) (*cosign.CheckOpts, root.TrustedMaterial, error) {
	co := &cosign.CheckOpts{
		SigVerifier:   v.key,
		ClaimVerifier: cosign.SimpleClaimVerifier,
		// The target repository is always explicit, so cosign's
		// $COSIGN_REPOSITORY cannot send the .sig lookup to one repository
		// and the bundle lookup to another.
		RegistryClientOpts: []ociremote.Option{
			ociremote.WithRemoteOptions(ropts...),
			ociremote.WithTargetRepository(sigRepo),
			ociremote.WithNameOptions(v.nameOpts...),
		},
		IgnoreTlog: true,
		IgnoreSCT:  true,
	}
	if v.opts.RekorURL == "" {
		// VerifyNewBundle needs trusted material; a key needs nothing else
		// from it (cosign adds the key to it).
		return co, &root.BaseTrustedMaterial{}, nil
	}
	rc, err := rekorclient.GetRekorClient(v.opts.RekorURL, rekorclient.WithUserAgent("kmsctl"))
	if err != nil {
		return nil, nil, fmt.Errorf("--rekor-url %s: %w", v.opts.RekorURL, err)
	}
	keys, err := cosign.GetRekorPubs(ctx)
	if err != nil {
		return nil, nil, refuse(ErrKey, err, fmt.Sprintf("--rekor-url %s needs Rekor's public key: %s; set SIGSTORE_REKOR_PUBLIC_KEY to its PEM file", v.opts.RekorURL, short(err)))
	}
	tm, err := rekorTrustedRoot(v.opts.RekorURL, keys)
	if err != nil {
		return nil, nil, refuse(ErrKey, err, fmt.Sprintf("--rekor-url %s: Rekor's public key: %s", v.opts.RekorURL, short(err)))
	}
	co.IgnoreTlog = false
	co.RekorClient = rc
	co.RekorPubKeys = keys
	return co, tm, nil
}

// rekorTrustedRoot turns the Rekor keys cosign found into the trusted
// material sigstore-go checks a bundle's transparency-log entry against.
func rekorTrustedRoot(baseURL string, keys *cosign.TrustedTransparencyLogPubKeys) (root.TrustedMaterial, error) {
	logs := make(map[string]*root.TransparencyLog, len(keys.Keys))
	for id, k := range keys.Keys {
		raw, err := hex.DecodeString(id)
		if err != nil {
			return nil, fmt.Errorf("log ID %q: %w", id, err)
		}
		logs[id] = &root.TransparencyLog{
			BaseURL:           baseURL,
			ID:                raw,
			HashFunc:          crypto.SHA256,
			PublicKey:         k.PubKey,
			SignatureHashFunc: crypto.SHA256,
		}
	}
	return root.NewTrustedRoot(root.TrustedRootMediaType01, nil, nil, nil, logs)
}

// verifyBundle verifies a Sigstore bundle with the key and requires it to
// be cosign's signature of digest.
func verifyBundle(ctx context.Context, co *cosign.CheckOpts, b *sgbundle.Bundle, digest name.Digest) error {
	h, err := v1.NewHash(digest.DigestStr())
	if err != nil {
		return err
	}
	raw, err := hex.DecodeString(h.Hex)
	if err != nil {
		return err
	}
	// The artifact policy makes sigstore-go check that the in-toto
	// subject (or the message signature's digest) is this digest.
	res, err := cosign.VerifyNewBundle(ctx, co, verify.WithArtifactDigest(h.Algorithm, raw), b)
	if err != nil {
		return err
	}
	// Any attestation about the image passes the policy above; only
	// cosign's signing statement says the key holder vouches for running it.
	if res.Statement != nil && res.Statement.GetPredicateType() != types.CosignSignPredicateType {
		return fmt.Errorf("an attestation of type %s, not a cosign signature (%s)", res.Statement.GetPredicateType(), types.CosignSignPredicateType)
	}
	return nil
}

// checkFlagInterface requires the flag-interface label on the image, or on
// every platform image of an index, and returns the labels they share.
func checkFlagInterface(desc *remote.Descriptor, pinned, registry string) (map[string]string, error) {
	readErr := func(err error) error {
		return registryError(err, "read the config of "+pinned, registry)
	}
	switch {
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, readErr(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, readErr(err)
		}
		if err := checkLabel(cf.Config.Labels, "image "+pinned); err != nil {
			return nil, err
		}
		return cf.Config.Labels, nil
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, readErr(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, readErr(err)
		}
		var common map[string]string
		images := 0
		for _, m := range im.Manifests {
			if _, ok := m.Annotations[buildkitReferenceType]; ok {
				continue
			}
			what := fmt.Sprintf("image %s (%s)", pinned, platformOf(m))
			if !m.MediaType.IsImage() {
				return nil, refuse(ErrFlagInterface, nil, fmt.Sprintf("%s is a %s, not an image: kmsctl checks indexes of images only; push a flat index, as make image builds", what, m.MediaType))
			}
			img, err := idx.Image(m.Digest)
			if err != nil {
				return nil, readErr(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				return nil, readErr(err)
			}
			if err := checkLabel(cf.Config.Labels, what); err != nil {
				return nil, err
			}
			common = intersect(common, cf.Config.Labels, images == 0)
			images++
		}
		if images == 0 {
			return nil, refuse(ErrFlagInterface, nil, fmt.Sprintf("image %s is an index that lists no platform image; push the index make image builds", pinned))
		}
		return common, nil
	default:
		return nil, refuse(ErrFlagInterface, nil, fmt.Sprintf("%s is a %s, not an image or an image index, so it does not declare its flag interface", pinned, desc.MediaType))
	}
}

func checkLabel(labels map[string]string, what string) error {
	got, ok := labels[contract.FlagInterfaceLabel]
	if !ok {
		return refuse(ErrFlagInterface, nil, fmt.Sprintf(
			"%s does not declare its flag interface: its config has no label %s, and kmsctl render passes flag interface %s; deploy an image built by make image",
			what, contract.FlagInterfaceLabel, contract.FlagInterfaceVersion))
	}
	if got != contract.FlagInterfaceVersion {
		return refuse(ErrFlagInterface, nil, fmt.Sprintf(
			"%s declares flag interface %q (label %s), but kmsctl render passes %q; deploy an image built for %s, or use the kmsctl that matches the image",
			what, got, contract.FlagInterfaceLabel, contract.FlagInterfaceVersion, contract.FlagInterfaceVersion))
	}
	return nil
}

// intersect keeps the labels of acc that labels has with the same value;
// first starts the accumulation.
func intersect(acc, labels map[string]string, first bool) map[string]string {
	if first {
		out := make(map[string]string, len(labels))
		for k, v := range labels {
			out[k] = v
		}
		return out
	}
	for k, v := range acc {
		if labels[k] != v {
			delete(acc, k)
		}
	}
	return acc
}

func platformOf(m v1.Descriptor) string {
	if m.Platform == nil {
		return m.Digest.String()
	}
	return m.Platform.String()
}

// repoAsGiven strips the tag or digest from a reference as the user wrote
// it, so the pinned reference names the repository they asked for (a
// mirror, say) in their spelling rather than in ggcr's normalised one.
func repoAsGiven(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref = ref[:i]
	}
	return ref
}

// loadKey reads a PEM public key the way cosign verify --key does for a
// file, and says what to pass instead when it is something else.
func loadKey(path string) (signature.Verifier, error) {
	const fix = "pass the cosign.pub written by cosign generate-key-pair"
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, refuse(ErrKey, err, fmt.Sprintf("--key %s: %v; %s", path, err, fix))
	}
	if blk, _ := pem.Decode(b); blk != nil && strings.Contains(blk.Type, "PRIVATE KEY") {
		return nil, refuse(ErrKey, nil, fmt.Sprintf("--key %s is a private key (PEM %s); pass its public half, cosign.pub", path, blk.Type))
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(b)
	if err != nil {
		return nil, refuse(ErrKey, err, fmt.Sprintf("--key %s is not a PEM public key (%s); %s", path, short(err), fix))
	}
	sv, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, refuse(ErrKey, err, fmt.Sprintf("--key %s: cannot verify with a %T key (%s); %s", path, pub, short(err), fix))
	}
	return sv, nil
}

// isRegistryErr tells a failure to talk to the registry from a signature
// that was read and rejected.
func isRegistryErr(err error) bool {
	var terr *transport.Error
	var uerr *url.Error
	var nerr net.Error
	return errors.As(err, &terr) || errors.As(err, &uerr) || errors.As(err, &nerr) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// registryError explains a failed registry request: not found, or which
// knob (address, credentials, --allow-insecure-registry, --timeout) to
// turn.
func registryError(err error, doing, registry string) error {
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return refuse(ErrNotFound, err, fmt.Sprintf("cannot %s: not found in registry %s (%s); check the repository, tag and digest", doing, registry, short(err)))
	}
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var record tls.RecordHeaderError
	hint := "check the registry address and that it is reachable from here"
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		hint = "the registry did not answer in time; check its address, or raise --timeout"
	case terr != nil && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
		hint = "log in with docker login (credentials come from the docker config)"
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &record):
		hint = "pass --allow-insecure-registry if it serves plain HTTP or an untrusted certificate"
	}
	return refuse(ErrRegistry, err, fmt.Sprintf("cannot %s: registry %s: %s; %s", doing, registry, short(err), hint))
}
