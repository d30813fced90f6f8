package scan

import (
	"fmt"
	"path"
	"strings"
)

// DefaultEtcdPrefix is kube-apiserver's default --etcd-prefix.
const DefaultEtcdPrefix = "/registry"

// specialPrefixes are the resources kube-apiserver stores under another
// name than their own: SpecialDefaultResourcePrefixes in k8s.io/kubernetes
// pkg/kubeapiserver/default_storage_factory_builder.go (checked at the
// v1.37 source). Keys are "resource" for the core group and
// "resource.group" otherwise, as EncryptionConfiguration names them.
var specialPrefixes = map[string]string{
	"replicationcontrollers":      "controllers",
	"endpoints":                   "services/endpoints",
	"nodes":                       "minions",
	"services":                    "services/specs",
	"ingresses.networking.k8s.io": "ingress",
	"ingresses.extensions":        "ingress",
}

// builtinGroups are the API groups kube-apiserver serves from its own
// storage factory (DefaultStorageFactory), which stores a resource under
// "<etcd prefix>/<resource>/" whatever its group. Every other group is stored
// under "<etcd prefix>/<group>/<resource>/": custom resources (the
// apiextensions-apiserver's CRDRESTOptionsGetter uses
// ResourcePrefix: group + "/" + resource) and the two groups served by
// the apiextensions and aggregator servers, apiextensions.k8s.io and
// apiregistration.k8s.io, whose etcd options use k8s.io/apiserver's
// SimpleStorageFactory (ResourcePrefix: group + "/" + resource).
var builtinGroups = map[string]bool{
	"":                             true,
	"admissionregistration.k8s.io": true,
	"apps":                         true,
	"autoscaling":                  true,
	"batch":                        true,
	"certificates.k8s.io":          true,
	"coordination.k8s.io":          true,
	"discovery.k8s.io":             true,
	"events.k8s.io":                true, // cohabits with core events
	"extensions":                   true,
	"flowcontrol.apiserver.k8s.io": true,
	"internal.apiserver.k8s.io":    true,
	"networking.k8s.io":            true,
	"node.k8s.io":                  true,
	"policy":                       true,
	"rbac.authorization.k8s.io":    true,
	"resource.k8s.io":              true,
	"scheduling.k8s.io":            true,
	"storage.k8s.io":               true,
	"storagemigration.k8s.io":      true,
}

// KeyPrefix returns the etcd key prefix, ending in '/', under which
// kube-apiserver started with --etcd-prefix=etcdPrefix stores resource, an
// EncryptionConfiguration resource name ("secrets", "deployments.apps",
// "widgets.example.com"):
//
//   - the resources in specialPrefixes under their special name
//     (nodes: <prefix>/minions/, services: <prefix>/services/specs/, ...);
//   - other resources of a built-in group under <prefix>/<resource>/, the
//     storage factory's default; this includes built-in resources this
//     table does not know yet;
//   - resources of any other group, which are custom resources or served by
//     the apiextensions and aggregator servers, under
//     <prefix>/<group>/<resource>/.
//
// Wildcards (*.apps, *.*) name resources that only the API server's
// discovery can list, so they are refused: name the resources instead.
func KeyPrefix(etcdPrefix, resource string) (string, error) {
	if resource == "" {
		return "", fmt.Errorf("empty resource name")
	}
	if strings.Contains(resource, "*") {
		return "", fmt.Errorf("resource %q is a wildcard: the scan needs each resource named (for example secrets, configmaps)", resource)
	}
	if strings.ContainsAny(resource, "/ ") || strings.ToLower(resource) != resource {
		return "", fmt.Errorf("resource %q is not a lower-case resource[.group] name", resource)
	}
	// The API server's etcd3 store roots keys at path.Join("/", prefix).
	base := strings.TrimSuffix(path.Join("/", etcdPrefix), "/")
	if p, ok := specialPrefixes[resource]; ok {
		return base + "/" + p + "/", nil
	}
	res, group, _ := strings.Cut(resource, ".")
	if builtinGroups[group] {
		return base + "/" + res + "/", nil
	}
	return base + "/" + group + "/" + res + "/", nil
}
