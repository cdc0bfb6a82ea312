package meta

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/badgerkv"
)

// memChunks is an in-memory ChunkStore: file lengths as a storage service
// would report them, plus a record of truncations and removals.
type memChunks struct {
	mu        sync.Mutex
	lengths   map[uint64]uint64
	removed   map[uint64]int
	truncated map[uint64]uint64
	// failTruncates makes that many TruncateChunks calls fail, as when the
	// meta server dies between its commit and the trim.
	failTruncates int
	// afterQuery runs once, after the next QueryLength answered (outside
	// the lock): a deterministic "something happened meanwhile".
	afterQuery func()
	// beforeTruncate, when set, runs at the start of every TruncateChunks
	// call (outside the lock): a test holds a trim there.
	beforeTruncate func(id, length uint64)
}

func newMemChunks() *memChunks {
	return &memChunks{lengths: map[uint64]uint64{}, removed: map[uint64]int{}, truncated: map[uint64]uint64{}}
}

func (m *memChunks) write(id, length uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if length > m.lengths[id] {
		m.lengths[id] = length
	}
}

func (m *memChunks) QueryLength(_ context.Context, id uint64, _ Layout) (uint64, error) {
	m.mu.Lock()
	l, hook := m.lengths[id], m.afterQuery
	m.afterQuery = nil
	m.mu.Unlock()
	if hook != nil {
		hook()
	}
	return l, nil
}

func (m *memChunks) length(id uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lengths[id]
}

func (m *memChunks) TruncateChunks(_ context.Context, id uint64, _ Layout, length uint64) error {
	m.mu.Lock()
	hook := m.beforeTruncate
	m.mu.Unlock()
	if hook != nil {
		hook(id, length)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failTruncates > 0 {
		m.failTruncates--
		return errors.New("memChunks: storage unreachable (injected)")
	}
	m.truncated[id] = length
	if m.lengths[id] > length {
		m.lengths[id] = length
	}
	return nil
}

func (m *memChunks) RemoveChunks(_ context.Context, id uint64, _ Layout) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removed[id]++
	delete(m.lengths, id)
	return nil
}

func (m *memChunks) Capacity(context.Context) (uint64, uint64, error) { return 1 << 40, 1 << 39, nil }

func (m *memChunks) removedCount(id uint64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.removed[id]
}

// orphans lists files with chunks but no live inode (the fsck hook).
func (m *memChunks) orphans(_ context.Context, live map[uint64]bool) ([]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []uint64
	for id := range m.lengths {
		if !live[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// fakeClock is a settable clock for session expiry tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func openEngine(t testing.TB) kv.Engine {
	t.Helper()
	e, err := badgerkv.OpenMemory(badgerkv.Options{Logger: testutil.Logger(), MaxRetries: 1000})
	if err != nil {
		t.Fatalf("open engine: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

type testEnv struct {
	s      *Server
	kv     kv.Engine
	chunks *memChunks
	clock  *fakeClock
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	eng := openEngine(t)
	return newEnvOn(t, eng, newMemChunks())
}

func newEnvOn(t testing.TB, eng kv.Engine, chunks *memChunks) *testEnv {
	t.Helper()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	s, err := New(context.Background(), eng, Config{
		Chains: StaticChainTables{1: 8, 2: 3}, Chunks: chunks, Logger: testutil.Logger(), Now: clock.Now, IDBatch: 64,
	})
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	return &testEnv{s: s, kv: eng, chunks: chunks, clock: clock}
}

func wantErrno(t testing.TB, err error, want syscall.Errno, what string) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Fatalf("%s: unexpected error %v", what, err)
		}
		return
	}
	if err == nil {
		t.Fatalf("%s: succeeded, want %v", what, want)
	}
	if got := errcode.ErrnoOf(err); got != want {
		t.Fatalf("%s: errno %v (%d) from %v, want %v (%d)", what, got, got, err, want, want)
	}
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func fsckClean(t testing.TB, s *Server, chunks *memChunks) *FsckReport {
	t.Helper()
	opts := FsckOptions{}
	if chunks != nil {
		opts.OrphanChunks = chunks.orphans
	}
	rep, err := s.Fsck(context.Background(), opts)
	if err != nil {
		t.Fatalf("fsck: %v", err)
	}
	if !rep.Clean() {
		t.Fatalf("fsck found problems: %v (orphan chunk files %v)", rep.Problems, rep.OrphanChunkFiles)
	}
	return rep
}

func drainGC(t testing.TB, s *Server) {
	t.Helper()
	for range 1000 {
		n, err := s.CollectGarbage(context.Background(), 1024)
		if err != nil {
			t.Fatalf("collect garbage: %v", err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("garbage collection does not converge")
}
