package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/kvcache"
)

func init() { subcommands = append(subcommands, newKVCacheCmd) }

func newKVCacheCmd() *cobra.Command {
	a := &clusterFlags{}
	// Namespace commands read no file data: no page cache, no read-ahead.
	noCache := client.Config{CacheBytes: -1, ReadAhead: -1}
	cmd := &cobra.Command{
		Use:   "kvcache",
		Short: "Inference KVCache namespaces: create, ls, info, stats, drop",
	}
	a.addPersistent(cmd)

	var capacity, maxValue string
	var ttl time.Duration
	var replicas int
	var table uint32
	var noEvict bool
	var slotBits uint8
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a namespace (a value-size class, TTL, capacity and replication)",
		Long: `Creates namespace NAME on the chains of one chain table: by default the table
whose chains have --replicas targets. Values up to --max-value bytes live for
--ttl (0 = forever); when the namespace holds --capacity bytes, least recently
used values are evicted, or with --no-evict further puts fail with "no space".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s := kvcache.Settings{TTL: ttl, Replicas: replicas, ChainTable: table, Evict: !noEvict, SlotBits: slotBits}
			if table != 0 && !cmd.Flags().Changed("replicas") {
				s.Replicas = 0 // the table decides
			}
			var err error
			if s.CapacityBytes, err = parseSize(capacity); err != nil {
				return fmt.Errorf("--capacity: %w", err)
			}
			if s.MaxValueBytes, err = parseSize(maxValue); err != nil {
				return fmt.Errorf("--max-value: %w", err)
			}
			return a.withClient(cmd, noCache, func(ctx context.Context, c *client.Client) error {
				ns, err := kvcache.Create(ctx, c, args[0], s)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "created kvcache namespace %s (id %d) on %d chains of chain table %d\n",
					ns.Name, ns.ID, len(ns.ChainIDs), ns.ChainTable)
				return nil
			})
		},
	}
	f := create.Flags()
	f.StringVar(&capacity, "capacity", "10GiB", "capacity of the namespace over all its chains")
	f.StringVar(&maxValue, "max-value", "4MiB", "largest value accepted")
	f.DurationVar(&ttl, "ttl", 0, "value lifetime after its put (0 = forever)")
	f.IntVar(&replicas, "replicas", 3, "replication: picks the chain table whose chains have this many targets")
	f.Uint32Var(&table, "chain-table", 0, "chain table id (default: chosen by --replicas)")
	f.BoolVar(&noEvict, "no-evict", false, "refuse puts when full instead of evicting least recently used values")
	f.Uint8Var(&slotBits, "slot-bits", 0, "narrow key hashes to this many bits (testing only; 0 = 64)")

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List namespaces",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, noCache, func(ctx context.Context, c *client.Client) error {
				all, err := kvcache.List(ctx, c)
				if err != nil {
					return err
				}
				o := newTabOut(cmd.OutOrStdout())
				o.row("NAME", "ID", "TABLE", "CHAINS", "REPLICAS", "CAPACITY", "MAX VALUE", "TTL", "EVICT")
				for _, ns := range all {
					o.row(ns.Name, ns.ID, ns.ChainTable, len(ns.ChainIDs), ns.Replicas, bytesString(uint64(ns.CapacityBytes)),
						bytesString(uint64(ns.MaxValueBytes)), ttlString(ns.TTL()), ns.Evict)
				}
				return o.flush()
			})
		},
	}

	info := &cobra.Command{
		Use:   "info NAME",
		Short: "Print a namespace's settings and chains",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, noCache, func(ctx context.Context, c *client.Client) error {
				ns, err := kvcache.Info(ctx, c, args[0])
				if err != nil {
					return err
				}
				o := newTabOut(cmd.OutOrStdout())
				ids := make([]string, len(ns.ChainIDs))
				for i, id := range ns.ChainIDs {
					ids[i] = fmt.Sprint(id)
				}
				slot := "64"
				if ns.SlotBits != 0 {
					slot = fmt.Sprint(ns.SlotBits)
				}
				for _, r := range [][2]any{
					{"name", ns.Name}, {"id", ns.ID}, {"chain table", ns.ChainTable}, {"replicas", ns.Replicas},
					{"chains", strings.Join(ids, ",")}, {"capacity", bytesString(uint64(ns.CapacityBytes))},
					{"capacity per chain", bytesString(uint64(ns.ChainShare()))}, {"max value", bytesString(uint64(ns.MaxValueBytes))},
					{"ttl", ttlString(ns.TTL())}, {"evict", ns.Evict}, {"slot bits", slot},
					{"created", ns.CreatedAt.Local().Format(time.RFC3339)},
				} {
					o.row(r[0], r[1])
				}
				return o.flush()
			})
		},
	}

	stats := &cobra.Command{
		Use:   "stats NAME",
		Short: "Print a namespace's counters, summed over its chains",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, noCache, func(ctx context.Context, c *client.Client) error {
				ns, err := kvcache.Info(ctx, c, args[0])
				if err != nil {
					return err
				}
				st, err := kvcache.NamespaceStats(ctx, c, ns)
				if err != nil {
					return err
				}
				hitRate := "-"
				if st.Hits+st.Misses > 0 {
					hitRate = fmt.Sprintf("%.1f%%", 100*float64(st.Hits)/float64(st.Hits+st.Misses))
				}
				used := "-"
				if ns.CapacityBytes > 0 {
					used = fmt.Sprintf("%.1f%%", 100*float64(st.BytesStored)/float64(ns.CapacityBytes))
				}
				o := newTabOut(cmd.OutOrStdout())
				for _, r := range [][2]any{
					{"values", st.Values}, {"stored", fmt.Sprintf("%s of %s (%s)", bytesString(st.BytesStored), bytesString(uint64(ns.CapacityBytes)), used)},
					{"hits", st.Hits}, {"misses", st.Misses}, {"hit rate", hitRate}, {"read", bytesString(st.BytesRead)},
					{"evictions", st.Evictions}, {"expirations", st.Expirations}, {"corrupt misses", st.CorruptMisses},
				} {
					o.row(r[0], r[1])
				}
				return o.flush()
			})
		},
	}

	drop := &cobra.Command{
		Use:   "drop NAME",
		Short: "Drop a namespace and every value in it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, noCache, func(ctx context.Context, c *client.Client) error {
				if err := kvcache.Drop(ctx, c, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "dropped kvcache namespace %s\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(create, ls, info, stats, drop)
	return cmd
}

func ttlString(d time.Duration) string {
	if d == 0 {
		return "never"
	}
	return d.String()
}
