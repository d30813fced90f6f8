package kube

import (
	"testing"

	svmv1 "k8s.io/api/storagemigration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate/svm"
)

func TestObserve(t *testing.T) {
	cond := func(typ svmv1.MigrationConditionType, status metav1.ConditionStatus, msg string) metav1.Condition {
		return metav1.Condition{Type: string(typ), Status: status, Message: msg}
	}
	tests := []struct {
		name  string
		conds []metav1.Condition
		want  svm.State
		msg   string
	}{
		{name: "no conditions => pending (queued behind another migration of the resource)", want: svm.StatePending},
		{name: "Running true => running", conds: []metav1.Condition{cond(svmv1.MigrationRunning, metav1.ConditionTrue, "The migration is running")},
			want: svm.StateRunning, msg: "The migration is running"},
		{name: "Running true and Succeeded true (1.37 before its runner clears Running) => succeeded",
			conds: []metav1.Condition{cond(svmv1.MigrationRunning, metav1.ConditionTrue, "x"), cond(svmv1.MigrationSucceeded, metav1.ConditionTrue, "Migration completed")},
			want:  svm.StateSucceeded},
		{name: "Running false and Succeeded true => succeeded",
			conds: []metav1.Condition{cond(svmv1.MigrationRunning, metav1.ConditionFalse, "Migration completed"), cond(svmv1.MigrationSucceeded, metav1.ConditionTrue, "Migration completed")},
			want:  svm.StateSucceeded},
		{name: "Running true and Failed true => failed, with the Failed message",
			conds: []metav1.Condition{cond(svmv1.MigrationRunning, metav1.ConditionTrue, "3/10 objects not yet migrated"), cond(svmv1.MigrationFailed, metav1.ConditionTrue, "migration encountered unhandled error: forbidden")},
			want:  svm.StateFailed, msg: "migration encountered unhandled error: forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &svmv1.StorageVersionMigration{ObjectMeta: metav1.ObjectMeta{Name: "m"},
				Spec:   svmv1.StorageVersionMigrationSpec{Resource: metav1.GroupResource{Group: "apps", Resource: "deployments"}},
				Status: svmv1.StorageVersionMigrationStatus{Conditions: tt.conds}}
			got := observe("", s)
			if got.State != tt.want || got.Message != tt.msg || got.Resource != "deployments.apps" || got.Name != "m" {
				t.Errorf("observe = %+v, want state %s message %q resource deployments.apps", got, tt.want, tt.msg)
			}
		})
	}
}
