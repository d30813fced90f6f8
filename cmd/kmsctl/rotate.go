package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/apiserver"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rotation"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/transit"
)

// rotateOptions are the flags of `kmsctl rotate`.
type rotateOptions struct {
	migrateOptions
	vaultOptions
	observeOnly bool
	apiservers  []string
	keyIDMode   string
	waitTimeout time.Duration
	poll        time.Duration
}

func newRotateCmd() *cobra.Command { return newRotateCmdEnv(os.Getenv) }

// newRotateCmdEnv is newRotateCmd reading VAULT_TOKEN through getenv.
func newRotateCmdEnv(getenv func(string) string) *cobra.Command {
	o := &rotateOptions{vaultOptions: vaultOptions{getenv: getenv}}
	cmd := &cobra.Command{
		Use:   "rotate (--config kms.yaml | --vault-address URL --vault-key-path MOUNT/keys/NAME --resources R,...) --etcd-endpoints URL[,URL...] --apiservers URL[,URL...] [--observe-only]",
		Short: "Rotate the transit key, wait until every API server uses the new version, then migrate stored data to it",
		Long: `rotate adds a version to the Vault transit key (or, with --observe-only,
takes the latest version as it is, for a rotation done elsewhere, for example
by the key's auto_rotate_period), then waits until every API server listed in
--apiservers reports the plugin's key_id of that version in its metrics
(apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds; the
plugin sees a rotation within its -status-refresh-interval and the API
server polls Status about once a minute), and only then runs kmsctl migrate
with --transit-version set to it: a migration started earlier would leave
objects that an API server still on the old key wrote again.

--apiservers lists each API server's own address (not a load balancer's:
behind one, a request reaches one API server); the kubeconfig's credentials
are used for each and need get on /metrics. Without --apiservers only the
kubeconfig's server is checked, which is right for one API server only.

The key_id is computed from the key's metadata as the plugin computes it in
its default -key-id-mode=metadata. With plugins in -key-id-mode=hmac, wait
with kmsctl status and run kmsctl migrate --transit-version N instead.

If the wait times out, nothing has been migrated and nothing is lost: fix
the API servers named, then run rotate --observe-only. The migration's
flags (--engine: auto, svm or direct), progress and report are kmsctl
migrate's; the engine is chosen before the key is rotated.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return o.Run(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// AddFlags registers the options' flags.
func (o *rotateOptions) AddFlags(fs *pflag.FlagSet) {
	o.scanOptions.AddFlags(fs, nil)
	o.vaultOptions.AddFlags(fs)
	o.addRewriteFlags(fs)
	fs.BoolVar(&o.observeOnly, "observe-only", false, "do not rotate: migrate to the latest version, rotated elsewhere")
	fs.StringSliceVar(&o.apiservers, "apiservers", nil, "every API server's own https://host:port (default: the kubeconfig's server)")
	fs.StringVar(&o.keyIDMode, "key-id-mode", "metadata", "the plugins' -key-id-mode; only metadata can be awaited")
	fs.DurationVar(&o.waitTimeout, "wait-timeout", 5*time.Minute, "how long to wait for every API server to report the new key_id")
	fs.DurationVar(&o.poll, "poll-interval", 5*time.Second, "how often to read the API servers' metrics while waiting")
}

// Validate checks the flags. It reads no file.
func (o *rotateOptions) Validate() error {
	configGiven := o.configPath != ""
	if len(o.etcd.Endpoints) > 0 && !configGiven && !o.resourcesSet() {
		return errors.New("--resources or --config is required: name every resource the EncryptionConfiguration encrypts")
	}
	if err := o.scanOptions.Validate(configGiven); err != nil {
		return err
	}
	if err := o.vaultOptions.Validate(); err != nil {
		return err
	}
	if err := o.validateRewrite(); err != nil {
		return err
	}
	switch {
	case o.keyIDMode == "hmac":
		return errors.New("--key-id-mode=hmac: the operator cannot compute HMAC key_ids; wait until every API server reports the new key_id (kmsctl status), then run kmsctl migrate --transit-version N")
	case o.keyIDMode != "metadata":
		return fmt.Errorf("--key-id-mode must be metadata or hmac, not %q", o.keyIDMode)
	case o.waitTimeout <= 0 || o.poll <= 0:
		return errors.New("--wait-timeout and --poll-interval must be positive")
	}
	for _, u := range o.apiservers {
		if err := checkAPIServerURL(u); err != nil {
			return fmt.Errorf("--apiservers: %w", err)
		}
	}
	return nil
}

// Run rotates (unless observing), waits for every API server, migrates.
func (o *rotateOptions) Run(ctx context.Context, stdout, stderr io.Writer) error {
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	if o.resources, err = o.Resources(cfg, o.configPath); err != nil {
		return err
	}
	tc, err := o.transitConfig(cfg)
	if err != nil {
		return err
	}
	vault, err := transit.New(tc)
	if err != nil {
		return err
	}
	kube, err := loadKubeconfig(o.kubeconfig)
	if err != nil {
		return err
	}
	// Pick the migration engine now: an --engine=svm the API server cannot
	// serve is refused before the key is rotated, not after the wait.
	if err := o.resolveEngine(ctx, kube, stderr); err != nil {
		return err
	}
	urls := o.apiservers
	if len(urls) == 0 {
		urls = []string{kube.Host}
		fmt.Fprintf(stderr, "rotate: checking only the kubeconfig's API server %s; list every API server with --apiservers\n", kube.Host)
	}
	var sources []rotation.KeyIDSource
	for _, u := range urls {
		obs, err := apiserver.New(kube, u)
		if err != nil {
			return err
		}
		sources = append(sources, obs)
	}

	before, err := vault.ReadKey(ctx)
	if err != nil {
		return err
	}
	key := before
	if o.observeOnly {
		fmt.Fprintf(stderr, "rotate: observing %s at v%d (not rotating)\n", tc.KeyPath, key.Latest)
	} else {
		if err := vault.Rotate(ctx); err != nil {
			return err
		}
		if key, err = vault.ReadKey(ctx); err != nil {
			return fmt.Errorf("%w (the key was rotated: run rotate --observe-only to continue)", err)
		}
		if key.Latest <= before.Latest {
			return fmt.Errorf("rotated %s but it still reports latest_version %d", tc.KeyPath, key.Latest)
		}
		fmt.Fprintf(stderr, "rotate: rotated %s: v%d -> v%d\n", tc.KeyPath, before.Latest, key.Latest)
	}
	keyID, ok := vault.MetadataKeyID(key, key.Latest)
	if !ok {
		return fmt.Errorf("%s: Vault gave no creation time for v%d", tc.KeyPath, key.Latest)
	}
	fmt.Fprintf(stderr, "rotate: waiting for %d API server(s) to report key_id %s\n", len(sources), keyID)
	waitCtx, cancel := context.WithTimeout(ctx, o.waitTimeout)
	defer cancel()
	err = rotation.AwaitKeyID(waitCtx, sources, apiserver.KeyIDHash(keyID), o.poll, func(p rotation.AwaitProgress) {
		if len(p.Waiting) > 0 {
			fmt.Fprintf(stderr, "rotate: %s\n", p)
		}
	})
	if err != nil {
		return fmt.Errorf("nothing was migrated: %w; check the plugin and its Status on those nodes, then run kmsctl rotate --observe-only", err)
	}
	fmt.Fprintf(stderr, "rotate: every API server reports v%d; migrating\n", key.Latest)
	o.transitVersion = key.Latest
	return o.migrateOptions.Run(ctx, stdout, stderr)
}

// checkAPIServerURL accepts https://host[:port] with no path.
func checkAPIServerURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "https" || p.Host == "" || (p.Path != "" && p.Path != "/") {
		return fmt.Errorf("%q: want https://host[:port], an API server's own address", u)
	}
	return nil
}
