package kube

import (
	"slices"
	"testing"
	"time"

	svmv1 "k8s.io/api/storagemigration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate/svm"
)

func TestGroupResource(t *testing.T) {
	tests := []struct {
		name     string
		resource string
		want     metav1.GroupResource
	}{
		{name: "core resource => empty group", resource: "secrets", want: metav1.GroupResource{Resource: "secrets"}},
		{name: "resource.group => that group", resource: "deployments.apps", want: metav1.GroupResource{Group: "apps", Resource: "deployments"}},
		{name: "custom resource with a dotted group => the whole group", resource: "widgets.example.com", want: metav1.GroupResource{Group: "example.com", Resource: "widgets"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := GroupResource(tt.resource); got != tt.want {
				t.Errorf("GroupResource(%q) = %+v, want %+v", tt.resource, got, tt.want)
			}
		})
	}
}

// listedSVM is a fixture: a migration of gr created at minute min, as the
// dynamic client lists it.
func listedSVM(t *testing.T, name string, gr metav1.GroupResource, min int, labels map[string]string, conds ...metav1.Condition) unstructured.Unstructured {
	t.Helper()
	s := &svmv1.StorageVersionMigration{
		TypeMeta: metav1.TypeMeta{APIVersion: SVMGroupVersion.String(), Kind: "StorageVersionMigration"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 11, 23, 10, min, 0, 0, time.UTC))},
		Spec:   svmv1.StorageVersionMigrationSpec{Resource: gr},
		Status: svmv1.StorageVersionMigrationStatus{Conditions: conds},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s)
	if err != nil {
		t.Fatal(err)
	}
	return unstructured.Unstructured{Object: obj}
}

func TestForResources(t *testing.T) {
	secrets := metav1.GroupResource{Resource: "secrets"}
	deployments := metav1.GroupResource{Group: "apps", Resource: "deployments"}
	ours := map[string]string{LabelManagedBy: ManagedBy}
	succeeded := metav1.Condition{Type: string(svmv1.MigrationSucceeded), Status: metav1.ConditionTrue}
	failed := metav1.Condition{Type: string(svmv1.MigrationFailed), Status: metav1.ConditionTrue, Message: "forbidden"}
	items := []unstructured.Unstructured{
		listedSVM(t, "theirs-secrets", secrets, 5, map[string]string{LabelManagedBy: "someone-else"}, succeeded),
		listedSVM(t, "kmsctl-deployments.apps-v2-x", deployments, 1, ours, failed),
		listedSVM(t, "kmsctl-secrets-v2-b", secrets, 3, ours),
		listedSVM(t, "configmaps-migration", metav1.GroupResource{Resource: "configmaps"}, 0, nil, succeeded),
		listedSVM(t, "kmsctl-secrets-v2-a", secrets, 3, ours, succeeded),
	}

	got, err := forResources(items, []string{"secrets", "deployments.apps"})
	if err != nil {
		t.Fatal(err)
	}
	at := func(min int) time.Time { return time.Date(2026, 11, 23, 10, min, 0, 0, time.UTC) }
	want := []Listed{
		{Migration: svm.Migration{Name: "kmsctl-secrets-v2-a", Resource: "secrets", State: svm.StateSucceeded}, Created: at(3), ManagedByKmsctl: true},
		{Migration: svm.Migration{Name: "kmsctl-secrets-v2-b", Resource: "secrets", State: svm.StatePending}, Created: at(3), ManagedByKmsctl: true},
		{Migration: svm.Migration{Name: "theirs-secrets", Resource: "secrets", State: svm.StateSucceeded}, Created: at(5)},
		{Migration: svm.Migration{Name: "kmsctl-deployments.apps-v2-x", Resource: "deployments.apps", State: svm.StateFailed, Message: "forbidden"}, Created: at(1), ManagedByKmsctl: true},
	}
	t.Run("every migration of an asked resource, anyone's => in resource order, oldest first, ties by name; other resources left out", func(t *testing.T) {
		if !slices.EqualFunc(got, want, func(a, b Listed) bool {
			return a.Migration == b.Migration && a.Created.Equal(b.Created) && a.ManagedByKmsctl == b.ManagedByKmsctl
		}) {
			t.Errorf("forResources =\n%+v\nwant\n%+v", got, want)
		}
	})
	t.Run("no asked resource migrated => none", func(t *testing.T) {
		got, err := forResources(items, []string{"widgets.example.com"})
		if err != nil || len(got) != 0 {
			t.Errorf("forResources = %+v, %v; want none", got, err)
		}
	})
}
