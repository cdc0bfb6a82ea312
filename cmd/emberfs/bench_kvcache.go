package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/kvcache/kvbench"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
)

// newBenchKVCacheCmd is `emberfs bench kvcache` (the bench parent adds it).
func init() { benchSubcommands = append(benchSubcommands, newBenchKVCacheCmd) }

func newBenchKVCacheCmd() *cobra.Command {
	var (
		o                       kvbench.Options
		mgmtd, sizes, conc, ops string
		dataBytes, memTier      string
		quiet                   bool
	)
	cmd := &cobra.Command{
		Use:   "kvcache",
		Short: "KVCache put/get/get_into/exists/longest_prefix beside redis-server",
		Long: `Starts redis-server on a free loopback port (persistence off) and measures,
for each value size and number of concurrent callers, the same operation on
EmberFS's KVCache client and on Redis: put (SET), get (GET), get_into (GET into
a preallocated buffer), exists (EXISTS) and longest_prefix over 64-key chains
(Redis: 64 EXISTS pipelined in one round trip). Runs against the cluster at
--mgmtd, or an in-process cluster with --replicas when none is given. Prints a
Markdown table with ops/s, MB/s, p50, p99 and the EmberFS/Redis ratios;
progress goes to stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			o.Mgmtd = mgmtdclient.ParseAddrs(mgmtd)
			if len(o.Mgmtd) > 0 && o.Token == "" {
				return fmt.Errorf("--mgmtd given without a cluster token: pass --token or set EMBERFS_TOKEN")
			}
			if o.Sizes, err = parseSizes(sizes); err != nil {
				return fmt.Errorf("--sizes: %w", err)
			}
			if o.Concurrency, err = parseInts(conc); err != nil {
				return fmt.Errorf("--concurrency: %w", err)
			}
			for _, op := range strings.Split(ops, ",") {
				o.Ops = append(o.Ops, strings.TrimSpace(op))
			}
			if o.DataBytes, err = parseSize(dataBytes); err != nil {
				return fmt.Errorf("--data: %w", err)
			}
			if memTier != "0" {
				if o.MemoryTierBytes, err = parseSize(memTier); err != nil {
					return fmt.Errorf("--memory-tier: %w", err)
				}
			}
			if !quiet {
				o.Progress = cmd.ErrOrStderr()
			}
			out := cmd.OutOrStdout()
			where := "an in-process cluster"
			if len(o.Mgmtd) > 0 {
				where = "the cluster at " + mgmtd
			}
			fmt.Fprintf(out, "# kvcache bench: %v per cell and system, %s, memory tier %s\n", o.Duration, where, memTier)
			fmt.Fprintln(out, kvbench.Header)
			_, err = kvbench.Run(cmd.Context(), o, func(r kvbench.Row) { fmt.Fprintln(out, r.Markdown()) })
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&mgmtd, "mgmtd", "", "mgmtd addresses of an existing cluster (default: start one in-process)")
	f.StringVar(&o.Token, "token", os.Getenv("EMBERFS_TOKEN"), "cluster token (with --mgmtd; default $EMBERFS_TOKEN)")
	f.IntVar(&o.Replicas, "replicas", 3, "replicas of the in-process cluster")
	f.StringVar(&sizes, "sizes", "4k,64k,256k,1m,4m", "value sizes")
	f.StringVar(&conc, "concurrency", "1,16,64", "concurrent callers")
	f.StringVar(&ops, "ops", strings.Join(kvbench.Ops, ","), "operations")
	f.DurationVar(&o.Duration, "duration", time.Second, "time per cell and system")
	f.StringVar(&dataBytes, "data", "256MiB", "distinct data per size (puts cycle over this many bytes of keys)")
	f.StringVar(&memTier, "memory-tier", "0", "EmberFS client memory tier size (0 = off: every get goes to the cluster)")
	f.StringVar(&o.RedisServer, "redis-server", "redis-server", "redis-server binary")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	return cmd
}
