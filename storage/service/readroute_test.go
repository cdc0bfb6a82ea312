package service_test

import (
	"context"
	"testing"

	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// TestChunkReadsStayOnOneReplica: a client reads every piece of one chunk
// from the same replica (that replica read the chunk from disk and
// verified it once; rotating per request made each replica do it), while
// different chunks spread over all three. With SpreadReads, successive
// reads of one chunk go to every replica in turn.
func TestChunkReadsStayOnOneReplica(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	chain := chains[0]
	ctx := context.Background()
	const chunks, pieces, piece = 24, 4, 16 << 10
	data := make([]byte, pieces*piece)
	for i := uint32(0); i < chunks; i++ {
		if _, err := cl.Write(ctx, chain, chunkengine.ChunkID{Inode: 77, Index: i}, 1<<20, 0, data); err != nil {
			t.Fatal(err)
		}
	}
	readTargets := func(cl *storageclient.Client, i uint32) map[uint64]bool {
		seen := map[uint64]bool{}
		buf := make([]byte, piece)
		for p := 0; p < pieces; p++ {
			res, err := cl.Read(ctx, chain, chunkengine.ChunkID{Inode: 77, Index: i}, uint32(p*piece), buf, storageclient.ReadOptions{})
			if err != nil || res.N != piece {
				t.Fatalf("read chunk %d piece %d: %d bytes, %v", i, p, res.N, err)
			}
			seen[res.Target] = true
		}
		return seen
	}
	all := map[uint64]bool{}
	for i := uint32(0); i < chunks; i++ {
		seen := readTargets(cl, i)
		if len(seen) != 1 {
			t.Fatalf("the %d reads of chunk %d went to replicas %v, want one", pieces, i, seen)
		}
		for tg := range seen {
			all[tg] = true
		}
	}
	if len(all) != 3 {
		t.Fatalf("reads of %d chunks went to replicas %v, want all 3", chunks, all)
	}

	spread := c.StorageClient(storageclient.Config{SpreadReads: true})
	defer spread.Close()
	if seen := readTargets(spread, 0); len(seen) != 3 {
		t.Fatalf("with SpreadReads the %d reads of one chunk went to replicas %v, want all 3", pieces, seen)
	}
}
