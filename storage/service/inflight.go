package service

import (
	"context"
	"sync"
	"time"
)

// inflight counts the updates running on one target by the chain version
// they were admitted under, so that a sync can wait out those admitted
// under an older version than its own.
//
// Why: a sync takes the source's chunk list once (Dump) and then brings
// each listed chunk over under its chunk lock. An update admitted under
// the previous chain version, in which the successor was not on the write
// path, may still be running when the sync starts; if it creates a chunk,
// that chunk is in neither the dump nor the successor, and the update's
// acknowledgement covers a replica that never gets it (the chaos harness
// read acknowledged data back as zeros from a target just promoted to
// serving). Updates admitted under the sync's version (or later) forward
// to the syncing successor themselves; older ones cannot be admitted any
// more once routing moved on (runUpdate re-checks the version under the
// chunk lock), so waiting for the count of older ones to reach zero is
// enough.
type inflight struct {
	mu sync.Mutex
	n  map[uint64]int // chain version -> updates running
}

// enter records an update admitted under chainVer; call the returned
// function when it is done.
func (f *inflight) enter(chainVer uint64) (done func()) {
	f.mu.Lock()
	if f.n == nil {
		f.n = map[uint64]int{}
	}
	f.n[chainVer]++
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		if f.n[chainVer]--; f.n[chainVer] == 0 {
			delete(f.n, chainVer)
		}
		f.mu.Unlock()
	}
}

// olderThan counts the updates running that were admitted under a chain
// version older than chainVer.
func (f *inflight) olderThan(chainVer uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := 0
	for v, n := range f.n {
		if v < chainVer {
			c += n
		}
	}
	return c
}

// drainOlder waits until no update admitted under a chain version older
// than chainVer runs. Updates are short (a chain round trip) and syncs
// rare, so it polls.
func (f *inflight) drainOlder(ctx context.Context, chainVer uint64) error {
	for f.olderThan(chainVer) > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}
