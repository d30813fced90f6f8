package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
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
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/clusterstate"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/nodefs"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout/observe"
)

// rolloutOptions are the flags shared by `kmsctl rollout plan`, `apply`
// and `node`.
type rolloutOptions struct {
	nodesPath   string
	configPath  string
	kubeconfig  string
	stepTimeout time.Duration
	// retire is --retire-provider; etcd is where its scan reads.
	retire string
	etcd   scanOptions
}

func (o *rolloutOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.nodesPath, "nodes", "", "nodes.yaml: every control-plane node's files, API server and kmsctl's state directory (required)")
	fs.StringVar(&o.configPath, "config", "", "kms.yaml of the revision to roll out (required)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for the API servers (default: $KUBECONFIG, then ~/.kube/config)")
	fs.DurationVar(&o.stepTimeout, "step-timeout", rollout.DefaultStepTimeout, "how long a step may take to turn healthy before it is rolled back")
	fs.StringVar(&o.retire, "retire-provider", "", "once every node writes with kms.yaml's provider, remove this old KMS provider from every EncryptionConfiguration, then its static pods; refused unless an etcd scan (--etcd-endpoints) finds nothing stored under it")
	o.etcd.addEtcdFlags(fs, "(with --retire-provider: its scan reads the resources kms.yaml encrypts)")
}

func (o *rolloutOptions) validate() error {
	switch {
	case o.nodesPath == "":
		return errors.New("--nodes is required: nodes.yaml lists the control-plane nodes")
	case o.configPath == "":
		return errors.New("--config is required: the kms.yaml to roll out")
	case o.stepTimeout <= 0:
		return errors.New("--step-timeout must be positive")
	case o.retire == "" && len(o.etcd.etcd.Endpoints) > 0:
		return errors.New("--etcd-endpoints is for --retire-provider's scan: name the provider to retire, or drop the etcd flags")
	case o.retire != "" && len(o.etcd.etcd.Endpoints) == 0:
		return errors.New("--retire-provider needs --etcd-endpoints: retiring is refused until an etcd scan finds nothing stored under the provider")
	case o.retire != "":
		// The resources come from kms.yaml (--config).
		return o.etcd.Validate(true)
	}
	return nil
}

// cluster is what a rollout reads once: the nodes, the desired revision and
// the clients that observe them and keep the shared state.
type cluster struct {
	nodes   *config.Nodes
	cfg     *config.Config
	desired lifecycle.Revision
	kube    dynamic.Interface
	apis    map[string]*apiserver.Observer
	state   *clusterstate.Store
}

