package service_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
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
	// The replica of a chunk comes from a hash of the (random) client id
	// and the chunk: with 64 chunks the chance that one of 3 replicas gets
	// none is 3 (2/3)^64, about 2e-11 (with 24 it was 2e-4, a flake
	// every few thousand runs).
	const chunks, pieces, piece = 64, 4, 16 << 10
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

// TestChunkReadsFailOverWithinTheCall: the replica a client reads a chunk
// from is fixed per chunk, so when it is down every read of that chunk
// starts there; each must still be answered by another replica within the
// same call (Read and ReadBatch), while mgmtd still lists the stopped
// replica as serving (its failure timeout is an hour here, so routing
// cannot be what moved the reads).
func TestChunkReadsFailOverWithinTheCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	o := localcluster.StorageOnly(t.TempDir(), 3)
	o.FailureTimeout = time.Hour
	c := startStorage(t, ctx, o)
	chains, err := c.CreateChains(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	chain := chains[0]
	cl := c.StorageClient(storageclient.Config{})
	defer cl.Close()
	const chunks, size = 12, 32 << 10
	id := func(i int) chunkengine.ChunkID { return chunkengine.ChunkID{Inode: 78, Index: uint32(i)} }
	pref := map[int]uint64{}
	buf := make([]byte, size)
	for i := 0; i < chunks; i++ {
		if _, err := cl.Write(ctx, chain, id(i), 1<<20, 0, pattern(byte(i), size)); err != nil {
			t.Fatal(err)
		}
		res, err := cl.Read(ctx, chain, id(i), 0, buf, storageclient.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pref[i] = res.Target
	}
	victim := pref[0]
	c.StopStorage(nodeOf(victim))

	for i := 0; i < chunks; i++ {
		res, err := cl.Read(ctx, chain, id(i), 0, buf, storageclient.ReadOptions{})
		if err != nil {
			t.Fatalf("read of chunk %d (preferred replica %d, stopped: %v): %v", i, pref[i], pref[i] == victim, err)
		}
		if res.Target == victim {
			t.Fatalf("chunk %d was answered by the stopped replica %d", i, victim)
		}
		mustEqual(t, "chunk read after failover", buf[:res.N], pattern(byte(i), size))
	}
	reqs := make([]storageclient.ReadReq, chunks)
	for i := range reqs {
		reqs[i] = storageclient.ReadReq{Chain: chain, Chunk: id(i), Buf: make([]byte, size)}
	}
	for i, r := range cl.ReadBatch(ctx, reqs, storageclient.ReadOptions{}) {
		if r.Err != nil || r.Target == victim {
			t.Fatalf("batch read of chunk %d: answered by %d (stopped: %d): %v", i, r.Target, victim, r.Err)
		}
		mustEqual(t, "batch read after failover", reqs[i].Buf[:r.N], pattern(byte(i), size))
	}
	if !slices.Contains(c.Current().ServingTargets(chain), victim) {
		t.Fatalf("mgmtd no longer lists the stopped replica %d as serving: the reads did not test failover within the call", victim)
	}
}
