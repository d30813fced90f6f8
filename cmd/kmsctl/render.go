package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/atomicfile"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
)

// renderOptions are the flags of `kmsctl render`.
type renderOptions struct {
	configPath string
	outDir     string
}

func newRenderCmd() *cobra.Command {
	o := &renderOptions{}
	cmd := &cobra.Command{
		Use:   "render --config kms.yaml --out DIR",
		Short: "Write the plugin's static pod, sidecar patch, EncryptionConfiguration and Vault setup from kms.yaml",
		Long: `render reads kms.yaml, validates it, and writes into DIR:
  vault-kms-plugin.yaml        the plugin's static pod
  kube-apiserver-sidecar.yaml  the plugin as a native sidecar patch of kube-apiserver (kubeadm --patches)
  encryption-config.yaml       the EncryptionConfiguration
  vault-policy.hcl             the plugin's least-privilege Vault policy
  vault-operator-policy.hcl    the operator's key rotation policy
  vault-setup.sh               sets up Vault and writes the node's credentials
Each file is replaced atomically.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// AddFlags registers the options' flags.
func (o *renderOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "kms.yaml to render (required)")
	fs.StringVar(&o.outDir, "out", "", "directory to write the rendered files into; created if missing (required)")
}

// Validate checks the flags.
func (o *renderOptions) Validate() error {
	if o.configPath == "" {
		return errors.New("--config is required")
	}
	if o.outDir == "" {
		return errors.New("--out is required")
	}
	return nil
}

// Run loads, validates and renders the config, writes each file and prints
// its path.
func (o *renderOptions) Run(stdout io.Writer) error {
	cfg, err := config.Load(o.configPath)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid %s:\n%w", o.configPath, err)
	}
	files, err := render.Render(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	for _, f := range files {
		p := filepath.Join(o.outDir, f.Name)
		if err := atomicfile.WriteFile(p, f.Data, f.Mode); err != nil {
			return err
		}
		fmt.Fprintln(stdout, p)
	}
	return nil
}
