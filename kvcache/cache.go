// Package kvcache is the Go client of the EmberFS inference KVCache:
// namespaces (a registry in the file system plus a descriptor record on
// each chain) and put/get/exists/longest-prefix of values keyed by
// prefix hashes. A key hashes to a chain and a chunk (storage/kvformat),
// so the hot path talks to storage services only; batches go out as one
// frame per storage target. An optional in-process memory tier holds the
// hottest values. See docs/kvcache.md.
package kvcache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/storageclient"
	"golang.org/x/sync/errgroup"
)

// Options configure an open Cache.
type Options struct {
	// MemoryTierBytes > 0 puts an in-process cache of that many bytes in
	// front of the cluster.
	MemoryTierBytes int64
	// BatchParallel bounds the puts one BatchPutFrom has in flight
	// (default 16).
	BatchParallel int
}

// Cache is an open namespace; safe for concurrent use.
type Cache struct {
	ns     Namespace
	sc     *storageclient.Client
	tier   *memTier
	opts   Options
	bufs   sync.Pool // *[]byte of MaxValueBytes, for Get
	closed atomic.Bool

	hits, misses, tierHits, puts, putBytes, getBytes, removes atomic.Uint64
}

// Open opens namespace name through c (which must outlive the Cache).
func Open(ctx context.Context, c *client.Client, name string, o Options) (*Cache, error) {
	ns, err := Info(ctx, c, name)
	if err != nil {
		return nil, err
	}
	if o.BatchParallel <= 0 {
		o.BatchParallel = 16
	}
	k := &Cache{ns: ns, sc: c.Storage(), opts: o}
	if o.MemoryTierBytes > 0 {
		if k.tier, err = newMemTier(o.MemoryTierBytes); err != nil {
			return nil, err
		}
	}
	size := int(ns.MaxValueBytes)
	k.bufs.New = func() any { b := make([]byte, size); return &b }
	return k, nil
}

// Namespace is the open namespace's registry record.
func (k *Cache) Namespace() Namespace { return k.ns }

// Close releases the memory tier. The client stays open.
func (k *Cache) Close() error {
	if k.closed.CompareAndSwap(false, true) && k.tier != nil {
		k.tier.close()
	}
	return nil
}

func (k *Cache) checkOpen() error {
	if k.closed.Load() {
		return errcode.New(errcode.BadFile, "kvcache namespace %q: the cache is closed", k.ns.Name)
	}
	return nil
}

// ref is where key lives.
func (k *Cache) ref(key []byte) storageclient.KVRef {
	s := kvformat.SlotOf(k.ns.ID, key, len(k.ns.ChainIDs), k.ns.SlotBits)
	return storageclient.KVRef{Chain: k.ns.ChainIDs[s.ChainIndex], Chunk: s.Chunk, Key: key}
}

func (k *Cache) checkKeys(keys [][]byte) error {
	for i, key := range keys {
		if err := kvformat.CheckKey(key); err != nil {
			return fmt.Errorf("key %d of %d: %w", i, len(keys), err)
		}
	}
	return nil
}

// Put stores value under key, replacing any value there. The call returns
// once every replica has committed it; value is not retained (Put and
// PutFrom are the same call: the bytes go to the network straight from
// value, and the memory tier, if any, keeps its own copy).
func (k *Cache) Put(ctx context.Context, key, value []byte) error { return k.PutFrom(ctx, key, value) }

// PutFrom stores value under key, sending it from the caller's slice with
// no copy.
func (k *Cache) PutFrom(ctx context.Context, key, value []byte) error {
	if err := k.checkOpen(); err != nil {
		return err
	}
	if err := kvformat.CheckKey(key); err != nil {
		return err
	}
	if int64(len(value)) > k.ns.MaxValueBytes {
		return errcode.New(errcode.InvalidArgument, "kvcache namespace %q: value of %d bytes is over its max value size of %d bytes",
			k.ns.Name, len(value), k.ns.MaxValueBytes)
	}
	now := time.Now().UnixNano()
	var expires int64
	if k.ns.TTLNanos > 0 {
		expires = now + k.ns.TTLNanos
	}
	h := kvformat.NewHeader(key, value, now, expires)
	var hb [kvformat.MaxHeaderLen]byte
	if err := k.sc.KVPut(ctx, k.ref(key), h.Encode(hb[:0]), value); err != nil {
		if k.tier != nil {
			k.tier.del(key) // the old value may be gone; do not serve it from here
		}
		return fmt.Errorf("kvcache namespace %q: put of key %q: %w", k.ns.Name, key, err)
	}
	k.puts.Add(1)
	k.putBytes.Add(uint64(len(value)))
	if k.tier != nil {
		k.tier.put(key, value, expires, now)
	}
	return nil
}

