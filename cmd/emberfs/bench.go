package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/storage/storagebench"
)

func init() { subcommands = append(subcommands, newBenchCmd) }

// benchSubcommands is filled by the init functions of files that add a
// benchmark (`emberfs bench <name>`), so adding one never touches this file.
var benchSubcommands = []func() *cobra.Command{newBenchStorageCmd}

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks (each compares against a plain baseline in the same run)",
		Args:  cobra.NoArgs,
	}
	for _, mk := range benchSubcommands {
		cmd.AddCommand(mk())
	}
	return cmd
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ToLower(f))
		mult := 1
		switch {
		case strings.HasSuffix(f, "k"):
			mult, f = 1<<10, strings.TrimSuffix(f, "k")
		case strings.HasSuffix(f, "m"):
			mult, f = 1<<20, strings.TrimSuffix(f, "m")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad size %q (want e.g. 4k, 128k, 1m)", f)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func newBenchStorageCmd() *cobra.Command {
	var sizes, inflight, replicas, dir string
	var duration time.Duration
	var sync bool
	cmd := &cobra.Command{
		Use:   "storage",
		Short: "Storage read/write throughput and latency on an in-process cluster, beside raw loopback TCP",
		Long: `Starts mgmtd and storage services in this process on loopback (one chain of
1 or 3 replicas), then measures writes (client -> head -> chain) and reads
(client -> a serving replica, sendfile from the chunk file) for each size and
number of requests in flight, each followed by plain loopback TCP moving the
same sizes with as many connections. Prints a Markdown table.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := storagebench.Options{Duration: duration, Dir: dir, Sync: sync}
			var err error
			if o.Sizes, err = parseSizes(sizes); err != nil {
				return err
			}
			if o.InFlight, err = parseInts(inflight); err != nil {
				return err
			}
			if o.Replicas, err = parseInts(replicas); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "# storage bench: %v per cell, fsync %v\n", duration, sync)
			fmt.Fprintln(out, storagebench.Header)
			_, err = storagebench.Run(cmd.Context(), o, func(r storagebench.Row) { fmt.Fprintln(out, r.Markdown()) })
			if err == nil {
				fmt.Fprintf(out, "\nPeak RSS of the process (client and storage services together): %d MiB\n", storagebench.PeakRSS()>>20)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&sizes, "sizes", "4k,128k,1m,4m", "request sizes")
	f.StringVar(&inflight, "inflight", "1,4,16", "requests in flight")
	f.StringVar(&replicas, "replicas", "1,3", "chain lengths")
	f.DurationVar(&duration, "duration", time.Second, "time per measurement")
	f.StringVar(&dir, "dir", "", "directory for the targets (default: a temp dir, removed afterwards)")
	f.BoolVar(&sync, "sync", false, "fsync in the chunk engines (off by default: measures the data path, not the disk)")
	return cmd
}
