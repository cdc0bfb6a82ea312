// Package placementsim measures a chain table the way a cluster would feel
// it when nodes fail: how evenly the recovery reads and the client reads
// of a failed node land on the nodes that are left. It only computes;
// `emberfs bench placement` prints its results and docs/mgmtd.md keeps the
// table.
//
// The model follows what EmberFS does (docs/mgmtd.md, docs/storage.md):
//   - A failed node's targets move to the end of their chains (offline
//     last). When a target comes back it is synced by its predecessor,
//     which is then the chain's last surviving target: that node reads the
//     chunks and sends them. So each replica lost in a chain costs one unit
//     of recovery reads on the chain's last surviving node. With two nodes
//     down, a chain that lost two replicas costs its last survivor one
//     copy too: the second replica to return syncs from the first, whose
//     node is back by then. A chain with no survivor is lost and counted
//     apart.
//   - Clients spread a chain's reads evenly over its serving replicas
//     (storageclient rotates the first replica it asks), and every chain
//     gets the same read load (files stripe over every chain of a table).
//
// Imbalance is max/mean over the nodes still up; 1.0 is perfect. Where a
// node has fewer chain partners than there are other nodes, perfect is
// impossible, so every figure comes with the best any placement could do.
package placementsim

import (
	"fmt"
	"math"
	"sort"

	"github.com/emberfs/emberfs/service/mgmtd/placement"
)

// Config is one cluster shape: Nodes nodes with TargetsPerNode targets
// each, replicated Replicas times.
type Config struct {
	Nodes          int
	TargetsPerNode int
	Replicas       int
}

// Grid lists the targets of cfg: node n (from 1) holds targets
// n*1000+1 ... n*1000+TargetsPerNode (the storage service's
// node_id*100+index convention, widened for 20+ targets).
func Grid(cfg Config) []placement.Target {
	ts := make([]placement.Target, 0, cfg.Nodes*cfg.TargetsPerNode)
	for n := 1; n <= cfg.Nodes; n++ {
		for i := 1; i <= cfg.TargetsPerNode; i++ {
			ts = append(ts, placement.Target{ID: uint64(n)*1000 + uint64(i), Node: uint32(n)})
		}
	}
	return ts
}

// Imbalance is max/mean of a per-node load, the worst over every failure
// case, beside the best any placement could reach in the same case.
type Imbalance struct {
	Worst float64
	Best  float64
}

func (i Imbalance) String() string { return fmt.Sprintf("%.2f (best %.2f)", i.Worst, i.Best) }

// Result is what one chain table gives.
type Result struct {
	Config
	Chains int
	// Recovery1: recovery reads over the other nodes after one node
	// fails, worst over every node. Recovery2: the same after two nodes
	// fail, worst over every pair.
	Recovery1, Recovery2 Imbalance
	// Read1: client read load over the nodes still up while one node is
	// down, worst over every node.
	Read1 Imbalance
	// LostChains2 is the most chains that lose every replica when two
	// nodes fail (only possible with 2 replicas).
	LostChains2 int
	// MaxShared is the most chains two nodes share; MinPartners the fewest
	// distinct nodes a node shares a chain with.
	MaxShared, MinPartners int
}

// Run places Grid(cfg) with place and measures the table.
func Run(cfg Config, place func([]placement.Target, int) ([][]uint64, error)) (Result, error) {
	chains, err := place(Grid(cfg), cfg.Replicas)
	if err != nil {
		return Result{}, err
	}
	return Measure(cfg, chains, nodeOf(cfg))
}

