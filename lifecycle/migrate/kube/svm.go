package kube

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	svmv1 "k8s.io/api/storagemigration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate/svm"
)

// SVMGroupVersion is the StorageVersionMigration API --engine=svm uses: GA
// and served by default from Kubernetes 1.37.
var SVMGroupVersion = svmv1.SchemeGroupVersion

var svmResource = SVMGroupVersion.WithResource("storageversionmigrations")

// Labels on every StorageVersionMigration kmsctl creates: a rerun lists its
// own by LabelManagedBy (and never touches anyone else's); the others say
// what it was for. Resource names are not labels, since an
// EncryptionConfiguration name can exceed a label value's 63 characters;
// spec.resource says which resource it migrates.
const (
	LabelManagedBy      = "app.kubernetes.io/managed-by"
	ManagedBy           = "kmsctl"
	LabelTransitVersion = "kmsctl.vaultkms.io/transit-version"
)

// ServesSVM reports whether the API server of cfg serves
// storagemigration.k8s.io/v1 StorageVersionMigrations (discovery).
func ServesSVM(ctx context.Context, cfg *rest.Config) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, fmt.Errorf("discovery client: %w", err)
	}
	list, err := dc.ServerResourcesForGroupVersionWithContext(ctx, SVMGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s on %s: %w", SVMGroupVersion, cfg.Host, err)
	}
	for _, r := range list.APIResources {
		if r.Name == svmResource.Resource {
			return true, nil
		}
	}
	return false, nil
}

// Migrations is svm.Client over client-go's dynamic client: the
// StorageVersionMigrations kmsctl created (LabelManagedBy=kmsctl).
type Migrations struct {
	client         dynamic.ResourceInterface
	transitVersion int
	// resolve maps an EncryptionConfiguration name to what the API server
	// serves, so spec.resource names it as the controller looks it up.
	resolve func(resource string) (schema.GroupVersionResource, error)
}

var _ svm.Client = (*Migrations)(nil)

// NewMigrations returns the StorageVersionMigrations of the API server of
// cfg. rw resolves resource names; transitVersion goes in a label.
func NewMigrations(cfg *rest.Config, rw *Rewriter, transitVersion int) (*Migrations, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kmsctl-migrate"
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return &Migrations{client: client.Resource(svmResource), transitVersion: transitVersion, resolve: rw.Resolve}, nil
}

// groupResource is spec.resource for an EncryptionConfiguration name.
func (m *Migrations) groupResource(resource string) (metav1.GroupResource, error) {
	gvr, err := m.resolve(resource)
	if err != nil {
		return metav1.GroupResource{}, err
	}
	return metav1.GroupResource{Group: gvr.Group, Resource: gvr.Resource}, nil
}

// ours lists kmsctl's migrations of resource, oldest first.
func (m *Migrations) ours(ctx context.Context, resource string) ([]svmv1.StorageVersionMigration, error) {
	gr, err := m.groupResource(resource)
	if err != nil {
		return nil, err
	}
	list, err := m.client.List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy})
	if err != nil {
		return nil, fmt.Errorf("list StorageVersionMigrations: %w", err)
	}
	var out []svmv1.StorageVersionMigration
	for _, u := range list.Items {
		s, err := fromUnstructured(&u)
		if err != nil {
			return nil, err
		}
		if s.Spec.Resource == gr {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b svmv1.StorageVersionMigration) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

// Active returns the newest pending or running migration of ours for
// resource, nil if none.
func (m *Migrations) Active(ctx context.Context, resource string) (*svm.Migration, error) {
	list, err := m.ours(ctx, resource)
	if err != nil {
		return nil, err
	}
	for _, s := range slices.Backward(list) {
		if o := observe(resource, &s); !o.State.Finished() {
			return &o, nil
		}
	}
	return nil, nil
}

// Create creates a migration of resource, named kmsctl-<resource>-v<N>-
// plus a suffix the API server generates.
func (m *Migrations) Create(ctx context.Context, resource string) (svm.Migration, error) {
	gr, err := m.groupResource(resource)
	if err != nil {
		return svm.Migration{}, err
	}
	s := &svmv1.StorageVersionMigration{
		TypeMeta: metav1.TypeMeta{APIVersion: SVMGroupVersion.String(), Kind: "StorageVersionMigration"},
		ObjectMeta: metav1.ObjectMeta{
			// The API server truncates a long base to fit the suffix.
			GenerateName: fmt.Sprintf("kmsctl-%s-v%d-", resource, m.transitVersion),
			Labels:       map[string]string{LabelManagedBy: ManagedBy, LabelTransitVersion: strconv.Itoa(m.transitVersion)},
		},
		Spec: svmv1.StorageVersionMigrationSpec{Resource: gr},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s)
	if err != nil {
		return svm.Migration{}, fmt.Errorf("encode StorageVersionMigration: %w", err)
	}
	created, err := m.client.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{FieldManager: "kmsctl-migrate"})
	if err != nil {
		return svm.Migration{}, err
	}
	got, err := fromUnstructured(created)
	if err != nil {
		return svm.Migration{}, err
	}
	return observe(resource, &got), nil
}

