package imagebuild

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ParseRepository parses a repository to push to: a name with no tag and
// no digest, since the index is pushed by its digest. With insecure the
// registry is spoken to over plain http (go-containerregistry already does
// so for localhost and loopback addresses).
func ParseRepository(repo string, insecure bool) (name.Repository, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.NewRepository(repo, opts...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("want a repository such as registry.example.com/vault-kms-plugin, without tag or digest: %w", err)
	}
	return r, nil
}

// Push uploads idx, its manifests and blobs to repo by digest, with the
// credentials of the local docker config (authn.DefaultKeychain), and
// returns the digest reference it wrote. Its errors are one line that says
// which registry failed and what to check.
func Push(ctx context.Context, repo name.Repository, idx v1.ImageIndex) (name.Digest, error) {
	d, err := idx.Digest()
	if err != nil {
		return name.Digest{}, fmt.Errorf("index digest: %w", err)
	}
	ref := repo.Digest(d.String())
	err = remote.WriteIndex(ref, idx,
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		return name.Digest{}, describePushError(repo.RegistryStr(), err)
	}
	return ref, nil
}

// describePushError turns what go-containerregistry returns (often both the
// https and the http attempt, joined) into one line naming the registry and
// the likely fix.
func describePushError(registry string, err error) error {
	var (
		terr   *transport.Error
		unk    x509.UnknownAuthorityError
		host   x509.HostnameError
		inval  x509.CertificateInvalidError
		rec    tls.RecordHeaderError
		dnsErr *net.DNSError
		opErr  *net.OpError
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("push to registry %s: %w", registry, err)
	case errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
		return fmt.Errorf("registry %s refused the push (HTTP %d: %s); check the credentials for %s in the docker config (docker login %s)",
			registry, terr.StatusCode, oneLine(terr.Error()), registry, registry)
	case errors.As(err, &terr):
		return fmt.Errorf("registry %s answered HTTP %d: %s", registry, terr.StatusCode, oneLine(terr.Error()))
	case errors.Is(err, http.ErrSchemeMismatch), errors.As(err, &rec):
		return fmt.Errorf("registry %s speaks plain http, not https; if that is intended pass --allow-insecure-registry (make image INSECURE_REGISTRY=1)", registry)
	case errors.As(err, &unk), errors.As(err, &host), errors.As(err, &inval):
		return fmt.Errorf("registry %s: its TLS certificate is not trusted here (%s); check the certificate and this machine's CA roots", registry, oneLine(firstOf(unk, host, inval).Error()))
	case errors.As(err, &dnsErr):
		return fmt.Errorf("registry %s unreachable: %s; check the registry's host name", registry, oneLine(dnsErr.Error()))
	case errors.As(err, &opErr):
		return fmt.Errorf("registry %s unreachable: %s; check that it is running and listening there, and the host and port in the repository", registry, oneLine(opErr.Error()))
	default:
		return fmt.Errorf("push to registry %s: %s", registry, oneLine(err.Error()))
	}
}

// firstOf returns the certificate error errors.As filled in.
func firstOf(unk x509.UnknownAuthorityError, host x509.HostnameError, inval x509.CertificateInvalidError) error {
	switch {
	case unk.Cert != nil:
		return unk
	case host.Certificate != nil:
		return host
	default:
		return inval
	}
}

// oneLine folds a multi-line error (registries put JSON bodies in them)
// onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
