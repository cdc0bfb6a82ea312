package service_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// nodeOf maps a target id to its node (ids are node*100 + index).
func nodeOf(target uint64) int { return int(target / 100) }

// TestStopMiddleThenHeadDuringWrites stops the middle target, then the
// head, while writers stream appends; every acknowledged write must
// survive, the chain keeps taking writes, and both targets come back,
// resync and end identical to the survivor.
func TestStopMiddleThenHeadDuringWrites(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	chain := chains[0]
	order := c.Current().ServingTargets(chain)
	head, middle := nodeOf(order[0]), nodeOf(order[1])

	acked := streamWrites(t, cl, chain, 4, func(phase func(string)) {
		time.Sleep(150 * time.Millisecond)
		phase("stop middle")
		c.StopStorage(middle)
		waitServing(t, c, chain, 2)
		time.Sleep(150 * time.Millisecond)
		phase("stop head")
		c.StopStorage(head)
		waitServing(t, c, chain, 1)
		time.Sleep(150 * time.Millisecond)
		phase("restart both")
		if err := c.StartStorage(middle); err != nil {
			t.Error(err)
		}
		if err := c.StartStorage(head); err != nil {
			t.Error(err)
		}
		waitServing(t, c, chain, 3)
		time.Sleep(150 * time.Millisecond)
	})
	checkAcked(t, c, cl, chain, acked)
	checkReplicasEqual(t, c, 3, acked)
}

func waitServing(t *testing.T, c *localcluster.Cluster, chain uint32, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	if _, err := c.WaitRouting(ctx, func(r *routing.Routing) bool { return len(r.ServingTargets(chain)) == n }); err != nil {
		t.Fatalf("chain %d never had %d serving targets: %v", chain, n, err)
	}
}

// streamWrites runs writers appending blocks to a chunk each while
// disrupt runs; it returns, per chunk, the blocks acknowledged.
func streamWrites(t *testing.T, cl *storageclient.Client, chain uint32, writers int, disrupt func(phase func(string))) map[chunkengine.ChunkID]int {
	t.Helper()
	var stop atomic.Bool
	var mu sync.Mutex
	acked := map[chunkengine.ChunkID]int{}
	var total atomic.Int64
	var wg sync.WaitGroup
	for w := 1; w <= writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; !stop.Load(); k++ {
				i := k % (chunkSize / block)
				id := chunkengine.ChunkID{Inode: 500 + uint64(w), Index: uint32(k / (chunkSize / block))}
				if _, err := cl.Write(context.Background(), chain, id, chunkSize, uint32(i*block), blockOf(w, i+1)); err != nil {
					t.Errorf("writer %d chunk %s block %d: %v", w, id, i, err)
					return
				}
				mu.Lock()
				acked[id] = i + 1
				mu.Unlock()
				total.Add(1)
			}
		}()
	}
	disrupt(func(p string) { t.Logf("%s after %d acknowledged writes", p, total.Load()) })
	stop.Store(true)
	wg.Wait()
	return acked
}

// checkAcked reads every acknowledged block back from every serving replica.
func checkAcked(t *testing.T, c *localcluster.Cluster, cl *storageclient.Client, chain uint32, acked map[chunkengine.ChunkID]int) {
	t.Helper()
	buf := make([]byte, chunkSize)
	for id, n := range acked {
		w := int(id.Inode - 500)
		for _, target := range c.Current().ServingTargets(chain) {
			res, err := cl.Read(context.Background(), chain, id, 0, buf, storageclient.ReadOptions{Target: target})
			if err != nil {
				t.Fatalf("read %s from %d: %v", id, target, err)
			}
			if res.N < n*block {
				t.Fatalf("target %d: chunk %s has %d bytes, %d blocks were acknowledged", target, id, res.N, n)
			}
			for i := 0; i < n; i++ {
				mustEqual(t, "acknowledged block", buf[i*block:(i+1)*block], blockOf(w, i+1))
			}
		}
	}
}

func checkReplicasEqual(t *testing.T, c *localcluster.Cluster, nodes int, acked map[chunkengine.ChunkID]int) {
	t.Helper()
	for id := range acked {
		states := replicaStates(c, nodes, id)
		ref := states[1]
		for n, m := range states {
			if m.Version != ref.Version || m.Checksum != ref.Checksum || m.Length != ref.Length || m.PendingVersion != 0 || m.Corrupt {
				t.Fatalf("chunk %s differs after resync: node %d %+v, node 1 %+v", id, n, m, ref)
			}
		}
	}
}