// Get observes one migration.
func (m *Migrations) Get(ctx context.Context, name string) (svm.Migration, error) {
	u, err := m.client.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return svm.Migration{}, err
	}
	s, err := fromUnstructured(u)
	if err != nil {
		return svm.Migration{}, err
	}
	return observe("", &s), nil
}

// DeleteFinished deletes kmsctl's migrations of resource that Succeeded or
// Failed.
func (m *Migrations) DeleteFinished(ctx context.Context, resource string) ([]string, error) {
	list, err := m.ours(ctx, resource)
	if err != nil {
		return nil, err
	}
	var deleted []string
	for _, s := range list {
		if !observe(resource, &s).State.Finished() {
			continue
		}
		err := m.client.Delete(ctx, s.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &s.UID}})
		if err != nil && !apierrors.IsNotFound(err) {
			return deleted, fmt.Errorf("delete StorageVersionMigration %s: %w", s.Name, err)
		}
		deleted = append(deleted, s.Name)
	}
	return deleted, nil
}

// Listed is one StorageVersionMigration as ListForResources reports it.
type Listed struct {
	svm.Migration
	// Created is its creationTimestamp.
	Created time.Time
	// ManagedByKmsctl is whether it carries LabelManagedBy=ManagedBy.
	ManagedByKmsctl bool
}

// GroupResource is spec.resource for an EncryptionConfiguration resource
// name as written: "secrets" is the core group's, "deployments.apps" group
// apps'. Migrations resolves names through discovery instead; a read-only
// listing matches what anyone created against the names as written, which
// is also how encryptionName spells them back.
func GroupResource(resource string) metav1.GroupResource {
	res, group, _ := strings.Cut(resource, ".")
	return metav1.GroupResource{Group: group, Resource: res}
}

// ListForResources lists every StorageVersionMigration of the API server
// of cfg whose spec.resource is one of resources (EncryptionConfiguration
// names), kmsctl's and anyone else's, in the order of resources, oldest
// first within each. It only reads.
func ListForResources(ctx context.Context, cfg *rest.Config, resources []string) ([]Listed, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kmsctl-status"
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	list, err := client.Resource(svmResource).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list StorageVersionMigrations on %s: %w (the kubeconfig's user needs list on storageversionmigrations.storagemigration.k8s.io)", cfg.Host, err)
	}
	return forResources(list.Items, resources)
}

// forResources is ListForResources' selection and order, over the listed
// objects.
func forResources(items []unstructured.Unstructured, resources []string) ([]Listed, error) {
	rank := map[metav1.GroupResource]int{}
	for i, r := range resources {
		if _, dup := rank[GroupResource(r)]; !dup {
			rank[GroupResource(r)] = i
		}
	}
	var out []Listed
	for i := range items {
		s, err := fromUnstructured(&items[i])
		if err != nil {
			return nil, err
		}
		at, ok := rank[s.Spec.Resource]
		if !ok {
			continue
		}
		out = append(out, Listed{Migration: observe(resources[at], &s), Created: s.CreationTimestamp.Time,
			ManagedByKmsctl: s.Labels[LabelManagedBy] == ManagedBy})
	}
	slices.SortStableFunc(out, func(a, b Listed) int {
		if c := rank[GroupResource(a.Resource)] - rank[GroupResource(b.Resource)]; c != 0 {
			return c
		}
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

func fromUnstructured(u *unstructured.Unstructured) (svmv1.StorageVersionMigration, error) {
	var s svmv1.StorageVersionMigration
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &s); err != nil {
		return s, fmt.Errorf("decode StorageVersionMigration %s: %w", u.GetName(), err)
	}
	return s, nil
}

// observe reads a migration's state from its conditions. Failed and
// Succeeded win over Running, which 1.37's controller sets false only
// after them.
func observe(resource string, s *svmv1.StorageVersionMigration) svm.Migration {
	o := svm.Migration{Name: s.Name, Resource: resource, State: svm.StatePending}
	if o.Resource == "" {
		o.Resource = encryptionName(s)
	}
	conds := s.Status.Conditions
	switch {
	case meta.IsStatusConditionTrue(conds, string(svmv1.MigrationFailed)):
		o.State, o.Message = svm.StateFailed, meta.FindStatusCondition(conds, string(svmv1.MigrationFailed)).Message
	case meta.IsStatusConditionTrue(conds, string(svmv1.MigrationSucceeded)):
		o.State = svm.StateSucceeded
	case meta.IsStatusConditionTrue(conds, string(svmv1.MigrationRunning)):
		o.State, o.Message = svm.StateRunning, meta.FindStatusCondition(conds, string(svmv1.MigrationRunning)).Message
	}
	return o
}

// encryptionName names the resource of a migration observed by name only:
// "resource" or "resource.group", as an EncryptionConfiguration would.
func encryptionName(s *svmv1.StorageVersionMigration) string {
	if s.Spec.Resource.Group == "" {
		return s.Spec.Resource.Resource
	}
	return s.Spec.Resource.Resource + "." + s.Spec.Resource.Group
}
