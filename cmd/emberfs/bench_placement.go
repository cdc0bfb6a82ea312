package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/service/mgmtd/placement/placementsim"
)

// newBenchPlacementCmd is `emberfs bench placement` (the bench parent
// command adds it).
func init() { benchSubcommands = append(benchSubcommands, newBenchPlacementCmd) }

func newBenchPlacementCmd() *cobra.Command {
	var nodes, targets, replicas string
	cmd := &cobra.Command{
		Use:   "placement",
		Short: "Chain placement at scale, by simulation: how evenly failed nodes' recovery and reads spread",
		Long: `Builds chain tables with mgmtd's placement code for every combination of
--nodes, --targets (per node) and --replicas, fails every node and every
pair of nodes in turn, and prints a Markdown table of the worst max/mean
load over the nodes still up: recovery reads after one and two failures,
and client reads while one node is down. Each cell shows the greedy pass
alone, then the placement mgmtd uses, then the ideal spread (a lower
bound). No cluster is started. docs/mgmtd.md explains the model.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns, err := parseInts(nodes)
			if err != nil {
				return fmt.Errorf("--nodes: %w", err)
			}
			ts, err := parseInts(targets)
			if err != nil {
				return fmt.Errorf("--targets: %w", err)
			}
			rs, err := parseInts(replicas)
			if err != nil {
				return fmt.Errorf("--replicas: %w", err)
			}
			for _, n := range ns {
				if n < 3 {
					return fmt.Errorf("--nodes: %d nodes, want at least 3 (two fail, one is left)", n)
				}
			}
			cfgs := placementsim.Configs(ns, ts, rs)
			if len(cfgs) == 0 {
				return fmt.Errorf("no shape to place: every nodes x targets is not a multiple of the replicas")
			}
			return placementsim.WriteTable(cmd.OutOrStdout(), cfgs)
		},
	}
	cmd.Flags().StringVar(&nodes, "nodes", "6,12,24,48,96,198,498", "node counts, comma-separated")
	cmd.Flags().StringVar(&targets, "targets", "10,20", "targets per node, comma-separated")
	cmd.Flags().StringVar(&replicas, "replicas", "2,3", "replication factors, comma-separated")
	return cmd
}
