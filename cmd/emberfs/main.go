// Command emberfs is the single EmberFS binary: every server role, the
// admin tools, the mount and the benchmarks are subcommands.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/internal/buildinfo"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		// Errors already printed (one line per failed argument) are not
		// printed again.
		if !errors.As(err, new(errAlreadyReported)) {
			fmt.Fprintln(os.Stderr, "emberfs:", err)
		}
		os.Exit(1)
	}
}

// subcommands is filled by the init functions of the files that define
// each role, so adding a role never touches this file.
var subcommands []func() *cobra.Command

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "emberfs",
		Short:         "EmberFS: a 3FS-style distributed file system for AI training and inference",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Version,
	}
	root.SetVersionTemplate("emberfs {{.Version}}\n")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the EmberFS version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "emberfs %s\n", buildinfo.Version)
		},
	})
	for _, mk := range subcommands {
		root.AddCommand(mk())
	}
	return root
}
