// Package inventory lists which inodes have chunks on the storage targets
// of a cluster, through each storage service's DumpChunkMeta control call,
// and finds chunks whose file no longer exists: the "chunks without files"
// check of `emberfs admin fsck` (docs/meta.md, fsck).
package inventory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/storagepb"
	"golang.org/x/sync/errgroup"
)

// Listing is what storage holds at the time of a listing.
type Listing struct {
	// RoutingVersion is the routing version the targets were taken from.
	RoutingVersion uint64
	// Inodes maps every inode with at least one chunk (committed or only a
	// pending create) to the sorted ids of the targets holding any of them.
	Inodes map[uint64][]uint64
	// Listed are the targets whose dump completed, sorted.
	Listed []uint64
	// Failed are the targets that could not be listed (node down, unknown
	// address, target not on the node routing names); their chunks are
	// missing from Inodes.
	Failed map[uint64]error
}

// parallelNodes bounds the storage nodes dumped at once; each dump reads a
// target's whole chunk metadata, so a cluster-wide fsck should not hit
// every node at the same moment.
const parallelNodes = 8

// List dumps the chunk metadata of targets (every target in the routing
// info when targets is nil) and returns the distinct inodes per target. A
// target that cannot be listed is recorded in Failed, not returned as an
// error: the caller decides whether a partial listing is good enough. The
// error is for a missing routing view or a cancelled ctx.
func List(ctx context.Context, cache *mgmtdclient.Cache, token string, targets []uint64) (*Listing, error) {
	r := cache.Current()
	if r == nil {
		if err := cache.Refresh(ctx); err != nil {
			return nil, fmt.Errorf("inventory: no routing info from mgmtd: %w", err)
		}
		r = cache.Current()
	}
	if targets == nil {
		for _, t := range r.Info.GetTargets() {
			targets = append(targets, t.TargetId)
		}
	}
	l := &Listing{RoutingVersion: r.Version(), Inodes: map[uint64][]uint64{}, Failed: map[uint64]error{}}
	byAddr := map[string][]uint64{}
	for _, t := range targets {
		addr, _, err := r.TargetAddress(t)
		if err == nil && addr == "" {
			err = fmt.Errorf("node of target %d has no control address in routing v%d", t, r.Version())
		}
		if err != nil {
			l.Failed[t] = err
			continue
		}
		byAddr[addr] = append(byAddr[addr], t)
	}

	var mu sync.Mutex
	found := map[uint64]map[uint64]bool{} // inode -> targets
	var g errgroup.Group
	g.SetLimit(parallelNodes)
	for addr, ts := range byAddr {
		g.Go(func() error {
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), rpcauth.DialOption(token))
			if err != nil {
				mu.Lock()
				for _, t := range ts {
					l.Failed[t] = fmt.Errorf("dial %s: %w", addr, err)
				}
				mu.Unlock()
				return nil // recorded per target; the other nodes go on
			}
			defer cc.Close()
			cl := storagepb.NewStorageClient(cc)
			for _, t := range ts {
				inodes, err := dumpInodes(ctx, cl, t)
				mu.Lock()
				if err != nil {
					l.Failed[t] = fmt.Errorf("dump chunk metadata of target %d at %s: %w", t, addr, err)
				} else {
					l.Listed = append(l.Listed, t)
					for ino := range inodes {
						if found[ino] == nil {
							found[ino] = map[uint64]bool{}
						}
						found[ino][t] = true
					}
				}
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait() // every failure is recorded per target
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	for ino, ts := range found {
		l.Inodes[ino] = slices.Sorted(maps.Keys(ts))
	}
	sort.Slice(l.Listed, func(i, j int) bool { return l.Listed[i] < l.Listed[j] })
	return l, nil
}

// dumpInodes streams one target's chunk metadata and keeps only the
// distinct inode ids (the dump itself is sorted by chunk id, so an inode's
// chunks are adjacent; a set keeps this independent of that order).
func dumpInodes(ctx context.Context, cl storagepb.StorageClient, target uint64) (map[uint64]bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cl.DumpChunkMeta(ctx, &storagepb.DumpChunkMetaReq{TargetId: target})
	if err != nil {
		return nil, errcode.FromGRPC(err)
	}
	out := map[uint64]bool{}
	for {
		batch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, errcode.FromGRPC(err)
		}
		for _, m := range batch.Chunks {
			out[m.Inode] = true
		}
	}
}
