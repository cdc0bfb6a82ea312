package placement

import "slices"

// The greedy pass in Place spreads each node's partners, but it decides
// chain by chain and never looks back, and it leaves the order inside a
// chain (which decides who recovers whom) to head rotation alone. improve
// then polishes the table by local search, as a cheap stand-in for the
// integer program 3FS solves: it swaps nodes between chains and reorders
// chains whenever that makes the loads below no less even, and keeps the
// rest. Every swap keeps each node's target count and never puts two
// replicas of a chain on one node.
//
// The cost is a sum of squares, which is smallest when the counts are
// even:
//   - chains shared by each pair of nodes: when a node fails, its chains'
//     reads fall on its partners in proportion;
//   - for each failed node f and other node j, the chains j recovers when
//     f fails. A target that returns is synced by its predecessor, which
//     is the chain's last surviving target (failed targets move to the
//     end), so that node does the recovery reads;
//   - heads (they take client writes) and tails (they commit first) per
//     node.
//
// The search is driven by a fixed pseudo-random sequence, so the same
// targets always give the same table.

// improveMaxNodes bounds the dense pair counters (nodes² entries each);
// bigger clusters keep the greedy table.
const improveMaxNodes = 2048

// improveMovesPerChain is the search budget: about 1M moves at 500 nodes
// x 20 targets x 3 replicas. 1000 moves per chain gave no better worst
// case in `emberfs bench placement`.
const improveMovesPerChain = 300

type improver struct {
	n, r   int
	chains [][]int32 // node indexes, head first
	pair   []int32   // n*n, a<b at a*n+b: chains shared by a and b
	src    []int32   // n*n, f*n+j: chains j recovers when f fails
	heads  []int32
	tails  []int32
	cost   int64
	rng    uint64
}

// improve reorders and swaps the nodes of chains (node indexes 0..n-1) in
// place.
func improve(chains [][]int32, n, r int) {
	if r < 2 || n > improveMaxNodes || len(chains) < 2 {
		return
	}
	im := &improver{n: n, r: r, chains: chains,
		pair: make([]int32, n*n), src: make([]int32, n*n),
		heads: make([]int32, n), tails: make([]int32, n),
		rng: 0x9e3779b97f4a7c15}
	for c := range chains {
		im.apply(c, 1)
	}
	start := im.cost
	greedy := make([][]int32, len(chains))
	for c, ns := range chains {
		greedy[c] = slices.Clone(ns)
	}
	moves := improveMovesPerChain * len(chains)
	for range moves {
		if im.next()%4 == 0 {
			im.tryReorder()
		} else {
			im.trySwap()
		}
	}
	// Moves that keep the cost let the search cross plateaus, but on a
	// table the search cannot better (small clusters, one target per node)
	// they only shuffle it: keep the greedy table then.
	if im.cost == start {
		for c := range chains {
			copy(chains[c], greedy[c])
		}
	}
}

// next is splitmix64: a fixed generator, so placement never changes with
// a Go release.
func (im *improver) next() uint64 {
	im.rng += 0x9e3779b97f4a7c15
	z := im.rng
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (im *improver) intn(n int) int { return int(im.next() % uint64(n)) }

// Weights of the three counts. Recovery sources weigh most: with equal
// weights the search often left a node recovering two chains of one failed
// node while another recovered none (12 nodes x 10 targets, 3 replicas);
// 4 removed every such case the benchmark covers at a small cost in pair
// spread.
const (
	weightPair   = 1
	weightSource = 4
	weightEnds   = 1
)

func (im *improver) bump(counts []int32, i int, sign int32, w int64) {
	x := int64(counts[i])
	im.cost += w * (2*x*int64(sign) + 1)
	counts[i] += sign
}

// apply adds (sign 1) or removes (sign -1) chain c's share of every count.
func (im *improver) apply(c int, sign int32) {
	ns := im.chains[c]
	last := len(ns) - 1
	for i, a := range ns {
		for _, b := range ns[i+1:] {
			im.bump(im.pair, int(min(a, b))*im.n+int(max(a, b)), sign, weightPair)
		}
		s := ns[last]
		if i == last {
			s = ns[last-1]
		}
		im.bump(im.src, int(a)*im.n+int(s), sign, weightSource)
	}
	im.bump(im.heads, int(ns[0]), sign, weightEnds)
	im.bump(im.tails, int(ns[last]), sign, weightEnds)
}

func holds(ns []int32, x int32) bool {
	for _, y := range ns {
		if y == x {
			return true
		}
	}
	return false
}

// trySwap exchanges one node between two chains if neither then holds a
// node twice and the cost does not grow.
func (im *improver) trySwap() {
	c1, c2 := im.intn(len(im.chains)), im.intn(len(im.chains))
	if c1 == c2 {
		return
	}
	i, j := im.intn(im.r), im.intn(im.r)
	a, b := im.chains[c1][i], im.chains[c2][j]
	if a == b || holds(im.chains[c1], b) || holds(im.chains[c2], a) {
		return
	}
	before := im.cost
	swap := func() {
		im.apply(c1, -1)
		im.apply(c2, -1)
		im.chains[c1][i], im.chains[c2][j] = im.chains[c2][j], im.chains[c1][i]
		im.apply(c1, 1)
		im.apply(c2, 1)
	}
	swap()
	if im.cost > before {
		swap() // undo
	}
}

// tryReorder exchanges two positions inside one chain if the cost does
// not grow.
func (im *improver) tryReorder() {
	c := im.intn(len(im.chains))
	i, j := im.intn(im.r), im.intn(im.r)
	if i == j {
		return
	}
	before := im.cost
	swap := func() {
		im.apply(c, -1)
		im.chains[c][i], im.chains[c][j] = im.chains[c][j], im.chains[c][i]
		im.apply(c, 1)
	}
	swap()
	if im.cost > before {
		swap()
	}
}
