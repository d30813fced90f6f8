package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/image"
)

// verifyImageOptions are the flags of kmsctl verify-image.
type verifyImageOptions struct {
	image.Options
	timeout time.Duration
}

func (o *verifyImageOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.KeyPath, "key", "", "cosign public key (PEM, e.g. cosign.pub) the image must be signed with")
	f.BoolVar(&o.AllowInsecureRegistry, "allow-insecure-registry", false, "allow a plain-HTTP registry or one whose TLS certificate does not verify (signatures are verified all the same)")
	f.StringVar(&o.SignatureRepository, "signature-repository", "", "repository holding the signatures, when not the image's own (an image pulled from a mirror, signed upstream)")
	f.StringVar(&o.RekorURL, "rekor-url", "", "require a transparency-log entry from this Rekor for every signature (default: offline, no log)")
	f.DurationVar(&o.timeout, "timeout", 60*time.Second, "give up on the registry after this long")
	_ = cmd.MarkFlagRequired("key")
}

func (o *verifyImageOptions) validate() error {
	if o.timeout <= 0 {
		return errors.New("--timeout must be positive")
	}
	return o.Options.Validate()
}

func newVerifyImageCmd() *cobra.Command {
	o := &verifyImageOptions{}
	cmd := &cobra.Command{
		Use:   "verify-image --key cosign.pub [flags] IMAGE",
		Short: "Verify the plugin image's cosign signature and flag interface; print it pinned by digest",
		Long: `verify-image resolves IMAGE to its digest, verifies a cosign signature of that
digest with --key (the classic .sig tag or a Sigstore bundle, as cosign v2 and
v3 write them), checks that every platform image declares the flag interface
kmsctl render passes, and prints REPO@sha256:... on stdout. It contacts only
the registry unless --rekor-url is set. Registry credentials come from the
docker config (docker login).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			v, err := image.NewVerifier(o.Options)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			verified, err := v.Verify(ctx, args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), verified.Ref)
			return err
		},
	}
	o.addFlags(cmd)
	return cmd
}
