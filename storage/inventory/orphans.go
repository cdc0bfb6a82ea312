package inventory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
)

// Checker finds inodes that have chunks in storage but no file in the
// namespace. Its OrphanChunks method is meta.FsckOptions.OrphanChunks.
//
// fsck takes its namespace snapshot (time T0) before storage is listed
// (T1), so a file created after T0 may have chunks at T1 without being in
// the live set. Check therefore confirms every candidate twice:
//
//  1. after the listing, Exists re-reads the candidates in the namespace
//     (T2): one that exists now as an inode or as a removal still queued
//     for chunk cleanup is dropped;
//  2. the targets that held the remaining candidates are listed again
//     (T3): a candidate whose chunks are gone is dropped. This covers a
//     file created after T0 and removed, chunks and all, before T2 (the
//     collector removes the chunks before it clears the queue entry).
//
// Inode ids are never reused, so a candidate that is absent from the
// namespace at T2 and still has chunks at T3 is a real orphan: chunks
// written after their file was removed, a removal that missed a replica, or
// chunks never recorded in the namespace. Without Exists only step 2 runs,
// which is sound only on a quiet cluster (no creates while fsck runs).
//
// A target that was offline while its file was removed keeps that file's
// chunks until it resyncs (the sync removes them); fsck reports them
// meanwhile, which is true but transient.
type Checker struct {
	Cache *mgmtdclient.Cache
	Token string
	// Exists returns which of ids exist in the namespace now, as a file or
	// as a removal still queued for chunk cleanup. nil: no re-check.
	Exists func(ctx context.Context, ids []uint64) (map[uint64]bool, error)

	mu   sync.Mutex
	last *Result
}

// Result is the outcome of one Check.
type Result struct {
	// Orphans maps each inode with chunks but no file to the sorted targets
	// still holding its chunks.
	Orphans map[uint64][]uint64
	// Candidates is how many inodes of the first listing were not live;
	// ExistNow of them were found in the namespace on the re-read and
	// Vanished had no chunks left on the second listing.
	Candidates, ExistNow, Vanished int
	// Unlisted are targets that could not be listed (either pass): chunks
	// there were not checked.
	Unlisted map[uint64]error
	// Listed is how many targets the first listing covered.
	Listed int
}

// OrphanIDs returns the orphan inode ids, sorted.
func (r *Result) OrphanIDs() []uint64 {
	ids := make([]uint64, 0, len(r.Orphans))
	for id := range r.Orphans {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Check lists every target and returns the inodes with chunks that are not
// in live and that survive the re-checks described on Checker.
func (c *Checker) Check(ctx context.Context, live map[uint64]bool) (*Result, error) {
	if c.Cache == nil {
		return nil, fmt.Errorf("inventory: Checker needs a routing cache")
	}
	first, err := List(ctx, c.Cache, c.Token, nil)
	if err != nil {
		return nil, err
	}
	res := &Result{Orphans: map[uint64][]uint64{}, Unlisted: first.Failed, Listed: len(first.Listed)}
	var cand []uint64
	for ino := range first.Inodes {
		if !live[ino] {
			cand = append(cand, ino)
		}
	}
	sort.Slice(cand, func(i, j int) bool { return cand[i] < cand[j] })
	res.Candidates = len(cand)
	if len(cand) == 0 {
		return res, nil
	}

	if c.Exists != nil {
		exists, err := c.Exists(ctx, cand)
		if err != nil {
			return nil, fmt.Errorf("inventory: re-reading %d candidate inode(s) in the namespace: %w", len(cand), err)
		}
		kept := cand[:0]
		for _, ino := range cand {
			if exists[ino] {
				res.ExistNow++
			} else {
				kept = append(kept, ino)
			}
		}
		cand = kept
		if len(cand) == 0 {
			return res, nil
		}
	}

	targetSet := map[uint64]bool{}
	for _, ino := range cand {
		for _, t := range first.Inodes[ino] {
			targetSet[t] = true
		}
	}
	second, err := List(ctx, c.Cache, c.Token, slices.Sorted(maps.Keys(targetSet)))
	if err != nil {
		return nil, err
	}
	for t, e := range second.Failed {
		res.Unlisted[t] = e
	}
	for _, ino := range cand {
		// A target that failed the second listing keeps its first-listing
		// evidence: the check never hides chunks it could not re-examine.
		ts := map[uint64]bool{}
		for _, t := range second.Inodes[ino] {
			ts[t] = true
		}
		for _, t := range first.Inodes[ino] {
			if second.Failed[t] != nil {
				ts[t] = true
			}
		}
		if len(ts) == 0 {
			res.Vanished++
			continue
		}
		res.Orphans[ino] = slices.Sorted(maps.Keys(ts))
	}
	return res, nil
}

// OrphanChunks runs Check and returns the orphan ids (the hook of
// meta.FsckOptions); the full result is then available from Last.
func (c *Checker) OrphanChunks(ctx context.Context, live map[uint64]bool) ([]uint64, error) {
	res, err := c.Check(ctx, live)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.last = res
	c.mu.Unlock()
	return res.OrphanIDs(), nil
}

// Last is the result of the latest OrphanChunks call (nil before one).
func (c *Checker) Last() *Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}
