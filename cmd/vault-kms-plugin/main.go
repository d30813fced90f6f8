// Command vault-kms-plugin is a Kubernetes KMSv2 plugin backed by a Vault
// transit key. It runs as a sidecar beside kube-apiserver.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/vaultkms/vault-kms-plugin/plugin/server"

	// The image has no OS trust store (an empty base): without -tls-ca-file
	// Vault's certificate is verified against Mozilla's roots built into the
	// binary. Used only where the system has no roots of its own.
	_ "golang.org/x/crypto/x509roots/fallback"
)

func main() {
	// The plugin is I/O-bound (well under one core at 10k decrypts/s). On
	// one P, gRPC's goroutine handoffs stay on one thread instead of waking
	// another, which halves Status latency, and the sidecar stays out of
	// the API server's way. The GOMAXPROCS environment variable overrides.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

// secretFlags are flags other plugins take that would put a secret in argv,
// with the flag to use instead.
var secretFlags = map[string]string{
	"approle-secret-id": "-approle-secret-id-path",
	"secret-id":         "-approle-secret-id-path",
	"vault-token":       "-vault-token-path",
	"token":             "-vault-token-path",
}

// run returns the exit code: 0 after a clean stop, 1 when serving fails,
// 2 for bad flags (one line on stderr).
func run(args []string, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("vault-kms-plugin", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
			return 0
		}
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			if instead, secret := secretFlags[strings.TrimPrefix(name, "-")]; secret {
				err = fmt.Errorf("%v: secrets are never taken as flags (argv is visible to every user); write it to a file and pass %s", err, instead)
			}
		}
		fmt.Fprintf(stderr, "vault-kms-plugin: %v (see -help)\n", err)
		return 2
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if err := o.validate(fs.Args()); err != nil {
		fmt.Fprintf(stderr, "vault-kms-plugin: %v\n", err)
		return 2
	}
	if o.preparing() {
		if err := server.PrepareSocketDir(o.prepareSocketDir, o.prepareUID, o.prepareGID); err != nil {
			fmt.Fprintf(stderr, "vault-kms-plugin: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "vault-kms-plugin: socket directory %s ready for %s\n", o.prepareSocketDir, o.prepareSocketDirOwner)
		return 0
	}
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	_ = klogFlags.Set("v", strconv.Itoa(o.verbosity))
	defer klog.Flush()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, &o); err != nil {
		klog.ErrorS(err, "Stopped")
		return 1
	}
	return 0
}
