package client

import (
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// dataCache holds hot file blocks (cacheBlock bytes, aligned in the file)
// in a bounded ristretto cache.
//
// Coherence: an entry is used only when
//   - its inode's epoch is unchanged: every write, truncate or flush by
//     this client moves the epoch (dropInode), so this client always reads
//     its own writes;
//   - the file's stamp (size and mtime when it was opened) matches: a file
//     another client changed and closed (which moves its size or mtime in
//     meta) misses when reopened;
//   - it is younger than the TTL, which bounds staleness for in-place
//     overwrites by other clients that change neither size nor mtime.
type dataCache struct {
	c   *ristretto.Cache[uint64, *cacheEntry]
	ttl time.Duration

	mu     sync.Mutex
	next   uint64
	epochs map[uint64]uint64
}

type cacheEntry struct {
	key   blockKey // checked on every hit: cache keys are hashes of it
	epoch uint64
	data  []byte
}

// blockKey names a cached block: an inode, its stamp at open, a block.
type blockKey struct {
	ino, stamp uint64
	block      int64
}

// maxEpochs bounds the epoch map: past it the whole cache is cleared and
// the map restarts (an inode missing from the map has epoch 0, which
// entries made after any invalidation never carry).
const maxEpochs = 1 << 16

func newDataCache(bytes int64, ttl time.Duration) (*dataCache, error) {
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *cacheEntry]{
		NumCounters: max(10*bytes/cacheBlock, 1000),
		MaxCost:     bytes,
		BufferItems: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("client: data cache: %w", err)
	}
	return &dataCache{c: c, ttl: ttl, next: 1, epochs: map[uint64]uint64{}}, nil
}

// hash is the cache key of k: a 64-bit mix of its fields, with no
// allocation (a formatted string key cost an allocation and a format per
// lookup). Two keys hashing alike only cost a miss: a hit is used only
// when the entry's full key matches.
func (k blockKey) hash() uint64 {
	return mix64(mix64(mix64(k.ino)^k.stamp) ^ uint64(k.block))
}

// mix64 is splitmix64's finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

func (d *dataCache) epoch(ino uint64) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.epochs[ino]
}

// dropInode invalidates every cached block of ino.
func (d *dataCache) dropInode(ino uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.epochs) >= maxEpochs {
		d.c.Clear()
		d.epochs = map[uint64]uint64{}
	}
	d.next++
	d.epochs[ino] = d.next
}

func (d *dataCache) get(ino, stamp uint64, block int64) ([]byte, bool) {
	k := blockKey{ino, stamp, block}
	e, ok := d.c.Get(k.hash())
	if !ok || e.key != k || e.epoch != d.epoch(ino) {
		return nil, false
	}
	return e.data, true
}

// put stores a block read while the inode was at epoch; a block read
// across an invalidation is dropped.
func (d *dataCache) put(ino, stamp uint64, block int64, epoch uint64, data []byte) {
	if d.epoch(ino) != epoch {
		return
	}
	k := blockKey{ino, stamp, block}
	d.c.SetWithTTL(k.hash(), &cacheEntry{key: k, epoch: epoch, data: data}, int64(len(data))+64, d.ttl)
	// Sets are applied asynchronously; without waiting, the next small
	// read of the block (usually right after) misses and fetches it again.
	d.c.Wait()
}

func (d *dataCache) close() { d.c.Close() }
