// Command kmsctl is the operator side of vault-kms-plugin: it builds and
// verifies the plugin image, renders what a control-plane node runs, rolls
// revisions across the nodes, and rotates keys. Commands only parse flags
// and call into lifecycle/.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "kmsctl: %v\n", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "kmsctl",
		Short:         "Operate the Vault KMSv2 plugin on control-plane nodes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newImageCmd(), newVerifyImageCmd(), newRenderCmd(), newStatusCmd(), newRetireCmd(), newMigrateCmd(), newRotateCmd(), newRolloutCmd())
	return root
}

// writeJSON is every command's -o json: indented, one document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
