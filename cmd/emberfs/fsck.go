package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/kvopen"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/storage/inventory"
)

// newAdminFsckCmd is `emberfs admin fsck`: it opens the namespace KV
// directly (fsck only reads) and checks every invariant on one snapshot;
// with mgmtd (the admin command's --mgmtd and --token) it also lists the
// chunks on every storage target and reports chunks without files.
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
stop the meta server that uses it first; FoundationDB (fdb:) and etcd (etcd:) can be checked
while servers run.

With --mgmtd (and --token), every storage target's chunk metadata is listed
too and inodes that have chunks but no file are reported as
"chunks without files: inode N on targets ...". Candidates are re-read in the
KV and listed again before they are reported, so files created or removed
while fsck runs are not reported. A target that cannot be listed (node down)
is reported as a problem: its chunks were not checked.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kvSpec == "" {
				return errors.New("fsck: --kv is required (the meta KV: badger:/dir, fdb:/cluster-file or etcd:host:port,...)")
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			eng, err := kvopen.OpenWith(kvSpec, kvopen.Options{Logger: log})
			if err != nil {
				return fmt.Errorf("fsck: open KV %q: %w", kvSpec, err)
			}
			defer eng.Close()
			opts := meta.FsckOptions{MaxProblems: maxProblems}
			mgmtdAddrs, _ := cmd.Flags().GetString("mgmtd")
			var checker *inventory.Checker
			if mgmtdAddrs != "" {
				token, _ := cmd.Flags().GetString("token")
				timeout, _ := cmd.Flags().GetDuration("timeout")
				cache, closeCache, err := fsckRouting(cmd.Context(), mgmtdAddrs, token, timeout)
				if err != nil {
					return err
				}
				defer closeCache()
				checker = &inventory.Checker{Cache: cache, Token: token, Exists: namespaceHas(eng)}
				opts.OrphanChunks = checker.OrphanChunks
			}
			rep, err := meta.FsckEngine(cmd.Context(), eng, opts)
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
			problems := len(rep.Problems)
			if checker != nil {
				problems += printStorageCheck(w, checker.Last())
			}
			if problems > 0 || !rep.Clean() {
				return fmt.Errorf("fsck: %d problem(s) found", max(problems, 1))
			}
			fmt.Fprintln(w, "clean")
			return nil
		},
	}
	cmd.Flags().StringVar(&kvSpec, "kv", "", `the meta KV: "badger:/dir", "fdb:/cluster-file" or "etcd:host:port,...[/prefix]"`)
	cmd.Flags().IntVar(&maxProblems, "max-problems", 1000, "list at most this many problems")
	return cmd
}

// fsckRouting fetches the routing info from mgmtd once (fsck needs one
// view of the storage targets, not a watch).
func fsckRouting(ctx context.Context, addrs, token string, timeout time.Duration) (*mgmtdclient.Cache, func(), error) {
	if token == "" {
		return nil, nil, errors.New("fsck: --mgmtd needs the cluster token: pass --token or set EMBERFS_TOKEN")
	}
	conn, err := mgmtdclient.Dial([]string{addrs}, token)
	if err != nil {
		return nil, nil, fmt.Errorf("fsck: %w", err)
	}
	cache := mgmtdclient.NewCache(conn)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := cache.Refresh(rctx); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("fsck: routing info from mgmtd %s: %w", addrs, err)
	}
	return cache, func() { cache.Close(); conn.Close() }, nil
}

func namespaceHas(eng kv.Engine) func(ctx context.Context, ids []uint64) (map[uint64]bool, error) {
	return func(ctx context.Context, ids []uint64) (map[uint64]bool, error) {
		return meta.InodesExist(ctx, eng, ids)
	}
}

// printStorageCheck prints the chunks-without-files result and returns the
// number of problems in it (orphan inodes and targets not listed).
func printStorageCheck(w io.Writer, r *inventory.Result) int {
	if r == nil {
		return 0
	}
	fmt.Fprintf(w, "storage: %d targets listed, %d inodes with chunks not in the snapshot, %d of them exist now, %d had no chunks left\n",
		r.Listed, r.Candidates, r.ExistNow, r.Vanished)
	for _, id := range r.OrphanIDs() {
		fmt.Fprintf(w, "chunks without files: inode %d on targets %s\n", id, joinIDs(r.Orphans[id]))
	}
	unlisted := make([]uint64, 0, len(r.Unlisted))
	for t := range r.Unlisted {
		unlisted = append(unlisted, t)
	}
	sort.Slice(unlisted, func(i, j int) bool { return unlisted[i] < unlisted[j] })
	for _, t := range unlisted {
		fmt.Fprintf(w, "problem: storage target %d not checked: %v\n", t, r.Unlisted[t])
	}
	return len(r.Orphans) + len(unlisted)
}

func joinIDs(ids []uint64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprint(id)
	}
	return strings.Join(parts, ", ")
}
