package imagebuild

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func TestPush(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	idx := mustBuild(t, testSpec())
	want := mustDigest(t, idx)

	repo, err := ParseRepository(host+"/vault-kms-plugin", false)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := Push(context.Background(), repo, idx)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if got := ref.String(); got != host+"/vault-kms-plugin@"+want.String() {
		t.Errorf("Push returned %s, want %s/vault-kms-plugin@%s", got, host, want)
	}

	pulled, err := remote.Index(ref)
	if err != nil {
		t.Fatalf("pull the pushed index: %v", err)
	}
	if got := mustDigest(t, pulled); got != want {
		t.Errorf("pulled index %s, pushed %s", got, want)
	}
	// Pulls every manifest, config and layer back and checks them.
	if err := validate.Index(pulled); err != nil {
		t.Errorf("validate.Index on the pulled index: %v", err)
	}
	if n := len(images(t, pulled)); n != 2 {
		t.Errorf("pulled %d images, want 2", n)
	}
}

func TestPushToAnUnreachableRegistry(t *testing.T) {
	// A port nothing listens on: bind one, then close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	repo, err := ParseRepository(addr+"/vault-kms-plugin", false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Push(context.Background(), repo, mustBuild(t, testSpec()))
	if err == nil {
		t.Fatal("Push to a closed port succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"registry " + addr + " unreachable", "connection refused", "check that it is running"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
}

func TestDescribePushError(t *testing.T) {
	req := &http.Request{Method: http.MethodPut, URL: &url.URL{Scheme: "https", Host: "reg.example", Path: "/v2/p/manifests/x"}}
	cases := map[string]struct {
		err  error
		want []string
	}{
		"401 from the registry => check the credentials": {
			err:  &transport.Error{StatusCode: http.StatusUnauthorized, Request: req},
			want: []string{"registry reg.example refused the push (HTTP 401", "docker login reg.example"},
		},
		"500 with a multi-line body => one line with the status": {
			err:  &transport.Error{StatusCode: http.StatusInternalServerError, Request: req, Errors: []transport.Diagnostic{{Code: "UNKNOWN", Message: "disk\nfull"}}},
			want: []string{"registry reg.example answered HTTP 500", "disk full"},
		},
		"plain http registry spoken to with https => --allow-insecure-registry": {
			err:  &url.Error{Op: "Get", URL: "https://reg.example/v2/", Err: http.ErrSchemeMismatch},
			want: []string{"registry reg.example speaks plain http", "--allow-insecure-registry", "INSECURE_REGISTRY=1"},
		},
		"untrusted certificate => check the certificate": {
			err:  &url.Error{Op: "Get", URL: "https://reg.example/v2/", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{Cert: &x509.Certificate{}}}},
			want: []string{"registry reg.example: its TLS certificate is not trusted", "certificate signed by unknown authority"},
		},
		"unknown host => check the host name": {
			err:  &url.Error{Op: "Get", URL: "https://reg.example/v2/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "reg.example", IsNotFound: true}}},
			want: []string{"registry reg.example unreachable", "no such host", "check the registry's host name"},
		},
		"cancelled => says so": {
			err:  fmt.Errorf("PUT: %w", context.Canceled),
			want: []string{"push to registry reg.example", "context canceled"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := describePushError("reg.example", tc.err).Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q does not contain %q", got, w)
				}
			}
			if strings.Contains(got, "\n") {
				t.Errorf("spans lines: %q", got)
			}
		})
	}
}