// load reads nodes.yaml, kms.yaml and the kubeconfig. only, when set, is
// the node of `rollout node`, which nodes.yaml must list.
func (o *rolloutOptions) load(only string) (*cluster, error) {
	nodes, err := config.LoadNodes(o.nodesPath)
	if err != nil {
		return nil, err
	}
	if only != "" && !slices.ContainsFunc(nodes.Nodes, func(n config.NodeFiles) bool { return n.Name == only }) {
		names := make([]string, len(nodes.Nodes))
		for i, n := range nodes.Nodes {
			names[i] = n.Name
		}
		return nil, fmt.Errorf("--node %s is not in %s, which lists %s: name this node as nodes.yaml does", only, o.nodesPath, strings.Join(names, ", "))
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
	c := &cluster{nodes: nodes, cfg: cfg, desired: render.Revision(cfg), kube: kube, apis: map[string]*apiserver.Observer{}, state: clusterstate.New(kube)}
	for _, n := range nodes.Nodes {
		if c.apis[n.Name], err = apiserver.New(rest, n.APIServer); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// observer gathers what the planner decides from: the shared state, then
// the nodes whose files this kmsctl reaches (observed in full, and
// published so that a kmsctl on another node sees them), then the others
// from afar, from what their own kmsctl published. Publishing comes before
// any decision, so a node's first `rollout node` makes it known.
type observer struct {
	c           *cluster
	local       map[string]bool
	publish     bool // plan changes nothing, the ConfigMap included
	stepTimeout time.Duration
	// retire is --retire-provider, scanned through etcd; empty is the scan's
	// verdict once it found nothing under retire.
	retire     string
	etcd       *scanOptions
	configPath string
	empty      bool
}

// newObserver is the observer of the nodes in local; publish says whether
// it may write the shared state.
func (o *rolloutOptions) newObserver(c *cluster, local map[string]bool, publish bool) *observer {
	return &observer{c: c, local: local, publish: publish, stepTimeout: o.stepTimeout, retire: o.retire, etcd: &o.etcd, configPath: o.configPath}
}

func (ob *observer) observe(ctx context.Context) (rollout.Observed, clusterstate.State, error) {
	c := ob.c
	o := rollout.Observed{Desired: c.desired, StepTimeout: ob.stepTimeout}
	st, err := c.state.Load(ctx)
	if err != nil {
		return o, st, err
	}
	if st.ResourceVersion == "" {
		legacy, err := nodefs.LoadProgress(c.nodes.StateDir)
		if err != nil {
			return o, st, err
		}
		if err := legacyInFlight(legacy, c.nodes.StateDir); err != nil {
			return o, st, err
		}
	}
	o.Now = time.Now()
	o.Nodes = make([]lifecycle.Node, len(c.nodes.Nodes))
	changed := false
	for i, f := range c.nodes.Nodes {
		if !ob.local[f.Name] {
			continue
		}
		if o.Nodes[i], err = observe.Node(ctx, f, c.kube, c.apis[f.Name]); err != nil {
			return o, st, err
		}
		changed = st.Publish(o.Nodes[i], o.Now) || changed
	}
	if changed && ob.publish {
		if st, err = c.state.Save(ctx, st); err != nil {
			return o, st, err
		}
	}
	if err := unpublished(c.nodes.Nodes, ob.local, st.Nodes); err != nil {
		return o, st, err
	}
	for i, f := range c.nodes.Nodes {
		if !ob.local[f.Name] {
			o.Nodes[i] = observe.Remote(ctx, f.Name, st.Nodes[f.Name], c.kube, c.apis[f.Name])
		}
	}
	o.Progress = st.Progress
	if ob.retire != "" {
		o.Retire = ob.retire
		if err := ob.scanRetired(ctx, o.Nodes); err != nil {
			return o, st, err
		}
		o.OldProviderEmpty = ob.empty
	}
	return o, st, nil
}

// scanRetired scans etcd for objects stored under the provider to retire,
// but only once no API server can write with it: no node's file makes it
// the write provider and every API server was just observed running the
// file on its disk. A scan taken then stays true, since nothing writes
// under the provider any more, so one that found nothing is not repeated.
// Before then the planner waits or refuses without the scan's verdict.
func (ob *observer) scanRetired(ctx context.Context, nodes []lifecycle.Node) error {
	if ob.empty || !rollout.NothingWritesWith(nodes, ob.retire) {
		return nil
	}
	resources, err := ob.etcd.Resources(ob.c.cfg, ob.configPath)
	if err != nil {
		return err
	}
	rep, err := ob.etcd.Scan(ctx, resources, 0)
	if err != nil {
		return fmt.Errorf("--retire-provider %s: etcd scan: %w", ob.retire, err)
	}
	under := 0
	for _, r := range rep.Resources {
		for _, g := range r.Groups {
			if g.Provider == ob.retire {
				under += g.Count
			}
		}
	}
	ob.empty = under == 0
	return nil
}

// unpublished refuses to decide while a node whose files this kmsctl does
// not reach has never been published: the planner would decide without
// knowing that node's files.
func unpublished(nodes []config.NodeFiles, local map[string]bool, published map[string]clusterstate.NodeState) error {
	for _, f := range nodes {
		if _, ok := published[f.Name]; !ok && !local[f.Name] {
			return fmt.Errorf("rollout refused: node %s has not been observed by kmsctl yet: run `kmsctl rollout node --node %s` there first", f.Name, f.Name)
		}
	}
	return nil
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
point, it resumes (or rolls back) when run again. node does what apply does for
the one node it runs on. The rollout's progress, and what kmsctl last observed
of each node's files, are kept in the kube-system/kmsctl-rollout ConfigMap, so
apply and node can be mixed.

An old provider stays listed for reading after a new one takes over. Once
every node writes with the new one, --retire-provider OLD (with
--etcd-endpoints) removes OLD from every EncryptionConfiguration, then its
static pods: it waits until every API server runs the file on its disk,
scans etcd for objects stored under OLD (the resources kms.yaml encrypts),
and refuses while there are any; kmsctl migrate --from-provider OLD rewrites
them.`,
	}
	cmd.AddCommand(newRolloutPlanCmd(), newRolloutApplyCmd(), newRolloutNodeCmd())
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
			c, err := o.load("")
			if err != nil {
				return err
			}
			all := map[string]bool{}
			for _, n := range c.nodes.Nodes {
				all[n.Name] = true
			}
			ob := o.newObserver(c, all, false)
			obs, _, err := ob.observe(cmd.Context())
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

// driveOptions are the flags of the commands that change nodes: apply,
// and node.
type driveOptions struct {
	rolloutOptions
	verify  verifyImageOptions
	poll    time.Duration
	timeout time.Duration
	// node is `rollout node`'s --node.
	node string
}

func (o *driveOptions) addFlags(cmd *cobra.Command) {
	o.rolloutOptions.addFlags(cmd.Flags())
	o.verify.addFlags(cmd)
	cmd.Flags().DurationVar(&o.poll, "poll-interval", 2*time.Second, "how often to observe the nodes while a step turns healthy")
	cmd.Flags().DurationVar(&o.timeout, "apply-timeout", time.Hour, "stop after this long (leaving healthy steps as they are); run the same command again to continue")
}

func (o *driveOptions) validate() error {
	if err := o.rolloutOptions.validate(); err != nil {
		return err
	}
	if err := o.verify.validate(); err != nil {
		return err
	}
	if o.poll <= 0 || o.timeout <= 0 {
		return errors.New("--poll-interval and --apply-timeout must be positive")
	}
	return nil
}

// runE is the commands' RunE: validate, then drive under the signal and
// --apply-timeout contexts.
func (o *driveOptions) runE(validate func() error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if err := validate(); err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		ctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		return o.drive(ctx, cmd.OutOrStdout())
	}
}

func newRolloutApplyCmd() *cobra.Command {
	o := &driveOptions{}
	cmd := &cobra.Command{
		Use:   "apply --nodes nodes.yaml --config kms.yaml --key cosign.pub",
		Short: "Verify the image, then roll the revision across the nodes, each step gated on health, with rollback",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = o.runE(o.validate)
	o.addFlags(cmd)
	return cmd
}

func newRolloutNodeCmd() *cobra.Command {
	o := &driveOptions{}
	cmd := &cobra.Command{
		Use:   "node --node NAME --nodes nodes.yaml --config kms.yaml --key cosign.pub",
		Short: "On one node: verify the image, then run the rollout's steps for this node only, refusing any the cluster is not ready for",
		Long: `node runs on the node it names and changes that node's files only, as
kubeadm upgrade node does, so that an admin or an Ansible loop can go node by
node. nodes.yaml lists every node (their API servers; the files of this node
only need be reachable) and this node's state directory. The same planner as
apply decides, from this node observed in full and the other nodes as their
own kmsctl last published them in the kube-system/kmsctl-rollout ConfigMap,
with their mirror pods and API servers observed from here.

It applies this node's next steps until the node has nothing left to do (exit
0, printing what the cluster still needs), or the cluster is not ready for
this node's next step (exit 0 once this run has moved the node; otherwise
non-zero with the reason, nothing changed), or a step does not turn healthy
within --step-timeout (rolled back, non-zero). Killed at any point, the same
command resumes or rolls back.`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = o.runE(func() error {
		if o.node == "" {
			return errors.New("--node is required: the name, in nodes.yaml, of the node this kmsctl runs on")
		}
		return o.validate()
	})
	o.addFlags(cmd)
	cmd.Flags().StringVar(&o.node, "node", "", "the node this kmsctl runs on, as nodes.yaml names it (required)")
	return cmd
}

// drive verifies the image, then runs the driver over the nodes this
// command changes: every node (apply) or o.node (node).
func (o *driveOptions) drive(ctx context.Context, out io.Writer) error {
	c, err := o.load(o.node)
	if err != nil {
		return err
	}
	// Only an image verify-image accepts is ever written into a manifest.
	verifier, err := image.NewVerifier(o.verify.Options)
	if err != nil {
		return err
	}
	vctx, cancel := context.WithTimeout(ctx, o.verify.timeout)
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
	// The lock guards this machine's files (and last-known-good copies)
	// against a second kmsctl here; the ConfigMap's resourceVersion guards
	// the shared progress against kmsctl on other nodes.
	store, err := nodefs.Open(c.nodes.StateDir)
	if err != nil {
		return err
	}
	defer store.Close()
	local := map[string]nodefs.NodeFiles{}
	reach := map[string]bool{}
	for _, n := range c.nodes.Nodes {
		if o.node == "" || n.Name == o.node {
			f := nodefs.NodeFiles{Name: n.Name, ManifestDir: n.ManifestDir, EncryptionConfigPath: n.EncryptionConfig}
			if err := nodefs.CheckMetricsPort(f, c.desired.Provider, c.cfg.Node.MetricsPort); err != nil {
				return fmt.Errorf("%s: node.metricsPort refused, nothing changed: %w", o.configPath, err)
			}
			local[n.Name] = f
			reach[n.Name] = true
		}
	}
	ob := o.newObserver(c, reach, true)
	d := &driver{
		only:     o.node,
		observe:  ob.observe,
		save:     c.state.Save,
		files:    store,
		local:    local,
		stateDir: c.nodes.StateDir,
		rendered: nodefs.Rendered{Pod: pod, Provider: render.KMSProvider(c.cfg)},
		poll:     o.poll,
		out:      out,
	}
	return d.run(ctx)
}
