package service_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
)

const block = 4096

// blockOf is writer w's i-th block: a header (w, i) and filler, so a
// reader can tell which write a block came from.
func blockOf(w, i int) []byte {
	b := pattern(byte(w*31+i), block)
	binary.LittleEndian.PutUint32(b, uint32(w))
	binary.LittleEndian.PutUint32(b[4:], uint32(i))
	return b
}

func seqOf(t *testing.T, b []byte, w int) int {
	t.Helper()
	if len(b) < block {
		return 0
	}
	if got := int(binary.LittleEndian.Uint32(b)); got != w {
		if got == 0 && binary.LittleEndian.Uint32(b[4:]) == 0 {
			return 0
		}
		t.Errorf("block of writer %d holds writer %d's data", w, got)
		return -1
	}
	i := int(binary.LittleEndian.Uint32(b[4:]))
	mustEqual(t, fmt.Sprintf("block %d of writer %d", i, w), b, blockOf(w, i))
	return i
}

// TestConcurrentWritersSameAndDifferentChunks: writers share one chunk
// (each its own block) or own a chunk each; readers hammer every replica.
// Every read of a whole chunk must match the checksum of the committed
// version it names (no pending or torn data), an acknowledged write must
// be visible to any later read on any replica, and at the end every
// replica holds the same version and checksum.
func TestConcurrentWritersSameAndDifferentChunks(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	chain := chains[0]
	ctx := context.Background()
	shared := chunkengine.ChunkID{Inode: 1, Index: 0}
	const sharedWriters, ownWriters, writes = 4, 3, 25
	var wg sync.WaitGroup
	var stop atomic.Bool
	var reads atomic.Int64
	targets := c.Current().ServingTargets(chain)

	// Readers: whole-chunk reads from a fixed replica each.
	for _, target := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunkSize)
			lastVer := uint64(0)
			for !stop.Load() {
				res, err := cl.Read(ctx, chain, shared, 0, buf, storageclient.ReadOptions{Target: target})
				if err != nil {
					continue // not yet created, or pending past the wait
				}
				if got := crc32c.Checksum(buf[:res.N]); got != res.Checksum {
					t.Errorf("target %d served version %d with content CRC %08x, committed CRC %08x", target, res.Version, got, res.Checksum)
					return
				}
				if res.Version < lastVer {
					t.Errorf("target %d went back from version %d to %d", target, lastVer, res.Version)
				}
				lastVer = res.Version
				reads.Add(1)
			}
		}()
	}
	var writers sync.WaitGroup
	for w := 1; w <= sharedWriters; w++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			buf := make([]byte, block)
			for i := 1; i <= writes; i++ {
				if _, err := cl.Write(ctx, chain, shared, chunkSize, uint32(w*block), blockOf(w, i)); err != nil {
					t.Errorf("writer %d write %d: %v", w, i, err)
					return
				}
				// Read-your-write on a random replica.
				target := targets[rng.IntN(len(targets))]
				res, err := cl.Read(ctx, chain, shared, uint32(w*block), buf, storageclient.ReadOptions{Target: target})
				if errcode.Is(err, errcode.NotCommitted) {
					// Other writers can keep this replica's copy pending
					// for longer than the client waits (a loaded machine).
					// The committed version still holds our acknowledged
					// write: the ack passed through every replica.
					res, err = cl.Read(ctx, chain, shared, uint32(w*block), buf, storageclient.ReadOptions{Target: target, Relaxed: true})
				}
				if err != nil {
					t.Errorf("writer %d read after write %d from %d: %v", w, i, target, err)
					return
				}
				if got := seqOf(t, buf[:res.N], w); got < i {
					t.Errorf("writer %d: write %d acknowledged, target %d then served write %d", w, i, target, got)
					return
				}
			}
		}()
	}
	for w := 1; w <= ownWriters; w++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			id := chunkengine.ChunkID{Inode: 100 + uint64(w)}
			for i := 0; i < writes && i*block < chunkSize; i++ {
				if _, err := cl.Write(ctx, chain, id, chunkSize, uint32(i*block), blockOf(w, i+1)); err != nil {
					t.Errorf("own writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	writers.Wait()
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d consistent whole-chunk reads during the writes", reads.Load())

	// Final contents: each shared block holds its writer's last write.
	buf := make([]byte, chunkSize)
	for _, target := range targets {
		_, err := cl.Read(ctx, chain, shared, 0, buf, storageclient.ReadOptions{Target: target})
		if err != nil {
			t.Fatal(err)
		}
		for w := 1; w <= sharedWriters; w++ {
			if got := seqOf(t, buf[w*block:(w+1)*block], w); got != writes {
				t.Fatalf("target %d: block of writer %d holds write %d, want %d", target, w, got, writes)
			}
		}
	}
	ids := []chunkengine.ChunkID{shared}
	for w := 1; w <= ownWriters; w++ {
		ids = append(ids, chunkengine.ChunkID{Inode: 100 + uint64(w)})
	}
	for _, id := range ids {
		states := replicaStates(c, 3, id)
		ref := states[1]
		if ref.Version == 0 {
			t.Fatalf("chunk %s missing on node 1", id)
		}
		for n, m := range states {
			if m.Version != ref.Version || m.Checksum != ref.Checksum || m.Length != ref.Length || m.PendingVersion != 0 {
				t.Fatalf("chunk %s differs: node %d %+v, node 1 %+v", id, n, m, ref)
			}
		}
	}
	if want, got := uint64(sharedWriters*writes), replicaStates(c, 3, shared)[1].Version; got != want {
		t.Fatalf("shared chunk at version %d, want %d (one per write, no duplicates)", got, want)
	}
}
