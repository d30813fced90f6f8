// Package kube is migrate's Rewriter over a real API server: GET the object,
// PUT the same bytes back, so the API server stores a stale object again
// under its current key.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate"
)

// Rewriter is a migrate.Rewriter over client-go's REST client.
type Rewriter struct {
	client *rest.RESTClient
	mapper meta.RESTMapper

	mu   sync.Mutex
	gvrs map[string]schema.GroupVersionResource
}

var _ migrate.Rewriter = (*Rewriter)(nil)

// New returns a Rewriter for the API server of cfg. cfg's own rate limit is
// raised to qps (objects per second: each is two requests) so that it does
// not pace below migrate's limiter.
func New(cfg *rest.Config, qps float64) (*Rewriter, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS = float32(2*qps + 10)
	cfg.Burst = int(2*qps) + 20
	cfg.UserAgent = "kmsctl-migrate"
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	raw := rest.CopyConfig(cfg)
	raw.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	client, err := rest.UnversionedRESTClientFor(raw)
	if err != nil {
		return nil, fmt.Errorf("REST client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	return &Rewriter{client: client, mapper: mapper, gvrs: map[string]schema.GroupVersionResource{}}, nil
}

// Resolve maps an EncryptionConfiguration resource name (secrets,
// deployments.apps) to the group, preferred version and resource the API
// server serves.
func (r *Rewriter) Resolve(resource string) (schema.GroupVersionResource, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gvr, ok := r.gvrs[resource]; ok {
		return gvr, nil
	}
	res, group, _ := strings.Cut(resource, ".")
	gvr, err := r.mapper.ResourceFor(schema.GroupVersionResource{Group: group, Resource: res})
	if err != nil {
		return gvr, fmt.Errorf("resource %s: %w", resource, err)
	}
	r.gvrs[resource] = gvr
	return gvr, nil
}

// Rewrite GETs the object and PUTs the bytes it read back unchanged. The
// PUT carries the resourceVersion it read, so a write by someone else in
// between fails with a conflict, which migrate counts as done (that write
// stored the object under the current key too).
//
// The bytes are never decoded: built-in resources travel as protobuf
// (JSON for custom resources, which have no protobuf form), which costs
// the API server less than JSON, and kmsctl nothing. On a 2-core control
// plane the API server's CPU is what bounds a migration.
func (r *Rewriter) Rewrite(ctx context.Context, resource, namespace, name string) error {
	gvr, err := r.Resolve(resource)
	if err != nil {
		return err
	}
	path := objectPath(gvr, namespace, name)
	var contentType string
	body, err := r.client.Get().AbsPath(path...).
		SetHeader("Accept", "application/vnd.kubernetes.protobuf, application/json").
		Do(ctx).ContentType(&contentType).Raw()
	if err != nil {
		return classify("get", err)
	}
	err = r.client.Put().AbsPath(path...).Param("fieldManager", "kmsctl-migrate").
		SetHeader("Content-Type", contentType).
		SetHeader("Accept", "application/vnd.kubernetes.protobuf, application/json").
		Body(body).Do(ctx).Error()
	if err != nil {
		return classify("update", err)
	}
	return nil
}

// objectPath is the URL path of one object: /api/v1/... for the core
// group, /apis/<group>/<version>/... otherwise.
func objectPath(gvr schema.GroupVersionResource, namespace, name string) []string {
	p := []string{"/apis", gvr.Group, gvr.Version}
	if gvr.Group == "" {
		p = []string{"/api", gvr.Version}
	}
	if namespace != "" {
		p = append(p, "namespaces", namespace)
	}
	return append(p, gvr.Resource, name)
}

// classify wraps err with the migrate error it is, if any.
func classify(op string, err error) error {
	var ne net.Error
	switch {
	case apierrors.IsConflict(err):
		return fmt.Errorf("%s: %w: %w", op, migrate.ErrConflict, err)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s: %w: %w", op, migrate.ErrNotFound, err)
	case apierrors.IsTooManyRequests(err):
		return fmt.Errorf("%s: %w: %w", op, migrate.ErrThrottled, err)
	case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err),
		errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%s: %w: %w", op, migrate.ErrTimeout, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
