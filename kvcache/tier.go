package kvcache

import (
	"fmt"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// memTier is the optional in-process tier in front of the cluster: a
// ristretto cache bounded in bytes. A key names its content (a prefix
// hash), so entries are not invalidated by other clients' puts; each entry
// keeps its value's expiry so the namespace TTL still holds.
type memTier struct {
	c *ristretto.Cache[string, *tierEntry]
}

type tierEntry struct {
	value   []byte
	expires int64 // unix ns; 0 = never
}

// tierOverhead is charged per entry on top of the value, so many tiny
// values cannot exceed the byte bound by much.
const tierOverhead = 64

func newMemTier(bytes int64) (*memTier, error) {
	c, err := ristretto.NewCache(&ristretto.Config[string, *tierEntry]{
		// ristretto wants ~10 counters per entry it may hold; assume
		// 4 KiB values, the smallest size that matters here.
		NumCounters: max(10*bytes/4096, 1000),
		MaxCost:     bytes,
		BufferItems: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("kvcache: memory tier: %w", err)
	}
	return &memTier{c: c}, nil
}

// get returns key's value if cached and not expired at now. The slice is
// the tier's own: callers copy out of it and never write to it.
func (t *memTier) get(key []byte, now int64) ([]byte, bool) {
	e, ok := t.c.Get(string(key))
	if !ok {
		return nil, false
	}
	if e.expires != 0 && now >= e.expires {
		t.c.Del(string(key))
		return nil, false
	}
	return e.value, true
}

// put caches a copy of value (the caller keeps its buffer).
func (t *memTier) put(key, value []byte, expires, now int64) {
	var ttl time.Duration
	if expires != 0 {
		if ttl = time.Duration(expires - now); ttl <= 0 {
			return
		}
	}
	e := &tierEntry{value: append([]byte(nil), value...), expires: expires}
	t.c.SetWithTTL(string(key), e, int64(len(value))+tierOverhead, ttl)
}

func (t *memTier) del(key []byte) { t.c.Del(string(key)) }

// wait applies buffered sets (tests, so a put is visible to the next get).
func (t *memTier) wait() { t.c.Wait() }

func (t *memTier) close() { t.c.Close() }
