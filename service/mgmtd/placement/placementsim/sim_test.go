package placementsim

import (
	"math"
	"testing"

	"github.com/emberfs/emberfs/service/mgmtd/placement"
	"github.com/emberfs/emberfs/service/mgmtd/statemachine"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// nodeTable turns chains of node ids into target chains (target n*1000+k
// is node n's k-th target) and the map Measure wants.
func nodeTable(chains [][]uint32) ([][]uint64, map[uint64]uint32) {
	next := map[uint32]uint64{}
	nodeOf := map[uint64]uint32{}
	var out [][]uint64
	for _, c := range chains {
		var ids []uint64
		for _, n := range c {
			next[n]++
			id := uint64(n)*1000 + next[n]
			nodeOf[id] = n
			ids = append(ids, id)
		}
		out = append(out, ids)
	}
	return out, nodeOf
}

// TestMeasureByHand checks the model on a table small enough to work out
// on paper: 6 nodes in two fixed groups, each group holding two chains.
func TestMeasureByHand(t *testing.T) {
	chains, nodeOf := nodeTable([][]uint32{{1, 2, 3}, {4, 5, 6}, {1, 2, 3}, {4, 5, 6}})
	res, err := Measure(Config{Nodes: 6, TargetsPerNode: 2, Replicas: 3}, chains, nodeOf)
	if err != nil {
		t.Fatal(err)
	}
	// Node 1 fails: both its chains are recovered by node 3 (the last
	// survivor), 2 units over 5 nodes: max 2 / mean 0.4 = 5. At best the
	// 2 units go to two nodes: 1 / 0.4 = 2.5.
	if !near(res.Recovery1.Worst, 5) || !near(res.Recovery1.Best, 2.5) {
		t.Errorf("Recovery1 = %+v, want 5 (best 2.5)", res.Recovery1)
	}
	// Nodes 1 and 2 fail: each chain of the group costs node 3 one copy
	// (the second returning replica syncs from the first): 2 units over 4
	// nodes, max 2 / mean 0.5 = 4.
	if !near(res.Recovery2.Worst, 4) {
		t.Errorf("Recovery2 = %+v, want 4", res.Recovery2)
	}
	// Node 1 down: nodes 2 and 3 serve its two chains alone (1 each), the
	// rest 2/3 each; total 4 over 5 nodes, max 1 / mean 0.8 = 1.25.
	if !near(res.Read1.Worst, 1.25) {
		t.Errorf("Read1 = %+v, want 1.25", res.Read1)
	}
	if res.MaxShared != 2 || res.MinPartners != 2 || res.LostChains2 != 0 || res.Chains != 4 {
		t.Errorf("result %+v: want 2 shared, 2 partners, 0 lost, 4 chains", res)
	}

	// Two replicas: nodes 1 and 2 down lose chain {1,2} outright.
	chains, nodeOf = nodeTable([][]uint32{{1, 2}, {2, 3}, {3, 1}})
	res, err = Measure(Config{Nodes: 3, TargetsPerNode: 2, Replicas: 2}, chains, nodeOf)
	if err != nil {
		t.Fatal(err)
	}
	if res.LostChains2 != 1 {
		t.Errorf("LostChains2 = %d, want 1", res.LostChains2)
	}
}

func TestMeasureRejectsBadInput(t *testing.T) {
	chains, nodeOf := nodeTable([][]uint32{{1, 2, 7}})
	if _, err := Measure(Config{Nodes: 3, TargetsPerNode: 1, Replicas: 3}, chains, nodeOf); err == nil {
		t.Fatal("a target on node 7 of 3 was accepted")
	}
	if _, err := Measure(Config{Nodes: 2, TargetsPerNode: 1, Replicas: 2}, nil, nil); err == nil {
		t.Fatal("2 nodes accepted; two failures need a third")
	}
}

// TestSourceIsTheSyncPredecessor checks the model's recovery source
// against mgmtd's real state machine: fail one or two targets of a
// 3-replica chain, bring them back, and the first target to sync must
// be synced by the node source() names.
func TestSourceIsTheSyncPredecessor(t *testing.T) {
	nodes := []uint32{11, 12, 13} // target i+1 is on nodes[i]
	for _, down := range [][]int{{0}, {1}, {2}, {0, 1}, {0, 2}, {1, 2}} {
		chain := make([]statemachine.Target, 3)
		for i := range chain {
			chain[i] = statemachine.Target{ID: uint64(i + 1), Public: statemachine.Serving, Local: statemachine.UpToDate}
		}
		setLocal := func(l mgmtdpb.LocalState) {
			for _, d := range down {
				for i := range chain {
					if chain[i].ID == uint64(d+1) {
						chain[i].Local = l
					}
				}
			}
		}
		scan := func() {
			for range 5 {
				chain, _ = statemachine.UpdateChain(chain)
			}
		}
		setLocal(statemachine.LocalOffline)
		scan()
		setLocal(statemachine.Online)
		var syncedBy uint64
		for range 5 {
			chain, _ = statemachine.UpdateChain(chain)
			for i, tg := range chain {
				if tg.Public == statemachine.Syncing {
					syncedBy = chain[i-1].ID
				}
			}
			if syncedBy != 0 {
				break
			}
		}
		if syncedBy == 0 {
			t.Fatalf("down %v: no target started syncing: %+v", down, chain)
		}
		want, ok := source(nodes, func(n uint32) bool {
			for _, d := range down {
				if nodes[d] == n {
					return true
				}
			}
			return false
		})
		if !ok || nodes[syncedBy-1] != want {
			t.Errorf("down %v: the state machine syncs from node %d, the model says %d", down, nodes[syncedBy-1], want)
		}
	}
}

// checkTable fails unless chains place every target of cfg once, with no
// two replicas of a chain on one node.
func checkTable(t *testing.T, cfg Config, chains [][]uint64) {
	t.Helper()
	nodeOf := nodeOf(cfg)
	used := map[uint64]bool{}
	for _, c := range chains {
		if len(c) != cfg.Replicas {
			t.Fatalf("%+v: chain %v has %d targets", cfg, c, len(c))
		}
		on := map[uint32]bool{}
		for _, id := range c {
			if used[id] || on[nodeOf[id]] {
				t.Fatalf("%+v: chain %v reuses target %d or its node", cfg, c, id)
			}
			used[id], on[nodeOf[id]] = true, true
		}
	}
	if len(used) != cfg.Nodes*cfg.TargetsPerNode {
		t.Fatalf("%+v: placed %d targets of %d", cfg, len(used), cfg.Nodes*cfg.TargetsPerNode)
	}
}

// TestPlaceSpreadsRecovery: for each shape, mgmtd's placement keeps
// failure domains, spreads a failed node's recovery as evenly as any
// placement can (the ideal bound), never does worse than the greedy pass
// alone on any measure, and beats it where the greedy pass fell short.
func TestPlaceSpreadsRecovery(t *testing.T) {
	for _, cfg := range Configs([]int{6, 12, 24, 48}, []int{10, 20}, []int{2, 3}) {
		chains, err := placement.Place(Grid(cfg), cfg.Replicas)
		if err != nil {
			t.Fatal(err)
		}
		checkTable(t, cfg, chains)
		got, err := Measure(cfg, chains, nodeOf(cfg))
		if err != nil {
			t.Fatal(err)
		}
		greedy, err := Run(cfg, placement.PlaceGreedy)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v: recovery %v (greedy %v), 2 down %v (greedy %v), reads %v (greedy %v)", cfg,
			got.Recovery1, greedy.Recovery1.Worst, got.Recovery2, greedy.Recovery2.Worst, got.Read1, greedy.Read1.Worst)
		if !near(got.Recovery1.Worst, got.Recovery1.Best) {
			t.Errorf("%+v: recovery after one failure %v, want the ideal", cfg, got.Recovery1)
		}
		if got.Recovery2.Worst > greedy.Recovery2.Worst+1e-9 || got.Read1.Worst > greedy.Read1.Worst+1e-9 {
			t.Errorf("%+v: worse than greedy: %+v vs %+v", cfg, got, greedy)
		}
		if got.LostChains2 > greedy.LostChains2 {
			t.Errorf("%+v: two failures lose %d chains, greedy %d", cfg, got.LostChains2, greedy.LostChains2)
		}
	}
}
