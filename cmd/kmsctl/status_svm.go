package main

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/rest"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate/kube"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/migrate/svm"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rotation"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// SVMSection is `kmsctl status -o json`'s "storageVersionMigrations": the
// StorageVersionMigrations of the encrypted resources, as the kubeconfig's
// API server lists them.
type SVMSection struct {
	// Server is the API server asked (the kubeconfig's).
	Server string `json:"server"`
	// Served is whether it serves storagemigration.k8s.io/v1
	// StorageVersionMigrations. False with Error set: discovery failed, so
	// it is not known.
	Served bool `json:"served"`
	// Migrations are every migration whose spec.resource is one of the
	// scanned resources, kmsctl's or not, in the scan's resource order and
	// oldest first within each; [] when there are none or they are not
	// served.
	Migrations []SVMStatus `json:"migrations"`
	// Error says why the section is incomplete; status still exits 0.
	Error string `json:"error,omitempty"`
}

// SVMStatus is one StorageVersionMigration.
type SVMStatus struct {
	Name string `json:"name"`
	// Resource is the EncryptionConfiguration name (secrets,
	// deployments.apps).
	Resource string `json:"resource"`
	// State is Pending, Running, Succeeded or Failed.
	State svm.State `json:"state"`
	// Message is the Failed condition's message, else the Running one's.
	Message string `json:"message,omitempty"`
	// Created is its creationTimestamp, UTC.
	Created time.Time `json:"created"`
	// ManagedByKmsctl: labelled app.kubernetes.io/managed-by=kmsctl.
	ManagedByKmsctl bool `json:"managedByKmsctl"`
	// Warning is set on a resource's newest migration when it Succeeded and
	// the scan still finds objects under older transit key versions (see
	// svmWarning).
	Warning string `json:"warning,omitempty"`
}

// svmTimeout bounds discovery and the list, like an API server's metrics
// read: a blackholed API server must not hold status for --timeout.
const svmTimeout = 15 * time.Second

// svmSection asks the API server of kubeCfg for the migrations of the
// scanned resources and judges them against the scan. Its errors are the
// section's, never status's.
func svmSection(ctx context.Context, kubeCfg *rest.Config, rep scan.Report, key *rotation.KeyState, latestCreated time.Time) *SVMSection {
	ctx, cancel := context.WithTimeout(ctx, svmTimeout)
	defer cancel()
	sec := &SVMSection{Server: kubeCfg.Host, Migrations: []SVMStatus{}}
	served, err := kube.ServesSVM(ctx, kubeCfg)
	if err != nil {
		sec.Error = err.Error()
		return sec
	}
	if sec.Served = served; !served {
		return sec
	}
	resources := make([]string, len(rep.Resources))
	for i, r := range rep.Resources {
		resources[i] = r.Resource
	}
	listed, err := kube.ListForResources(ctx, kubeCfg, resources)
	if err != nil {
		sec.Error = err.Error()
		return sec
	}
	for _, l := range listed {
		sec.Migrations = append(sec.Migrations, SVMStatus{Name: l.Name, Resource: l.Resource, State: l.State,
			Message: l.Message, Created: l.Created.UTC(), ManagedByKmsctl: l.ManagedByKmsctl})
	}
	setSVMWarnings(sec.Migrations, olderObjects(rep, key), latestCreated)
	return sec
}

// olderObjects counts, per resource, the objects the scan finds under a
// transit key version older than the one new data is written under: the
// key's latest_version when the transit key section is there (key non-nil;
// other keys' objects are not counted), else the newest version the scan
// saw of the same transit key in any resource.
func olderObjects(rep scan.Report, key *rotation.KeyState) map[string]int {
	newest := map[string]int{}
	for _, r := range rep.Resources {
		for _, g := range r.Groups {
			if g.Class == scan.ClassKMSv2 && g.TransitVersion > newest[g.TransitKey] {
				newest[g.TransitKey] = g.TransitVersion
			}
		}
	}
	out := map[string]int{}
	for _, r := range rep.Resources {
		for _, g := range r.Groups {
			if g.Class != scan.ClassKMSv2 || g.TransitVersion == 0 || g.TransitKey == "" {
				continue
			}
			current := newest[g.TransitKey]
			if key != nil {
				if g.TransitKey != key.Name {
					continue
				}
				current = key.Latest
			}
			if g.TransitVersion < current {
				out[r.Resource] += g.Count
			}
		}
	}
	return out
}

// setSVMWarnings sets svmWarning on each resource's newest migration
// (migs is oldest first within a resource): older ones are history, and a
// newer one supersedes them.
func setSVMWarnings(migs []SVMStatus, older map[string]int, latestCreated time.Time) {
	newest := map[string]int{}
	for i, m := range migs {
		if j, ok := newest[m.Resource]; !ok || !m.Created.Before(migs[j].Created) {
			newest[m.Resource] = i
		}
	}
	for _, i := range newest {
		migs[i].Warning = svmWarning(migs[i], older[migs[i].Resource], latestCreated)
	}
}

// svmWarning is the warning on a resource's newest migration m, "" if
// none. A StorageVersionMigration Succeeds once it has sent its requests:
// if an API server still had the old key_id then, it wrote nothing, and
// objects remain under older versions (older of them). A migration created
// before the latest key version (latestCreated, zero when unknown) could
// not have moved anything to it: it is not to blame, and says so.
func svmWarning(m SVMStatus, older int, latestCreated time.Time) string {
	switch {
	case m.State != svm.StateSucceeded || older == 0:
		return ""
	case !latestCreated.IsZero() && m.Created.Before(latestCreated):
		return fmt.Sprintf("Succeeded before the transit key's latest version existed; %d objects remain under older versions: run kmsctl migrate", older)
	}
	return fmt.Sprintf("Succeeded, yet %d objects remain under older versions: it ran before every API server had the new key_id; run kmsctl migrate", older)
}
