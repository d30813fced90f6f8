package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/imagebuild"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build the plugin image",
	}
	cmd.AddCommand(newImageBuildCmd())
	return cmd
}

func newImageBuildCmd() *cobra.Command {
	o := &imageBuildOptions{}
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the plugin's OCI image index from static binaries, reproducibly",
		Long: `Build the plugin's OCI image index, one image per --binary, without a
container engine. Every timestamp is --created (use the commit time), so two
builds of one commit give one digest. Writes an OCI layout to --layout and
prints the index digest; with --push REPO it also pushes the index by digest
and prints REPO@sha256:<digest> as the last line.`,
		Example: `  kmsctl image build \
    --binary linux/amd64=.build/image/vault-kms-plugin-linux-amd64 \
    --binary linux/arm64=.build/image/vault-kms-plugin-linux-arm64 \
    --source https://github.com/vaultkms/vault-kms-plugin \
    --revision "$(git rev-parse HEAD)" --version "$(git describe --tags --always --dirty)" \
    --created "$(git log -1 --format=%cI)" --layout .build/image/oci`,
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

// imageBuildOptions are the flags of `kmsctl image build`; Validate fills
// in the parsed fields below them.
type imageBuildOptions struct {
	binaries        []string
	source          string
	revision        string
	version         string
	created         string
	sourceDateEpoch string
	layout          string
	push            string
	insecure        bool

	platforms   []v1.Platform // parallel to paths
	paths       []string
	createdTime time.Time
}

// AddFlags registers the command's flags.
func (o *imageBuildOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&o.binaries, "binary", nil, "OS/ARCH=PATH of a static plugin binary; repeat per platform")
	fs.StringVar(&o.source, "source", "", "repository URL for the org.opencontainers.image.source label")
	fs.StringVar(&o.revision, "revision", "", "full commit id the binaries were built from (git rev-parse HEAD)")
	fs.StringVar(&o.version, "version", "", "version label (git describe --tags --always --dirty)")
	fs.StringVar(&o.created, "created", "", "image creation time, RFC 3339; use the commit time (git log -1 --format=%cI)")
	fs.StringVar(&o.sourceDateEpoch, "source-date-epoch", "", "image creation time in Unix seconds, instead of --created (SOURCE_DATE_EPOCH)")
	fs.StringVar(&o.layout, "layout", "", "directory to write the OCI image layout to (replaced)")
	fs.StringVar(&o.push, "push", "", "repository to push the index to by digest, such as registry.example.com/vault-kms-plugin")
	fs.BoolVar(&o.insecure, "allow-insecure-registry", false, "talk plain http to the --push registry")
}

// Validate checks the flags and parses them; its errors name the flag.
func (o *imageBuildOptions) Validate() error {
	if len(o.binaries) == 0 {
		return errors.New("--binary is required (OS/ARCH=PATH, once per platform)")
	}
	o.platforms, o.paths = nil, nil
	seen := map[string]bool{}
	for _, b := range o.binaries {
		plat, path, ok := strings.Cut(b, "=")
		if !ok || plat == "" || path == "" {
			return fmt.Errorf("--binary %q: want OS/ARCH=PATH", b)
		}
		p, err := v1.ParsePlatform(plat)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("--binary %q: platform %q is not OS/ARCH", b, plat)
		}
		if seen[p.String()] {
			return fmt.Errorf("--binary: platform %s given twice", p)
		}
		seen[p.String()] = true
		o.platforms = append(o.platforms, *p)
		o.paths = append(o.paths, path)
	}

	if u, err := url.Parse(o.source); o.source == "" || err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("--source %q: want the repository's URL, such as https://github.com/vaultkms/vault-kms-plugin", o.source)
	}
	if _, err := hex.DecodeString(o.revision); err != nil || (len(o.revision) != 40 && len(o.revision) != 64) {
		return fmt.Errorf("--revision %q: want a full commit id, 40 or 64 hex digits (git rev-parse HEAD)", o.revision)
	}
	if o.version == "" || strings.ContainsFunc(o.version, func(r rune) bool { return r <= ' ' }) {
		return fmt.Errorf("--version %q: want a version without spaces, such as git describe prints", o.version)
	}

	switch {
	case o.created != "" && o.sourceDateEpoch != "":
		return errors.New("--created and --source-date-epoch both set; give one")
	case o.created != "":
		t, err := time.Parse(time.RFC3339, o.created)
		if err != nil {
			return fmt.Errorf("--created %q: want RFC 3339, such as git log -1 --format=%%cI prints", o.created)
		}
		o.createdTime = t
	case o.sourceDateEpoch != "":
		secs, err := strconv.ParseInt(o.sourceDateEpoch, 10, 64)
		if err != nil || secs <= 0 {
			return fmt.Errorf("--source-date-epoch %q: want positive Unix seconds", o.sourceDateEpoch)
		}
		o.createdTime = time.Unix(secs, 0)
	default:
		// No default: the current time would make every build a new digest.
		return errors.New("--created or --source-date-epoch is required (the commit time, so builds are reproducible)")
	}

	if o.layout == "" {
		return errors.New("--layout is required (the directory for the OCI layout)")
	}
	if o.push != "" {
		if _, err := imagebuild.ParseRepository(o.push, o.insecure); err != nil {
			return fmt.Errorf("--push %q: %w", o.push, err)
		}
	} else if o.insecure {
		return errors.New("--allow-insecure-registry applies only with --push")
	}
	return nil
}

// Run builds the index, writes the layout and, with --push, pushes. stdout
// gets the index digest, then REPO@digest after a push, and nothing else,
// so scripts can take the last line; progress goes to stderr.
func (o *imageBuildOptions) Run(ctx context.Context, stdout, stderr io.Writer) error {
	spec := imagebuild.Spec{
		Source:   o.source,
		Revision: o.revision,
		Version:  o.version,
		Created:  o.createdTime,
	}
	for i, p := range o.platforms {
		content, err := os.ReadFile(o.paths[i])
		if err != nil {
			return fmt.Errorf("--binary %s: %w", p, err)
		}
		// Refuse here what would fail only on the node.
		if err := imagebuild.CheckBinary(p, content); err != nil {
			return fmt.Errorf("--binary %s: %w", o.paths[i], err)
		}
		spec.Binaries = append(spec.Binaries, imagebuild.Binary{Platform: p, Plugin: content})
	}
	idx, err := imagebuild.Build(spec)
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	digest, err := idx.Digest()
	if err != nil {
		return fmt.Errorf("index digest: %w", err)
	}
	if err := imagebuild.WriteLayout(o.layout, idx, o.version); err != nil {
		return fmt.Errorf("--layout: %w", err)
	}
	fmt.Fprintf(stderr, "wrote OCI layout %s (%s)\n", o.layout, platformList(o.platforms))
	fmt.Fprintln(stdout, digest)
	if o.push == "" {
		return nil
	}

	repo, err := imagebuild.ParseRepository(o.push, o.insecure)
	if err != nil {
		return fmt.Errorf("--push %q: %w", o.push, err)
	}
	fmt.Fprintf(stderr, "pushing to %s\n", o.push)
	if _, err := imagebuild.Push(ctx, repo, idx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s@%s\n", o.push, digest)
	return nil
}

func platformList(ps []v1.Platform) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.String()
	}
	return strings.Join(names, ", ")
}
