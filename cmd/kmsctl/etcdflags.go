package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// scanOptions are the etcd and resource flags of every command that scans
// etcd (status, retire): one definition, so they mean the same everywhere.
type scanOptions struct {
	etcd       scan.EtcdConfig
	etcdPrefix string
	resources  []string
	// flags is where AddFlags registered the flags, so resourcesSet can ask
	// whether --resources was given.
	flags *pflag.FlagSet
}

// resourcesSet reports whether --resources was given, so it can be refused
// beside --config instead of silently losing to it.
func (o *scanOptions) resourcesSet() bool {
	return o.flags != nil && o.flags.Changed("resources")
}

// AddFlags registers the flags; defaultResources is --resources' default.
func (o *scanOptions) AddFlags(fs *pflag.FlagSet, defaultResources []string) {
	o.flags = fs
	o.addEtcdFlags(fs, "(required)")
	fs.StringSliceVar(&o.resources, "resources", defaultResources, "encrypted resources to scan, as EncryptionConfiguration names them (secrets, configmaps, deployments.apps)")
}

// addEtcdFlags registers where etcd is and how to reach it, without
// --resources, for commands that take the resources from kms.yaml; need
// says when --etcd-endpoints is needed.
func (o *scanOptions) addEtcdFlags(fs *pflag.FlagSet, need string) {
	fs.StringSliceVar(&o.etcd.Endpoints, "etcd-endpoints", nil, "etcd client URLs, as kube-apiserver's --etcd-servers "+need)
	fs.StringVar(&o.etcd.CACert, "etcd-cacert", "", "CA bundle that verifies etcd's serving certificate (kube-apiserver's --etcd-cafile)")
	fs.StringVar(&o.etcd.Cert, "etcd-cert", "", "client certificate for etcd (kube-apiserver's --etcd-certfile)")
	fs.StringVar(&o.etcd.Key, "etcd-key", "", "client key for etcd (kube-apiserver's --etcd-keyfile)")
	fs.StringVar(&o.etcdPrefix, "etcd-prefix", scan.DefaultEtcdPrefix, "kube-apiserver's --etcd-prefix")
}

// Validate checks the flags. configGiven is whether --config supplies the
// resources instead.
func (o *scanOptions) Validate(configGiven bool) error {
	switch {
	case len(o.etcd.Endpoints) == 0:
		return errors.New("--etcd-endpoints is required")
	case configGiven && o.resourcesSet():
		return errors.New("--resources and --config are exclusive: --config takes encryption.resources from kms.yaml")
	case !configGiven && len(o.resources) == 0:
		return errors.New("--resources must name at least one resource")
	case (o.etcd.Cert == "") != (o.etcd.Key == ""):
		return errors.New("--etcd-cert and --etcd-key go together")
	}
	if !configGiven {
		for _, r := range o.resources {
			if _, err := scan.KeyPrefix(o.etcdPrefix, r); err != nil {
				return fmt.Errorf("--resources: %w", err)
			}
		}
	}
	return nil
}

// Resources returns what to scan: encryption.resources of cfg (loaded from
// configPath) when there is one, else --resources.
func (o *scanOptions) Resources(cfg *config.Config, configPath string) ([]string, error) {
	if cfg == nil {
		return o.resources, nil
	}
	for i, r := range cfg.Encryption.Resources {
		if _, err := scan.KeyPrefix(o.etcdPrefix, r); err != nil {
			return nil, fmt.Errorf("%s: encryption.resources[%d]: %w", configPath, i, err)
		}
	}
	return cfg.Encryption.Resources, nil
}

// Scan connects to etcd, scans resources once and disconnects.
func (o *scanOptions) Scan(ctx context.Context, resources []string, nameLimit int) (scan.Report, error) {
	client, err := scan.Dial(o.etcd)
	if err != nil {
		return scan.Report{}, err
	}
	defer client.Close()
	return scan.Scan(ctx, scan.NewEtcdReader(client), resources, scan.Options{EtcdPrefix: o.etcdPrefix, NameLimit: nameLimit})
}
