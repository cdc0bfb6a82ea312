package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/service/meta/metabench"
)

// newBenchMetaCmd is `emberfs bench meta` (the bench parent command adds it).
func init() { benchSubcommands = append(benchSubcommands, newBenchMetaCmd) }

func newBenchMetaCmd() *cobra.Command {
	var (
		duration   time.Duration
		clients    string
		modes      string
		dirEntries int
		kvSpec     string
		quiet      bool
	)
	cmd := &cobra.Command{
		Use:   "meta",
		Short: "Metadata ops/s (create, stat, readdir, rename, unlink) in-process and over gRPC",
		Long: `Starts a meta server in this process over a KV (in-memory Badger by default)
and a loopback gRPC server in front of it, then measures, for each number of
concurrent clients: exclusive creates in one directory, stats of those files,
full listings of a directory of --dir-entries files (pages of 1024), renames
of the created files to another directory and unlinks of the renamed files.
Each measurement runs for --duration (rename and unlink stop earlier when
they run out of files). Prints a Markdown table of ops/s.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := metabench.Options{Duration: duration, DirEntries: dirEntries, KV: kvSpec}
			var err error
			if o.Clients, err = parseInts(clients); err != nil {
				return fmt.Errorf("--clients: %w", err)
			}
			for _, m := range strings.Split(modes, ",") {
				o.Modes = append(o.Modes, strings.TrimSpace(m))
			}
			if !quiet {
				o.Progress = cmd.ErrOrStderr()
			}
			res, err := metabench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			return metabench.WriteTable(cmd.OutOrStdout(), res, dirEntries)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&duration, "duration", time.Second, "how long each measurement runs")
	f.StringVar(&clients, "clients", "1,16,64", "numbers of concurrent clients, comma separated")
	f.StringVar(&modes, "modes", "inproc,grpc", "inproc (calls into the server) and/or grpc (loopback)")
	f.IntVar(&dirEntries, "dir-entries", 10_000, "entries in the directory readdir lists")
	f.StringVar(&kvSpec, "kv", "memory", `KV engine: "memory" or "badger:/dir"`)
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	return cmd
}