// Get returns key's value in a new slice; found is false on a miss.
func (k *Cache) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	if err := k.checkOpen(); err != nil {
		return nil, false, err
	}
	if err := kvformat.CheckKey(key); err != nil {
		return nil, false, err
	}
	if v, ok := k.tierLookup(key); ok {
		k.tierHit(len(v))
		return append([]byte(nil), v...), true, nil
	}
	bp := k.bufs.Get().(*[]byte)
	defer k.bufs.Put(bp)
	n, found, err := k.getRemote(ctx, key, *bp)
	if !found || err != nil {
		return nil, false, err
	}
	return append([]byte(nil), (*bp)[:n]...), true, nil
}

// GetInto reads key's value into buf and returns its length; found is
// false on a miss. A value longer than buf fails with OutOfRange naming
// both sizes, and buf is not written.
func (k *Cache) GetInto(ctx context.Context, key, buf []byte) (n int, found bool, err error) {
	if err := k.checkOpen(); err != nil {
		return 0, false, err
	}
	if err := kvformat.CheckKey(key); err != nil {
		return 0, false, err
	}
	if v, ok := k.tierLookup(key); ok {
		if len(v) > len(buf) {
			return 0, false, k.tooSmall(key, len(v), len(buf))
		}
		k.tierHit(len(v))
		return copy(buf, v), true, nil
	}
	return k.getRemote(ctx, key, buf)
}

func (k *Cache) tooSmall(key []byte, need, have int) error {
	return errcode.New(errcode.OutOfRange, "kvcache namespace %q: key %q holds %d bytes, the buffer has room for %d", k.ns.Name, key, need, have)
}

// tierLookup consults the memory tier.
func (k *Cache) tierLookup(key []byte) ([]byte, bool) {
	if k.tier == nil {
		return nil, false
	}
	return k.tier.get(key, time.Now().UnixNano())
}

// tierHit counts a value of n bytes served from the memory tier.
func (k *Cache) tierHit(n int) {
	k.tierHits.Add(1)
	k.hits.Add(1)
	k.getBytes.Add(uint64(n))
}

func (k *Cache) getRemote(ctx context.Context, key, buf []byte) (int, bool, error) {
	h, n, err := k.sc.KVGet(ctx, k.ref(key), buf)
	return k.gotRemote(key, buf, h, n, err)
}

// gotRemote accounts one storage get and fills the tier on a hit.
func (k *Cache) gotRemote(key, buf []byte, h kvformat.Header, n int, err error) (int, bool, error) {
	switch {
	case errcode.Is(err, errcode.NotFound):
		k.misses.Add(1)
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("kvcache namespace %q: get of key %q: %w", k.ns.Name, key, err)
	}
	k.hits.Add(1)
	k.getBytes.Add(uint64(n))
	if k.tier != nil {
		k.tier.put(key, buf[:n], h.Expires, time.Now().UnixNano())
	}
	return n, true, nil
}

// Exists reports, per key, whether a live value is stored under it. Keys
// not in the memory tier go out in one request per storage target.
func (k *Cache) Exists(ctx context.Context, keys [][]byte) ([]bool, error) {
	if err := k.checkOpen(); err != nil {
		return nil, err
	}
	if err := k.checkKeys(keys); err != nil {
		return nil, err
	}
	out := make([]bool, len(keys))
	var refs []storageclient.KVRef
	var idx []int
	now := time.Now().UnixNano()
	for i, key := range keys {
		if k.tier != nil {
			if _, ok := k.tier.get(key, now); ok {
				out[i] = true
				continue
			}
		}
		refs = append(refs, k.ref(key))
		idx = append(idx, i)
	}
	if len(refs) == 0 {
		return out, nil
	}
	found, err := k.sc.KVExists(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("kvcache namespace %q: exists of %d keys: %w", k.ns.Name, len(refs), err)
	}
	if len(found) != len(refs) {
		return nil, errcode.New(errcode.Internal, "kvcache namespace %q: exists answered %d results for %d keys", k.ns.Name, len(found), len(refs))
	}
	for j, i := range idx {
		out[i] = found[j]
	}
	return out, nil
}

// LongestPrefix returns how many leading keys have a live value: the
// number of cached blocks of a request whose keys form a prefix-hash
// chain. It asks every key at once (one request per storage target
// touched), not one round trip per key.
func (k *Cache) LongestPrefix(ctx context.Context, keys [][]byte) (int, error) {
	found, err := k.Exists(ctx, keys)
	if err != nil {
		return 0, err
	}
	for i, ok := range found {
		if !ok {
			return i, nil
		}
	}
	return len(found), nil
}

