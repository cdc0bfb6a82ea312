// Package chunkstore is the storage-backed meta.ChunkStore that meta
// servers use: it finds a file's chunks through routing and the file's
// layout, and queries, truncates and removes them through the storage
// client.
package chunkstore

import (
	"context"

	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/storage/storageclient"
	"golang.org/x/sync/errgroup"
)

// Store is the storage-backed meta.ChunkStore: meta servers use it to
// finalize file lengths (fsync, close), to cut chunks on truncate and to
// delete the chunks of removed files.
type Store struct {
	cache *mgmtdclient.Cache
	sc    *storageclient.Client
	// parallel bounds concurrent chunk updates of one call.
	parallel int
}

var _ meta.ChunkStore = (*Store)(nil)

// New returns a Store over a routing cache and a storage client (both
// owned by the caller).
func New(cache *mgmtdclient.Cache, sc *storageclient.Client) *Store {
	return &Store{cache: cache, sc: sc, parallel: 16}
}

// QueryLength is the file length storage holds: the end of the
// highest-index chunk over the file's chains.
func (s *Store) QueryLength(ctx context.Context, inode uint64, l meta.Layout) (uint64, error) {
	chains, err := meta.LayoutChains(ctx, s.cache, l)
	if err != nil {
		return 0, err
	}
	last, found, err := s.sc.QueryLastChunk(ctx, inode, uniqueChains(chains))
	if err != nil || !found {
		return 0, err
	}
	return uint64(last.Index)*uint64(l.ChunkSize) + uint64(last.Length), nil
}

// TruncateChunks makes storage hold no byte at or past length: chunks
// wholly past it are removed and the chunk it falls in is truncated.
// Idempotent; a chunk missing (a sparse hole) is fine.
func (s *Store) TruncateChunks(ctx context.Context, inode uint64, l meta.Layout, length uint64) error {
	chains, err := meta.LayoutChains(ctx, s.cache, l)
	if err != nil {
		return err
	}
	if length == 0 {
		_, err := s.sc.RemoveInode(ctx, inode, uniqueChains(chains))
		return err
	}
	last, found, err := s.sc.QueryLastChunk(ctx, inode, uniqueChains(chains))
	if err != nil || !found {
		return err
	}
	cs := uint64(l.ChunkSize)
	keep := uint32(length / cs) // first chunk index that may lose bytes
	rem := uint32(length % cs)
	if last.Index < keep || (last.Index == keep && last.Length <= rem) {
		return nil // nothing stored past length
	}
	first := keep + 1 // first index removed whole
	if rem == 0 {
		first = keep
	}
	return s.forEach(ctx, first, last.Index, rem != 0, func(ctx context.Context, idx uint32) error {
		id := storageclient.ChunkID{Inode: inode, Index: idx}
		chain := meta.ChunkChain(chains, idx)
		if idx == keep && rem != 0 {
			_, err := s.sc.Truncate(ctx, chain, id, l.ChunkSize, rem)
			return err
		}
		return s.sc.RemoveChunk(ctx, chain, id)
	}, keep)
}

// forEach runs fn on indexes first..last (and on extra when withExtra),
// s.parallel at a time, returning the first error.
func (s *Store) forEach(ctx context.Context, first, last uint32, withExtra bool, fn func(context.Context, uint32) error, extra uint32) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(s.parallel)
	run := func(idx uint32) { g.Go(func() error { return fn(ctx, idx) }) }
	if withExtra {
		run(extra)
	}
	for idx := first; idx <= last && ctx.Err() == nil; idx++ {
		run(idx)
		if idx == ^uint32(0) {
			break
		}
	}
	return g.Wait()
}

// RemoveChunks deletes every chunk of a removed file.
func (s *Store) RemoveChunks(ctx context.Context, inode uint64, l meta.Layout) error {
	chains, err := meta.LayoutChains(ctx, s.cache, l)
	if err != nil {
		return err
	}
	_, err = s.sc.RemoveInode(ctx, inode, uniqueChains(chains))
	return err
}

func uniqueChains(chains []uint32) []uint32 {
	seen := make(map[uint32]bool, len(chains))
	out := make([]uint32, 0, len(chains))
	for _, c := range chains {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// Capacity is the usable space of the cluster for statfs: every target's
// capacity and free bytes (as its storage service last reported them to
// mgmtd), divided by the length of its chain, since each byte of a file
// is stored once per replica. Targets that share one local file system
// (as in `emberfs up`) each report that file system whole, so such a
// setup overstates the total.
func (s *Store) Capacity(ctx context.Context) (total, free uint64, err error) {
	r := s.cache.Current()
	if r == nil {
		if err := s.cache.Refresh(ctx); err != nil {
			return 0, 0, err
		}
		r = s.cache.Current()
	}
	for _, t := range r.Info.GetTargets() {
		c, ok := r.Chain(t.GetChainId())
		if !ok || len(c.GetTargets()) == 0 {
			continue
		}
		n := uint64(len(c.GetTargets()))
		total += t.GetCapacityBytes() / n
		free += t.GetFreeBytes() / n
	}
	return total, free, nil
}

var _ meta.CapacityReporter = (*Store)(nil)
