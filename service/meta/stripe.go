package meta

import (
	"context"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/routing"
)

// Striping (docs/client.md, "Where a chunk lives").
//
// Meta gives every file a Layout: a chain table, a chunk size, a stripe
// size S and a chain range start B (meta already capped S at the table's
// chain count n and took B modulo n), plus a random shuffle seed. The file
// uses the S consecutive table chains starting at B, wrapping around:
// stripe slot k is chain table.chains[(B+k) % n]. Chunk i goes to slot
// perm[i % S], where perm is a permutation of 0..S-1 drawn from the seed,
// so that files with the same range do not all put chunk 0 on the same
// chain. The whole mapping is these two functions; everything else (the
// client's data path, the storage-backed ChunkStore in
// service/meta/chunkstore) calls them, through LayoutChains.

// StripeChains returns the chains a file with layout l uses, indexed by
// chunk index modulo len(result): chunk i lives on result[i % len(result)].
// tableChains is the chain table's chain list from routing.
func StripeChains(tableChains []uint32, l Layout) ([]uint32, error) {
	n := len(tableChains)
	if n == 0 {
		return nil, errcode.New(errcode.Unavailable, "chain table %d has no chains in routing", l.ChainTable)
	}
	if l.ChunkSize == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "layout of chain table %d has chunk size 0", l.ChainTable)
	}
	s := int(max(l.StripeSize, 1))
	if s > n {
		s = n // meta caps it too; a table that shrank must not index out of range
	}
	perm := stripePerm(s, l.Seed)
	out := make([]uint32, s)
	for slot := range s {
		out[slot] = tableChains[(int(l.ChainBegin%uint32(n))+perm[slot])%n]
	}
	return out, nil
}

// RoutingView is the part of a routing cache (mgmtdclient.Cache) that
// LayoutChains uses.
type RoutingView interface {
	Current() *routing.Routing
	Refresh(ctx context.Context) error
}

// LayoutChains resolves a layout's stripe chains from a routing cache,
// refreshing once when the table is not known yet (a table created a
// moment ago may not have reached the watch stream).
func LayoutChains(ctx context.Context, cache RoutingView, l Layout) ([]uint32, error) {
	r := cache.Current()
	if r == nil {
		if err := cache.Refresh(ctx); err != nil {
			return nil, errcode.New(errcode.Unavailable, "no routing info from mgmtd: %v", err)
		}
		r = cache.Current()
	}
	t, ok := r.Table(l.ChainTable)
	if !ok {
		if err := cache.Refresh(ctx); err == nil {
			r = cache.Current()
			t, ok = r.Table(l.ChainTable)
		}
	}
	if !ok {
		return nil, errcode.New(errcode.Unavailable, "chain table %d is not in routing v%d (create it with `emberfs admin create-chain-table`)", l.ChainTable, r.Version())
	}
	return StripeChains(t.ChainIds, l)
}

// ChunkChain is the chain of chunk index of a file whose stripe chains are
// chains (from StripeChains).
func ChunkChain(chains []uint32, index uint32) uint32 {
	return chains[int(index%uint32(len(chains)))]
}

// stripePerm is a Fisher-Yates shuffle of 0..s-1 driven by splitmix64 of
// seed. It is written out here (not math/rand) because the mapping is
// persistent: every client version must compute the same chains forever.
func stripePerm(s int, seed uint64) []int {
	p := make([]int, s)
	for i := range p {
		p[i] = i
	}
	x := seed
	for i := s - 1; i > 0; i-- {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		j := int(z % uint64(i+1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}
