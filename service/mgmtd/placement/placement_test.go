package placement

import (
	"fmt"
	"strings"
	"testing"
)

func grid(nodes, perNode int) ([]Target, map[uint64]uint32) {
	var ts []Target
	nodeOf := map[uint64]uint32{}
	for n := 1; n <= nodes; n++ {
		for i := 1; i <= perNode; i++ {
			id := uint64(n*100 + i)
			ts = append(ts, Target{ID: id, Node: uint32(n)})
			nodeOf[id] = uint32(n)
		}
	}
	return ts, nodeOf
}

// naive places chains the obvious way: nodes in fixed groups of replicas,
// so each node only ever partners with the same few nodes.
func naive(nodes, perNode, replicas int) [][]uint64 {
	var out [][]uint64
	for i := 1; i <= perNode; i++ {
		for g := 0; g+replicas <= nodes; g += replicas {
			var c []uint64
			for k := 1; k <= replicas; k++ {
				c = append(c, uint64((g+k)*100+i))
			}
			out = append(out, c)
		}
	}
	return out
}

func checkValid(t *testing.T, chains [][]uint64, ts []Target, nodeOf map[uint64]uint32, replicas int) {
	t.Helper()
	used := map[uint64]bool{}
	for _, c := range chains {
		if len(c) != replicas {
			t.Fatalf("chain %v has %d targets, want %d", c, len(c), replicas)
		}
		nodes := map[uint32]bool{}
		for _, id := range c {
			if used[id] {
				t.Fatalf("target %d placed twice", id)
			}
			used[id] = true
			if nodes[nodeOf[id]] {
				t.Fatalf("chain %v has two targets on node %d", c, nodeOf[id])
			}
			nodes[nodeOf[id]] = true
		}
	}
	if len(used) != len(ts) {
		t.Fatalf("placed %d targets of %d", len(used), len(ts))
	}
}

// TestSpread measures how widely each node's partners spread. With 10
// nodes of 6 targets and 3 replicas every node is in 6 chains with 12
// partner slots over 9 other nodes: the best possible is 9 partners and at
// most 2 chains shared by any pair. The naive grouping gives 2 partners
// and 6 shared chains.
func TestSpread(t *testing.T) {
	const nodes, perNode, replicas = 10, 6, 3
	ts, nodeOf := grid(nodes, perNode)
	chains, err := Place(ts, replicas)
	if err != nil {
		t.Fatal(err)
	}
	checkValid(t, chains, ts, nodeOf, replicas)
	got := MeasureSpread(chains, nodeOf)
	base := MeasureSpread(naive(9, perNode, replicas), nodeOf)
	t.Logf("greedy: min partners %d, max shared %d; naive: min partners %d, max shared %d",
		got.MinPartners, got.MaxShared, base.MinPartners, base.MaxShared)
	if got.MinPartners < 8 || got.MaxShared > 2 {
		t.Fatalf("greedy spread %+v, want at least 8 partners per node and at most 2 shared chains", got)
	}
	if base.MinPartners >= got.MinPartners {
		t.Fatalf("naive spread %+v not worse than greedy %+v: the measure is broken", base, got)
	}
}

func TestSpreadLargerCluster(t *testing.T) {
	const nodes, perNode, replicas = 24, 8, 3
	ts, nodeOf := grid(nodes, perNode)
	chains, err := Place(ts, replicas)
	if err != nil {
		t.Fatal(err)
	}
	checkValid(t, chains, ts, nodeOf, replicas)
	got := MeasureSpread(chains, nodeOf)
	t.Logf("24 nodes x 8 targets, r=3: %+v", got)
	// 16 partner slots over 23 nodes: every partner distinct is possible.
	if got.MinPartners < 14 || got.MaxShared > 2 {
		t.Fatalf("spread %+v, want at least 14 partners and at most 2 shared", got)
	}
}

