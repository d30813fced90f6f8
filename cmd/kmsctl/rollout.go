package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/apiserver"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/config"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/image"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/nodefs"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/observe"
)

// rolloutOptions are the flags shared by `kmsctl rollout plan` and `apply`.
type rolloutOptions struct {
	nodesPath   string
	configPath  string
	kubeconfig  string
	stepTimeout time.Duration
}

func (o *rolloutOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.nodesPath, "nodes", "", "nodes.yaml: every control-plane node's files, API server and kmsctl's state directory (required)")
	fs.StringVar(&o.configPath, "config", "", "kms.yaml of the revision to roll out (required)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for the API servers (default: $KUBECONFIG, then ~/.kube/config)")
	fs.DurationVar(&o.stepTimeout, "step-timeout", rollout.DefaultStepTimeout, "how long a step may take to turn healthy before it is rolled back")
}

func (o *rolloutOptions) validate() error {
	switch {
	case o.nodesPath == "":
		return errors.New("--nodes is required: nodes.yaml lists the control-plane nodes")
	case o.configPath == "":
		return errors.New("--config is required: the kms.yaml to roll out")
	case o.stepTimeout <= 0:
		return errors.New("--step-timeout must be positive")
	}
	return nil
}

// cluster is what a rollout reads once: the nodes, the desired revision and
// the clients that observe them.
type cluster struct {
	nodes   *config.Nodes
	cfg     *config.Config
	desired lifecycle.Revision
	kube    dynamic.Interface
	apis    map[string]*apiserver.Observer
}

func (o *rolloutOptions) load() (*cluster, error) {
	nodes, err := config.LoadNodes(o.nodesPath)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(o.configPath)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", o.configPath, err)
	}
	rest, err := loadKubeconfig(o.kubeconfig)
	if err != nil {
		return nil, err
	}
	kube, err := dynamic.NewForConfig(rest)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	c := &cluster{nodes: nodes, cfg: cfg, desired: render.Revision(cfg), kube: kube, apis: map[string]*apiserver.Observer{}}
	for _, n := range nodes.Nodes {
		if c.apis[n.Name], err = apiserver.New(rest, n.APIServer); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// observe reads every node and the persisted progress.
func (c *cluster) observe(ctx context.Context, stepTimeout time.Duration) (rollout.Observed, error) {
	o := rollout.Observed{Desired: c.desired, Now: time.Now(), StepTimeout: stepTimeout}
	var err error
	if o.Progress, err = nodefs.LoadProgress(c.nodes.StateDir); err != nil {
		return o, err
	}
	for _, f := range c.nodes.Nodes {
		n, err := observe.Node(ctx, f, c.kube, c.apis[f.Name])
		if err != nil {
			return o, err
		}
		o.Nodes = append(o.Nodes, n)
	}
	return o, nil
}

func newRolloutCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Roll a plugin revision (new image, flags or key) across the control-plane nodes, step by step, with rollback",
		Long: `rollout moves every node listed in nodes.yaml to the revision kms.yaml
renders, one small step at a time, each gated on health: the plugin's socket
answers Status and an Encrypt/Decrypt round trip, its Ready mirror pod runs the
revision, and the node's API server passes kms-providers with the
EncryptionConfiguration on disk loaded. A new key gets a new provider that is
added read-only on every node before it is promoted to write on any.

plan prints the steps and changes nothing. apply verifies the image's
signature, then applies the steps, rolling a node back to its last-known-good
files when a step does not turn healthy within --step-timeout; killed at any
point, it resumes (or rolls back) when run again.`,
	}
	cmd.AddCommand(newRolloutPlanCmd(), newRolloutApplyCmd())
	return cmd
}