// Measure computes Result for chains (target ids, head first) whose
// targets map to nodes 1..cfg.Nodes through nodeOf.
func Measure(cfg Config, chains [][]uint64, nodeOf map[uint64]uint32) (Result, error) {
	if cfg.Nodes < 3 {
		return Result{}, fmt.Errorf("placementsim: %d nodes, want at least 3 (two fail, one is left)", cfg.Nodes)
	}
	res := Result{Config: cfg, Chains: len(chains)}
	// byNode[n] lists the chains that hold a replica on node n; nodes[c]
	// is chain c's nodes in chain order.
	byNode := make([][]int, cfg.Nodes+1)
	nodes := make([][]uint32, len(chains))
	for c, ch := range chains {
		for _, id := range ch {
			n, ok := nodeOf[id]
			if !ok || n < 1 || int(n) > cfg.Nodes {
				return Result{}, fmt.Errorf("placementsim: target %d of chain %d is on no node 1..%d", id, c, cfg.Nodes)
			}
			nodes[c] = append(nodes[c], n)
			byNode[n] = append(byNode[n], c)
		}
	}
	res.MaxShared, res.MinPartners = pairStats(cfg.Nodes, nodes)

	load := make([]float64, cfg.Nodes+1) // scratch, reset after each case
	var touched []uint32
	add := func(n uint32, v float64) {
		if load[n] == 0 {
			touched = append(touched, n)
		}
		load[n] += v
	}
	// ratio takes max/mean over `up` nodes and clears the scratch.
	ratio := func(total float64, up int) float64 {
		maxv := 0.0
		for _, n := range touched {
			maxv = math.Max(maxv, load[n])
			load[n] = 0
		}
		touched = touched[:0]
		if total == 0 {
			return 1
		}
		return maxv / (total / float64(up))
	}
	// best is the ideal max/mean when units whole units spread over up
	// nodes: ceil(units/up) on the busiest node.
	best := func(units, up int) float64 {
		if units == 0 {
			return 1
		}
		return math.Ceil(float64(units)/float64(up)) / (float64(units) / float64(up))
	}
	res.Recovery1 = Imbalance{Best: 1}
	res.Read1 = Imbalance{Best: 1}
	res.Recovery2 = Imbalance{Best: 1}
	baseRead := make([]float64, cfg.Nodes+1)
	for c := range nodes {
		for _, n := range nodes[c] {
			baseRead[n] += 1 / float64(len(nodes[c]))
		}
	}

	for f := uint32(1); int(f) <= cfg.Nodes; f++ {
		down := func(n uint32) bool { return n == f }
		// Recovery: each lost replica is read from the chain's last survivor.
		units := 0
		for _, c := range byNode[f] {
			if src, ok := source(nodes[c], down); ok {
				add(src, 1)
				units++
			}
		}
		res.Recovery1.Worst = math.Max(res.Recovery1.Worst, ratio(float64(units), cfg.Nodes-1))
		res.Recovery1.Best = math.Max(res.Recovery1.Best, best(units, cfg.Nodes-1))

		// Reads: f's chains now spread over one replica fewer.
		total, maxv, slots := 0.0, 0.0, 0
		extra := map[uint32]float64{}
		for _, c := range byNode[f] {
			r := float64(len(nodes[c]))
			for _, n := range nodes[c] {
				if n != f && r > 1 {
					extra[n] += 1/(r-1) - 1/r
					slots++
				}
			}
		}
		for n := uint32(1); int(n) <= cfg.Nodes; n++ {
			if n == f {
				continue
			}
			l := baseRead[n] + extra[n]
			total += l
			maxv = math.Max(maxv, l)
		}
		res.Read1.Worst = math.Max(res.Read1.Worst, maxv/(total/float64(cfg.Nodes-1)))
		res.Read1.Best = math.Max(res.Read1.Best, bestRead(cfg, baseRead, f, slots, total))

		// Two failures: f and every g > f.
		for g := f + 1; int(g) <= cfg.Nodes; g++ {
			down2 := func(n uint32) bool { return n == f || n == g }
			units, lost := 0, 0
			visit := func(c int, skipIfBoth bool) {
				lostHere := 0
				for _, n := range nodes[c] {
					if down2(n) {
						lostHere++
					}
				}
				if skipIfBoth && lostHere == 2 {
					return // counted from f's side
				}
				src, ok := source(nodes[c], down2)
				if !ok {
					lost++
					return
				}
				add(src, 1)
				units++
			}
			for _, c := range byNode[f] {
				visit(c, false)
			}
			for _, c := range byNode[g] {
				visit(c, true)
			}
			res.LostChains2 = max(res.LostChains2, lost)
			res.Recovery2.Worst = math.Max(res.Recovery2.Worst, ratio(float64(units), cfg.Nodes-2))
			res.Recovery2.Best = math.Max(res.Recovery2.Best, best(units, cfg.Nodes-2))
		}
	}
	return res, nil
}

// source is the node that recovers a chain's lost replicas: the last
// surviving node in chain order (the failed targets moved behind it). ok
// is false when every replica is down.
func source(chain []uint32, down func(uint32) bool) (uint32, bool) {
	for i := len(chain) - 1; i >= 0; i-- {
		if !down(chain[i]) {
			return chain[i], true
		}
	}
	return 0, false
}

// bestRead is the ideal max/mean of read load with node f down: f's extra
// read share comes in slots (one per surviving partner replica), each worth
// 1/(r(r-1)) of a chain's reads; at best they spread over every other node,
// ceil(slots/(N-1)) on the one that was busiest before. Exact for uniform
// targets per node and one replication factor, which is what Grid builds.
func bestRead(cfg Config, baseRead []float64, f uint32, slots int, total float64) float64 {
	r := float64(cfg.Replicas)
	if r < 2 || slots == 0 {
		return 1
	}
	baseMax := 0.0
	for n := uint32(1); int(n) <= cfg.Nodes; n++ {
		if n != f {
			baseMax = math.Max(baseMax, baseRead[n])
		}
	}
	perSlot := 1/(r-1) - 1/r
	maxv := baseMax + math.Ceil(float64(slots)/float64(cfg.Nodes-1))*perSlot
	return maxv / (total / float64(cfg.Nodes-1))
}

// pairStats returns the most chains two nodes share and the fewest
// distinct partners a node has.
func pairStats(numNodes int, nodes [][]uint32) (maxShared, minPartners int) {
	shared := map[[2]uint32]int{}
	partners := make([]map[uint32]bool, numNodes+1)
	for _, ns := range nodes {
		for i, a := range ns {
			for _, b := range ns[i+1:] {
				k := [2]uint32{min(a, b), max(a, b)}
				shared[k]++
				maxShared = max(maxShared, shared[k])
				for _, p := range [][2]uint32{{a, b}, {b, a}} {
					if partners[p[0]] == nil {
						partners[p[0]] = map[uint32]bool{}
					}
					partners[p[0]][p[1]] = true
				}
			}
		}
	}
	minPartners = -1
	for n := 1; n <= numNodes; n++ {
		if minPartners < 0 || len(partners[n]) < minPartners {
			minPartners = len(partners[n])
		}
	}
	return maxShared, minPartners
}

// SortedConfigs orders configs by nodes, then targets, then replicas, so a
// printed table reads top to bottom.
func SortedConfigs(cs []Config) []Config {
	out := append([]Config(nil), cs...)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Nodes != b.Nodes {
			return a.Nodes < b.Nodes
		}
		if a.TargetsPerNode != b.TargetsPerNode {
			return a.TargetsPerNode < b.TargetsPerNode
		}
		return a.Replicas < b.Replicas
	})
	return out
}