func TestHeadsRotate(t *testing.T) {
	ts, nodeOf := grid(6, 5)
	chains, err := Place(ts, 3)
	if err != nil {
		t.Fatal(err)
	}
	heads := map[uint32]int{}
	for _, c := range chains {
		heads[nodeOf[c[0]]]++
	}
	for n := uint32(1); n <= 6; n++ {
		// 10 chains over 6 nodes: 1 or 2 heads each.
		if heads[n] < 1 || heads[n] > 2 {
			t.Fatalf("node %d heads %d chains (%v), want 1-2", n, heads[n], heads)
		}
	}
}

func TestUnevenNodesStayFeasible(t *testing.T) {
	// One big node: it must appear in every chain.
	var ts []Target
	nodeOf := map[uint64]uint32{}
	add := func(node uint32, n int) {
		for i := 0; i < n; i++ {
			id := uint64(node)*1000 + uint64(i)
			ts = append(ts, Target{id, node})
			nodeOf[id] = node
		}
	}
	add(1, 4)
	add(2, 2)
	add(3, 2)
	add(4, 2)
	add(5, 2)
	chains, err := Place(ts, 3)
	if err != nil {
		t.Fatal(err)
	}
	checkValid(t, chains, ts, nodeOf, 3)
}

func TestPlaceErrors(t *testing.T) {
	ts, _ := grid(2, 3)
	cases := []struct {
		ts       []Target
		replicas int
		want     string
	}{
		{ts, 0, "replication factor 0"},
		{nil, 3, "no targets"},
		{ts[:5], 3, "not a multiple"},
		{ts, 3, "only 2 chains"},
		{[]Target{{1, 1}, {1, 2}}, 1, "listed twice"},
	}
	for _, c := range cases {
		_, err := Place(c.ts, c.replicas)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("Place(%d targets, %d) error %v, want %q", len(c.ts), c.replicas, err, c.want)
		}
	}
}

// TestPlaceIsDeterministic: the same targets, in any order, give the same
// chains, so a table's placement never depends on map order or on when
// targets registered.
func TestPlaceIsDeterministic(t *testing.T) {
	ts, _ := grid(24, 10)
	want, err := Place(ts, 3)
	if err != nil {
		t.Fatal(err)
	}
	reversed := make([]Target, len(ts))
	for i, x := range ts {
		reversed[len(ts)-1-i] = x
	}
	for _, in := range [][]Target{ts, reversed} {
		got, err := Place(in, 3)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("placement differs between runs or input orders:\n%v\n%v", got, want)
		}
	}
}

// TestHeadsAndTailsBalanced: heads take client writes and tails commit
// first; each node gets its share of both roles.
func TestHeadsAndTailsBalanced(t *testing.T) {
	ts, nodeOf := grid(12, 10) // 40 chains: 3 or 4 heads and tails per node
	chains, err := Place(ts, 3)
	if err != nil {
		t.Fatal(err)
	}
	checkValid(t, chains, ts, nodeOf, 3)
	heads, tails := map[uint32]int{}, map[uint32]int{}
	for _, c := range chains {
		heads[nodeOf[c[0]]]++
		tails[nodeOf[c[len(c)-1]]]++
	}
	for n := uint32(1); n <= 12; n++ {
		if heads[n] < 3 || heads[n] > 4 || tails[n] < 3 || tails[n] > 4 {
			t.Fatalf("node %d: %d heads, %d tails; want 3-4 of each (heads %v, tails %v)", n, heads[n], tails[n], heads, tails)
		}
	}
}

// TestUnevenClusterStaysValid: nodes of different sizes, where the local
// search must keep every node's target count and failure domains.
func TestUnevenClusterStaysValid(t *testing.T) {
	var ts []Target
	nodeOf := map[uint64]uint32{}
	for n := uint32(1); n <= 9; n++ {
		for i := uint32(0); i < 2+n%4*3; i++ {
			id := uint64(n)*100 + uint64(i)
			ts = append(ts, Target{id, n})
			nodeOf[id] = n
		}
	}
	for len(ts)%3 != 0 {
		ts = ts[:len(ts)-1]
	}
	for _, r := range []int{2, 3} {
		if len(ts)%r != 0 {
			continue
		}
		chains, err := Place(ts, r)
		if err != nil {
			t.Fatal(err)
		}
		checkValid(t, chains, ts, nodeOf, r)
	}
}
