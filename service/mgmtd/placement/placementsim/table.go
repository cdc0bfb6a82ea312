package placementsim

import (
	"fmt"
	"io"
	"time"

	"github.com/emberfs/emberfs/service/mgmtd/placement"
)

// Configs is every combination of the given node counts, targets per node
// and replication factors, skipping shapes whose target count is not a
// multiple of the replication factor (placement refuses them), sorted.
func Configs(nodes, targets, replicas []int) []Config {
	var out []Config
	for _, n := range nodes {
		for _, t := range targets {
			for _, r := range replicas {
				if n*t%r == 0 {
					out = append(out, Config{Nodes: n, TargetsPerNode: t, Replicas: r})
				}
			}
		}
	}
	return SortedConfigs(out)
}

// WriteTable places each config with the greedy pass alone ("before") and
// with Place ("after"), and writes one Markdown row per config: worst
// max/mean before -> after, and the ideal spread's max/mean (a lower
// bound; see Result).
func WriteTable(w io.Writer, configs []Config) error {
	fmt.Fprintln(w, "| nodes x targets | replicas | chains | recovery, 1 down | recovery, 2 down | reads, 1 down | max chains shared by 2 nodes | place time |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, cfg := range configs {
		before, err := Run(cfg, placement.PlaceGreedy)
		if err != nil {
			return fmt.Errorf("%+v greedy: %w", cfg, err)
		}
		start := time.Now()
		chains, err := placement.Place(Grid(cfg), cfg.Replicas)
		took := time.Since(start)
		if err != nil {
			return fmt.Errorf("%+v: %w", cfg, err)
		}
		after, err := Measure(cfg, chains, nodeOf(cfg))
		if err != nil {
			return err
		}
		cell := func(b, a Imbalance) string {
			return fmt.Sprintf("%.2f -> **%.2f** (ideal %.2f)", b.Worst, a.Worst, a.Best)
		}
		lost := ""
		switch {
		case after.LostChains2 == 1:
			lost = "; 1 chain lost"
		case after.LostChains2 > 1:
			lost = fmt.Sprintf("; %d chains lost", after.LostChains2)
		}
		fmt.Fprintf(w, "| %d x %d | %d | %d | %s | %s%s | %s | %d -> %d | %s |\n",
			cfg.Nodes, cfg.TargetsPerNode, cfg.Replicas, after.Chains,
			cell(before.Recovery1, after.Recovery1), cell(before.Recovery2, after.Recovery2), lost,
			cell(before.Read1, after.Read1), before.MaxShared, after.MaxShared, took.Round(time.Millisecond))
	}
	return nil
}

func nodeOf(cfg Config) map[uint64]uint32 {
	m := map[uint64]uint32{}
	for _, t := range Grid(cfg) {
		m[t.ID] = t.Node
	}
	return m
}