func newRolloutPlanCmd() *cobra.Command {
	o := &rolloutOptions{}
	var output string
	cmd := &cobra.Command{
		Use:   "plan --nodes nodes.yaml --config kms.yaml",
		Short: "Print the steps a rollout would take from the cluster as it is now; change nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			if output != "table" && output != "json" {
				return fmt.Errorf("-o must be table or json, not %q", output)
			}
			c, err := o.load()
			if err != nil {
				return err
			}
			obs, err := c.observe(cmd.Context(), o.stepTimeout)
			if err != nil {
				return err
			}
			steps := rollout.Plan(obs, 500)
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), steps)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rolling out %s to %d node(s):\n", c.desired, len(obs.Nodes))
			for i, s := range steps {
				fmt.Fprintf(cmd.OutOrStdout(), "%3d. %s\n", i+1, s)
			}
			return nil
		},
	}
	o.addFlags(cmd.Flags())
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newRolloutApplyCmd() *cobra.Command {
	o := &rolloutOptions{}
	v := &verifyImageOptions{}
	var poll, timeout time.Duration
	cmd := &cobra.Command{
		Use:   "apply --nodes nodes.yaml --config kms.yaml --key cosign.pub",
		Short: "Verify the image, then roll the revision across the nodes, each step gated on health, with rollback",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			if err := v.validate(); err != nil {
				return err
			}
			if poll <= 0 || timeout <= 0 {
				return errors.New("--poll-interval and --apply-timeout must be positive")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return o.apply(ctx, v, poll, cmd.OutOrStdout())
		},
	}
	o.addFlags(cmd.Flags())
	v.addFlags(cmd)
	cmd.Flags().DurationVar(&poll, "poll-interval", 2*time.Second, "how often to observe the nodes while a step turns healthy")
	cmd.Flags().DurationVar(&timeout, "apply-timeout", time.Hour, "stop after this long (leaving healthy steps as they are); run apply again to continue")
	return cmd
}

// apply drives the planner until it is done or refuses, following the
// driver contract of package rollout: one step between two observations,
// progress persisted before a file changes.
func (o *rolloutOptions) apply(ctx context.Context, v *verifyImageOptions, poll time.Duration, out io.Writer) error {
	c, err := o.load()
	if err != nil {
		return err
	}
	// Only an image verify-image accepts is ever written into a manifest.
	verifier, err := image.NewVerifier(v.Options)
	if err != nil {
		return err
	}
	vctx, cancel := context.WithTimeout(ctx, v.timeout)
	verified, err := verifier.Verify(vctx, c.cfg.Vault.KMSPluginImage)
	cancel()
	if err != nil {
		return fmt.Errorf("%s: vault.kmsPluginImage refused, nothing changed: %w", o.configPath, err)
	}
	if verified.Ref != c.cfg.Vault.KMSPluginImage {
		return fmt.Errorf("%s: vault.kmsPluginImage is %s but verify-image pins %s: put the pinned reference in kms.yaml", o.configPath, c.cfg.Vault.KMSPluginImage, verified.Ref)
	}
	pod, err := render.StaticPod(c.cfg)
	if err != nil {
		return err
	}
	rendered := nodefs.Rendered{Pod: pod, Provider: render.KMSProvider(c.cfg)}
	store, err := nodefs.Open(c.nodes.StateDir)
	if err != nil {
		return err
	}
	defer store.Close()
	files := map[string]nodefs.NodeFiles{}
	for _, n := range c.nodes.Nodes {
		files[n.Name] = nodefs.NodeFiles{Name: n.Name, ManifestDir: n.ManifestDir, EncryptionConfigPath: n.EncryptionConfig}
	}

	start := time.Now()
	var lastWait string
	var lastPrinted time.Time
	for {
		obs, err := c.observe(ctx, o.stepTimeout)
		if err != nil {
			return err
		}
		s := rollout.Next(obs)
		line := fmt.Sprintf("[%6.1fs] %s", time.Since(start).Seconds(), s)
		switch s.Action {
		case rollout.Done:
			fmt.Fprintln(out, line)
			return nil
		case rollout.Refuse:
			fmt.Fprintln(out, line)
			return fmt.Errorf("rollout refused: %s", s.Reason)
		case rollout.Wait:
			// One line per distinct wait, and one every 15s while it lasts
			// (the reason ends with the time spent, which always changes).
			reason := s.Reason
			if i := strings.LastIndex(reason, " ("); i > 0 {
				reason = reason[:i]
			}
			if reason != lastWait || time.Since(lastPrinted) >= 15*time.Second {
				fmt.Fprintln(out, line)
				lastWait, lastPrinted = reason, time.Now()
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w while waiting: %s (run apply again to continue)", ctx.Err(), s.Reason)
			case <-time.After(poll):
			}
			continue
		}
		lastWait = ""
		fmt.Fprintln(out, line)
		p := obs.Progress
		if s.Action == rollout.Confirm {
			if err := store.Apply(files[s.Node], s, rendered); err != nil {
				return err
			}
			p.LastKnownGood[s.Node], p.InFlight = s.Config, nil
			if err := store.SaveProgress(p); err != nil {
				return err
			}
			continue
		}
		step := s
		p.InFlight, p.StartedAt = &step, obs.Now
		if s.Action == rollout.RollBack {
			p.Failed = &rollout.Failure{Revision: c.desired, Node: s.Node, Reason: s.Reason}
		}
		if err := store.SaveProgress(p); err != nil {
			return err
		}
		if err := store.Apply(files[s.Node], s, rendered); err != nil {
			return err
		}
	}
}
