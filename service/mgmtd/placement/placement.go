// Package placement assigns storage targets to chains. Each chain takes
// its replicas from distinct nodes, and a node's chain partners are spread
// over as many other nodes as possible, so that when a node fails its read
// load falls on many nodes rather than a few (3FS's "balanced traffic
// during recovery"). 3FS solves this exactly as a block design with an
// integer program; a greedy choice gets close and needs no solver.
package placement

import (
	"fmt"
	"sort"
)

// Target is a storage target and the node that holds it.
type Target struct {
	ID   uint64
	Node uint32
}

// Place groups targets into len(targets)/replicas chains of replicas
// targets each, heads first. It fails if the count is not a multiple of
// replicas or if some node holds more targets than there are chains (two
// replicas of one chain would then share a node). The greedy pass spreads
// each node's partners; improve (improve.go) then evens out partners,
// recovery sources, heads and tails by local search. The same targets, in
// any order, always give the same chains.
func Place(targets []Target, replicas int) ([][]uint64, error) {
	return place(targets, replicas, true)
}

// PlaceGreedy is Place without the local search: EmberFS's placement
// before it had one, kept so `emberfs bench placement` can show the
// difference.
func PlaceGreedy(targets []Target, replicas int) ([][]uint64, error) {
	return place(targets, replicas, false)
}

func place(targets []Target, replicas int, polish bool) ([][]uint64, error) {
	if replicas < 1 {
		return nil, fmt.Errorf("placement: replication factor %d, want at least 1", replicas)
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("placement: no targets to place")
	}
	if len(targets)%replicas != 0 {
		return nil, fmt.Errorf("placement: %d targets is not a multiple of the replication factor %d", len(targets), replicas)
	}
	chains := len(targets) / replicas

	byNode := map[uint32][]uint64{}
	seen := map[uint64]bool{}
	for _, t := range targets {
		if seen[t.ID] {
			return nil, fmt.Errorf("placement: target %d listed twice", t.ID)
		}
		seen[t.ID] = true
		byNode[t.Node] = append(byNode[t.Node], t.ID)
	}
	nodes := make([]uint32, 0, len(byNode))
	for n, ids := range byNode {
		if len(ids) > chains {
			return nil, fmt.Errorf("placement: node %d holds %d targets but there are only %d chains; replicas of a chain must be on distinct nodes", n, len(ids), chains)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i] < nodes[j] })
	index := make(map[uint32]int32, len(nodes))
	for i, n := range nodes {
		index[n] = int32(i)
	}
	left := make(map[uint32]int, len(nodes))
	for n, ids := range byNode {
		left[n] = len(ids)
	}

	groups := greedy(nodes, left, chains, replicas)
	idx := make([][]int32, len(groups))
	for c, g := range groups {
		for _, n := range g {
			idx[c] = append(idx[c], index[n])
		}
	}
	if polish {
		improve(idx, len(nodes), replicas)
	}
	// Each node's targets go to its chains in ascending id order.
	out := make([][]uint64, 0, chains)
	for _, g := range idx {
		chain := make([]uint64, 0, replicas)
		for _, i := range g {
			n := nodes[i]
			chain = append(chain, byNode[n][0])
			byNode[n] = byNode[n][1:]
		}
		out = append(out, chain)
	}
	return out, nil
}

// greedy picks the nodes of each chain in turn, head first; left[n] is
// how many targets node n still has (consumed).
func greedy(nodes []uint32, left map[uint32]int, chains, replicas int) [][]uint32 {
	pairs := map[[2]uint32]int{} // chains shared by two nodes
	pairKey := func(a, b uint32) [2]uint32 {
		if a > b {
			a, b = b, a
		}
		return [2]uint32{a, b}
	}
	heads := map[uint32]int{}
	out := make([][]uint32, 0, chains)
	for remaining := chains; remaining > 0; remaining-- {
		var chosen []uint32
		in := map[uint32]bool{}
		// A node with as many targets left as chains left must be in every
		// remaining chain; taking it now keeps the placement feasible.
		for _, n := range nodes {
			if left[n] == remaining {
				chosen = append(chosen, n)
				in[n] = true
			}
		}
		for len(chosen) < replicas {
			best, bestScore, bestLeft := uint32(0), -1, 0
			for _, n := range nodes {
				if in[n] || left[n] == 0 {
					continue
				}
				score := 0
				for _, m := range chosen {
					score += pairs[pairKey(n, m)]
				}
				// Fewest shared chains with the nodes already chosen; then
				// the node with the most targets left, so none is stranded.
				if bestScore < 0 || score < bestScore || (score == bestScore && left[n] > bestLeft) {
					best, bestScore, bestLeft = n, score, left[n]
				}
			}
			chosen = append(chosen, best)
			in[best] = true
		}
		for i, a := range chosen {
			for _, b := range chosen[i+1:] {
				pairs[pairKey(a, b)]++
			}
		}
		// Heads take the writes: rotate the head role over nodes.
		sort.SliceStable(chosen, func(i, j int) bool { return heads[chosen[i]] < heads[chosen[j]] })
		heads[chosen[0]]++
		for _, n := range chosen {
			left[n]--
		}
		out = append(out, chosen)
	}
	return out
}

// Spread measures how a placement shares a failed node's load.
type Spread struct {
	// MinPartners is the smallest number of distinct partner nodes any node has.
	MinPartners int
	// MaxShared is the most chains any two nodes share.
	MaxShared int
}

// MeasureSpread computes Spread for chains whose targets map to nodes.
func MeasureSpread(chains [][]uint64, nodeOf map[uint64]uint32) Spread {
	partners := map[uint32]map[uint32]int{}
	for _, c := range chains {
		for _, a := range c {
			for _, b := range c {
				na, nb := nodeOf[a], nodeOf[b]
				if a == b {
					continue
				}
				if partners[na] == nil {
					partners[na] = map[uint32]int{}
				}
				partners[na][nb]++
			}
		}
	}
	s := Spread{MinPartners: -1}
	for _, ps := range partners {
		if s.MinPartners < 0 || len(ps) < s.MinPartners {
			s.MinPartners = len(ps)
		}
		for _, n := range ps {
			if n > s.MaxShared {
				s.MaxShared = n
			}
		}
	}
	if s.MinPartners < 0 {
		s.MinPartners = 0
	}
	return s
}
