package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/checkpoint"
	"github.com/emberfs/emberfs/checkpoint/ckptbench"
	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
)

func init() {
	subcommands = append(subcommands, newCheckpointCmd)
	benchSubcommands = append(benchSubcommands, newBenchCheckpointCmd)
}

// newCheckpointCmd is `emberfs checkpoint ls|show|rm|reclaim` over a
// running cluster (docs/checkpoint.md).
func newCheckpointCmd() *cobra.Command {
	cf := &clusterFlags{}
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "List, inspect, remove and reclaim checkpoints",
		Args:  cobra.NoArgs,
	}
	cf.addPersistent(cmd)
	withStore := func(cmd *cobra.Command, fn func(ctx context.Context, s *checkpoint.Store) error) error {
		return cf.withClient(cmd, client.Config{}, func(ctx context.Context, c *client.Client) error {
			return fn(ctx, checkpoint.New(c, meta.Root, checkpoint.Options{}))
		})
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "ls DIR",
		Short: "List the published checkpoints of a job directory, oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(ctx context.Context, s *checkpoint.Store) error {
				infos, err := s.List(ctx, args[0])
				if err != nil {
					return err
				}
				o := newTabOut(cmd.OutOrStdout())
				o.row("NAME", "CREATED", "TENSORS", "SIZE", "LATEST")
				for _, x := range infos {
					latest := ""
					if x.Latest {
						latest = "*"
					}
					o.row(x.Name, x.Created.Format(time.RFC3339), x.Tensors, humanBytes(x.Bytes), latest)
				}
				return o.flush()
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "show PATH",
		Short: "Show a checkpoint's tensors (file, offset, size, dtype, shape) and totals",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(ctx context.Context, s *checkpoint.Store) error {
				m, err := s.Inspect(ctx, args[0])
				if err != nil {
					return err
				}
				o := newTabOut(cmd.OutOrStdout())
				if len(m.Tensors) == 0 {
					// A manifest that lists files only (a DCP checkpoint:
					// its own .metadata says where each item is).
					names := make([]string, 0, len(m.Files))
					for n := range m.Files {
						names = append(names, n)
					}
					sort.Strings(names)
					o.row("FILE", "SIZE")
					for _, n := range names {
						o.row(n, humanBytes(m.Files[n].Size))
					}
					if err := o.flush(); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "\n%s: %d files, %s, created %s (no tensor entries: a DCP checkpoint)\n", args[0], len(m.Files),
						humanBytes(m.DataBytes()), time.Unix(0, m.CreatedUnixNano).Format(time.RFC3339))
					return nil
				}
				o.row("TENSOR", "FILE", "OFFSET", "SIZE", "DTYPE", "SHAPE", "CRC32C")
				byDtype := map[string]int64{}
				for _, t := range m.Tensors {
					o.row(t.Name, t.File, t.Offset, humanBytes(t.Length), t.Dtype, fmt.Sprint(t.Shape), fmt.Sprintf("%08x", t.CRC32C))
					byDtype[t.Dtype] += t.Length
				}
				if err := o.flush(); err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "\n%s: %d tensors, %s in %d files, created %s\n", args[0], len(m.Tensors), humanBytes(m.TotalBytes()),
					len(m.Files), time.Unix(0, m.CreatedUnixNano).Format(time.RFC3339))
				for d, n := range byDtype {
					fmt.Fprintf(w, "  %-10s %s\n", d, humanBytes(n))
				}
				if len(m.Metadata) > 0 {
					fmt.Fprintf(w, "metadata: %s\n", m.Metadata)
				}
				return nil
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "rm PATH",
		Short: "Remove a published checkpoint (latest moves back to the newest left)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(ctx context.Context, s *checkpoint.Store) error {
				fmt.Fprintf(cmd.ErrOrStderr(), "removing %s\n", args[0])
				if err := s.Remove(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
				return nil
			})
		},
	})
	var grace time.Duration
	reclaim := &cobra.Command{
		Use:   "reclaim DIR",
		Short: "Remove pending saves whose writers stopped renewing their lease",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(ctx context.Context, s *checkpoint.Store) error {
				ps, err := s.Reclaim(ctx, args[0], grace, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				n := 0
				for _, p := range ps {
					if p.Reclaimed {
						n++
					} else {
						fmt.Fprintf(cmd.OutOrStdout(), "kept %s (lease renewed %s ago)\n", p.Path, p.LeaseAge.Round(time.Second))
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "reclaimed %d pending saves\n", n)
				return nil
			})
		},
	}
	reclaim.Flags().DurationVar(&grace, "grace", checkpoint.DefaultReclaimGrace, "remove a pending save whose lease went unrenewed this long")
	cmd.AddCommand(reclaim)
	return cmd
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func newBenchCheckpointCmd() *cobra.Command {
	var o ckptbench.Options
	var total, replicas, addrs string
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Checkpoint save/load GB/s on EmberFS beside the local disk (os.File + fsync), same run",
		Long: `Writes a mixed set of regions (1 KiB to 512 MiB, --total bytes) as a checkpoint
(--shards shard files written in parallel, like ranks) and reads it back with
CRC32C checks, then the same bytes to local files with fsync and back. Without
--mgmtd it starts an in-process cluster (3 storage services, chunk data
fsynced) for each --replicas value. Prints a Markdown table.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sz, err := parseSizes(total)
			if err != nil || len(sz) != 1 {
				return fmt.Errorf("--total: want one size like 1024m, got %q", total)
			}
			o.Total = int64(sz[0])
			reps, err := parseInts(replicas)
			if err != nil {
				return err
			}
			if addrs != "" {
				o.MgmtdAddrs, reps = mgmtdclient.ParseAddrs(addrs), []int{0}
			}
			o.Progress = cmd.ErrOrStderr()
			out := cmd.OutOrStdout()
			var rows string
			for _, r := range reps {
				o.Replicas = r
				res, err := ckptbench.Run(cmd.Context(), o)
				if err != nil {
					return err
				}
				label := fmt.Sprintf("replicas %d, %d shards", r, max(o.Shards, 1))
				if addrs != "" {
					label = fmt.Sprintf("cluster %s, %d shards", addrs, max(o.Shards, 1))
				}
				rows += ckptbench.Table(label, res)
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d regions, %.2f GiB\n", label, res.Regions, float64(res.Bytes)/(1<<30))
			}
			fmt.Fprintln(out, ckptbench.Header)
			fmt.Fprint(out, rows)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&total, "total", "1024m", "bytes per checkpoint")
	f.IntVar(&o.Shards, "shards", 1, "shard files written in parallel (ranks)")
	f.StringVar(&replicas, "replicas", "1,3", "replication of the in-process cluster, one run each")
	f.StringVar(&addrs, "mgmtd", "", "use a running cluster (with --token) instead of starting one")
	f.StringVar(&o.Token, "token", os.Getenv("EMBERFS_TOKEN"), "cluster token with --mgmtd")
	f.StringVar(&o.Dir, "dir", "", "directory for the local baseline and the cluster (default: a temp dir)")
	f.BoolVar(&o.NoSync, "no-sync", false, "no fsync in the in-process cluster's chunk engines")
	return cmd
}