// Remove deletes key's value (no error if there is none).
func (k *Cache) Remove(ctx context.Context, key []byte) error {
	if err := k.checkOpen(); err != nil {
		return err
	}
	if err := kvformat.CheckKey(key); err != nil {
		return err
	}
	if k.tier != nil {
		k.tier.del(key)
	}
	if err := k.sc.KVRemove(ctx, k.ref(key)); err != nil && !errcode.Is(err, errcode.NotFound) {
		return fmt.Errorf("kvcache namespace %q: remove of key %q: %w", k.ns.Name, key, err)
	}
	k.removes.Add(1)
	return nil
}

// BatchPutFrom stores values[i] under keys[i], Options.BatchParallel puts
// at a time, and returns one error (nil = stored) per key.
func (k *Cache) BatchPutFrom(ctx context.Context, keys, values [][]byte) []error {
	errs := make([]error, len(keys))
	if len(values) != len(keys) {
		err := errcode.New(errcode.InvalidArgument, "kvcache batch put: %d keys but %d values", len(keys), len(values))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var g errgroup.Group
	g.SetLimit(k.opts.BatchParallel)
	for i := range keys {
		g.Go(func() error {
			errs[i] = k.PutFrom(ctx, keys[i], values[i])
			return nil // each key's own error is in errs
		})
	}
	_ = g.Wait()
	return errs
}

// BatchGetInto reads keys[i] into bufs[i]. ns[i] is the value's length, or
// -1 on a miss. Keys not in the memory tier go out as one request per
// storage target, each value landing straight in its buffer. The error is
// the first failure other than a miss (a buffer too small, a storage
// error); the other entries are still filled in.
func (k *Cache) BatchGetInto(ctx context.Context, keys, bufs [][]byte) ([]int, error) {
	if err := k.checkOpen(); err != nil {
		return nil, err
	}
	if len(bufs) != len(keys) {
		return nil, errcode.New(errcode.InvalidArgument, "kvcache batch get: %d keys but %d buffers", len(keys), len(bufs))
	}
	if err := k.checkKeys(keys); err != nil {
		return nil, err
	}
	ns := make([]int, len(keys))
	var first error
	var refs []storageclient.KVRef
	var rbufs [][]byte
	var idx []int
	for i, key := range keys {
		if v, ok := k.tierLookup(key); ok {
			if len(v) > len(bufs[i]) {
				ns[i] = -1
				if first == nil {
					first = k.tooSmall(key, len(v), len(bufs[i]))
				}
				continue
			}
			k.tierHit(len(v))
			ns[i] = copy(bufs[i], v)
			continue
		}
		refs = append(refs, k.ref(key))
		rbufs = append(rbufs, bufs[i])
		idx = append(idx, i)
	}
	if len(refs) == 0 {
		return ns, first
	}
	res := k.sc.KVGetBatch(ctx, refs, rbufs)
	if len(res) != len(refs) {
		return nil, errcode.New(errcode.Internal, "kvcache namespace %q: batch get answered %d results for %d keys", k.ns.Name, len(res), len(refs))
	}
	for j, i := range idx {
		r := res[j]
		n, found, err := k.gotRemote(keys[i], bufs[i], r.Header, r.N, r.Err)
		switch {
		case err != nil:
			ns[i] = -1
			if first == nil {
				first = err
			}
		case !found:
			ns[i] = -1
		default:
			ns[i] = n
		}
	}
	return ns, first
}

// Stats are a namespace's cluster-wide counters plus this client's own.
type Stats struct {
	// Cluster sums the storage side's counters over the namespace's chains.
	Cluster kvformat.Stats
	// Client counts this Cache's own calls: Hits includes TierHits.
	Client ClientStats
}

// ClientStats are one Cache's counters since Open.
type ClientStats struct {
	Hits, Misses, TierHits, Puts, PutBytes, GetBytes, Removes uint64
}

// ClientStats returns this Cache's counters without asking the cluster.
func (k *Cache) ClientStats() ClientStats {
	return ClientStats{Hits: k.hits.Load(), Misses: k.misses.Load(), TierHits: k.tierHits.Load(), Puts: k.puts.Load(),
		PutBytes: k.putBytes.Load(), GetBytes: k.getBytes.Load(), Removes: k.removes.Load()}
}

// Stats returns the cluster's counters for the namespace and this
// client's own.
func (k *Cache) Stats(ctx context.Context) (Stats, error) {
	if err := k.checkOpen(); err != nil {
		return Stats{}, err
	}
	cs, err := k.sc.KVStats(ctx, k.ns.ID, k.ns.ChainIDs)
	if err != nil {
		return Stats{}, fmt.Errorf("kvcache namespace %q: stats: %w", k.ns.Name, err)
	}
	return Stats{Cluster: cs, Client: k.ClientStats()}, nil
}

// NamespaceStats returns the cluster's counters for namespace ns without
// opening it (the CLI's `kvcache stats`).
func NamespaceStats(ctx context.Context, c *client.Client, ns Namespace) (kvformat.Stats, error) {
	return c.Storage().KVStats(ctx, ns.ID, ns.ChainIDs)
}
