package main

import (
	"bytes"

	"github.com/spf13/cobra"
)

// execute runs cmd with args as the root command would: its error returned,
// not printed, no usage on error. It returns what cmd wrote on stdout and
// stderr together.
func execute(cmd *cobra.Command, args ...string) (string, error) {
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}
