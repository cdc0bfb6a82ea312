package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/service/kv/kvopen"
	"github.com/emberfs/emberfs/service/meta"
)

// newAdminFsckCmd is `emberfs admin fsck`: it opens the namespace KV
// directly (fsck only reads) and checks every invariant on one snapshot.
func newAdminFsckCmd() *cobra.Command {
	var kvSpec string
	var maxProblems int
	cmd := &cobra.Command{
		Use:   "fsck",
		Short: "Check the namespace invariants in the meta KV (exit status 1 on problems)",
		Long: `Opens the meta servers' KV (--kv) and checks on one snapshot: every entry
points at an inode of the recorded type; every directory has exactly one
entry, in the directory its inode names as parent; parent chains reach the
root (no cycles); link counts match entries; no orphan inodes (except files
unlinked while open for writing); sessions and xattrs of existing inodes.
Fsck writes nothing. A badger: directory can be open in one process only, so
stop the meta server that uses it first; FoundationDB (fdb:) can be checked
while servers run. Chunks without files are not checked yet (that needs the
storage side's listing).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kvSpec == "" {
				return errors.New("fsck: --kv is required (the meta KV: badger:/dir or fdb:/cluster-file)")
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			eng, err := kvopen.OpenWith(kvSpec, kvopen.Options{Logger: log})
			if err != nil {
				return fmt.Errorf("fsck: open KV %q: %w", kvSpec, err)
			}
			defer eng.Close()
			rep, err := meta.FsckEngine(cmd.Context(), eng, meta.FsckOptions{MaxProblems: maxProblems})
			if err != nil {
				return fmt.Errorf("fsck: %w", err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "fsck %s: %d inodes, %d entries, %d write sessions, %d xattrs, %d queued removals\n",
				kvSpec, rep.Inodes, rep.Dentries, rep.Sessions, rep.Xattrs, rep.QueuedRemovals)
			for _, p := range rep.Problems {
				fmt.Fprintf(w, "problem: %s\n", p)
			}
			if rep.Truncated {
				fmt.Fprintf(w, "(more problems not listed; raise --max-problems)\n")
			}
			if !rep.Clean() {
				return fmt.Errorf("fsck: %d problem(s) found", len(rep.Problems))
			}
			fmt.Fprintln(w, "clean")
			return nil
		},
	}
	cmd.Flags().StringVar(&kvSpec, "kv", "", `the meta KV: "badger:/dir" or "fdb:/cluster-file"`)
	cmd.Flags().IntVar(&maxProblems, "max-problems", 1000, "list at most this many problems")
	return cmd
}
