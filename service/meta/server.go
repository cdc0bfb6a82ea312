// Package meta is EmberFS's metadata service: the POSIX namespace (inodes,
// directory entries, xattrs, write sessions) kept in the transactional KV
// (service/kv). A Server holds no state of its own beyond caches of inode id
// batches, so any number of servers can run over one engine; every operation
// is one serializable transaction that the engine retries on conflict.
//
// The key schema, the conflict keys each operation uses and the permission
// model are described in docs/meta.md.
package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/kv"
)

// ChainTables is what the metadata service needs from mgmtd's routing info:
// how many chains a chain table has, to spread new files over them.
type ChainTables interface {
	ChainCount(ctx context.Context, tableID uint32) (int, error)
}

// StaticChainTables maps chain table ids to chain counts (tests, single-node setups).
type StaticChainTables map[uint32]int

// ChainCount implements ChainTables.
func (t StaticChainTables) ChainCount(_ context.Context, id uint32) (int, error) {
	n, ok := t[id]
	if !ok || n <= 0 {
		return 0, errInval("chain table %d does not exist or has no chains", id)
	}
	return n, nil
}

// ChunkStore is what the metadata service needs from storage: a file's length
// as written (to finalize it on fsync and close), truncation, and removal of
// every chunk of a deleted file (the background collector). Implementations
// must be idempotent: the collector may repeat a removal after a crash.
type ChunkStore interface {
	QueryLength(ctx context.Context, inode uint64, layout Layout) (uint64, error)
	TruncateChunks(ctx context.Context, inode uint64, layout Layout, length uint64) error
	RemoveChunks(ctx context.Context, inode uint64, layout Layout) error
}

// CapacityReporter may be implemented by a ChunkStore to fill in StatFS.
type CapacityReporter interface {
	Capacity(ctx context.Context) (total, free uint64, err error)
}

// Config configures a Server; zero fields take the defaults noted.
type Config struct {
	// RootLayout is the layout default of "/" when the file system is first
	// created (default: chain table 1, 4 MiB chunks, stripe 1).
	RootLayout Layout
	// IDBatch is how many inode ids a server reserves per allocator
	// transaction (default 4096).
	IDBatch uint64
	// ClientTTL is how long a client's write sessions survive without a
	// renewal (default 60 s).
	ClientTTL time.Duration
	// GCInterval and PruneInterval pace the background loops of Run
	// (defaults 5 s and 30 s).
	GCInterval    time.Duration
	PruneInterval time.Duration
	// GCBatch bounds the entries handled per collector transaction (default 128).
	GCBatch int
	Chains  ChainTables // nil: every file starts at chain 0 of its table
	Chunks  ChunkStore  // nil: no storage (lengths are what clients set)
	Logger  *slog.Logger
	// Now is the clock (tests move it to expire sessions).
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.RootLayout.ChainTable == 0 && c.RootLayout.ChunkSize == 0 {
		c.RootLayout = Layout{ChainTable: 1, ChunkSize: 4 << 20, StripeSize: 1}
	}
	if c.RootLayout.StripeSize == 0 {
		c.RootLayout.StripeSize = 1
	}
	if c.IDBatch == 0 {
		c.IDBatch = 4096
	}
	if c.ClientTTL <= 0 {
		c.ClientTTL = 60 * time.Second
	}
	if c.GCInterval <= 0 {
		c.GCInterval = 5 * time.Second
	}
	if c.PruneInterval <= 0 {
		c.PruneInterval = 30 * time.Second
	}
	if c.GCBatch <= 0 {
		c.GCBatch = 128
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Server is one metadata server over a shared engine.
type Server struct {
	kv     kv.Engine
	cfg    Config
	log    *slog.Logger
	ids    idAllocator
	cursor atomic.Uint64 // round-robin position in chain tables
	// lastTable is the chain table of the last file created: its chain
	// count is asked before the next create's transaction, so that the
	// common case needs one transaction (see needChainCount).
	lastTable atomic.Uint32
	gcKick    chan struct{}
	// writer names this server's directory change records (dirtimes.go).
	writer uint64
}

// firstDynamicID leaves room below for fixed inodes (root is 1).
const firstDynamicID = 1 << 10

// New returns a Server over engine, creating the root directory on first use.
func New(ctx context.Context, engine kv.Engine, cfg Config) (*Server, error) {
	cfg.setDefaults()
	s := &Server{kv: engine, cfg: cfg, log: cfg.Logger.With("component", "meta"), gcKick: make(chan struct{}, 1)}
	s.ids = idAllocator{engine: engine, batch: cfg.IDBatch}
	s.cursor.Store(rand.Uint64())
	s.writer = rand.Uint64()
	s.lastTable.Store(cfg.RootLayout.ChainTable)
	err := s.update(ctx, func(t *txn) error {
		_, found, err := t.tx.Get(inodeKey(RootID))
		if err != nil || found {
			return err
		}
		now := t.now
		root := &Inode{ID: RootID, Type: TypeDir, Mode: 0o755, Nlink: 2, subdirsCounted: true, Atime: now, Mtime: now, Ctime: now,
			Parent: RootID, Layout: Layout{ChainTable: cfg.RootLayout.ChainTable, ChunkSize: cfg.RootLayout.ChunkSize, StripeSize: cfg.RootLayout.StripeSize}}
		return t.putInode(root)
	})
	if err != nil {
		return nil, fmt.Errorf("meta: initializing root: %w", err)
	}
	return s, nil
}

// txn wraps one KV transaction with the caller's credentials and a single
// timestamp for every attribute it sets.
type txn struct {
	s   *Server
	r   kv.ReadTx
	tx  kv.Tx // nil in read-only transactions
	u   User
	now time.Time
}

func (s *Server) update(ctx context.Context, fn func(t *txn) error) error {
	return s.updateAs(ctx, Root, fn)
}

func (s *Server) updateAs(ctx context.Context, u User, fn func(t *txn) error) error {
	return mapKVError(s.transactAs(ctx, u, fn))
}

// transactAs is updateAs without the mapping of engine errors, for callers
// that act on an error of their own body before mapping.
func (s *Server) transactAs(ctx context.Context, u User, fn func(t *txn) error) error {
	return s.kv.Transact(ctx, func(tx kv.Tx) error {
		return fn(&txn{s: s, r: tx, tx: tx, u: u, now: s.cfg.Now()})
	})
}

func (s *Server) view(ctx context.Context, u User, fn func(t *txn) error) error {
	err := s.kv.ReadTransact(ctx, func(tx kv.ReadTx) error {
		return fn(&txn{s: s, r: tx, u: u, now: s.cfg.Now()})
	})
	return mapKVError(err)
}

// inode reads inode id; a missing inode is ESTALE (the caller held an id
// that no longer exists).
func (t *txn) inode(id uint64) (*Inode, error) {
	n, ok, err := t.inodeOK(id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errcode.New(errcode.Stale, "inode %d does not exist", id)
	}
	return n, nil
}

// entryInode reads the inode a directory entry points at. Only a missing
// inode is the namespace inconsistency "points at missing inode"; a read
// error is returned as it came, so that the engine can retry a transient
// one (replacing it would turn a retryable error into a final EIO).
func (t *txn) entryInode(id uint64, what string) (*Inode, error) {
	n, ok, err := t.inodeOK(id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errcode.New(errcode.Internal, "%s: entry points at missing inode %d", what, id)
	}
	return n, nil
}

func (t *txn) inodeOK(id uint64) (*Inode, bool, error) {
	v, ok, err := t.r.Get(inodeKey(id))
	if err != nil || !ok {
		return nil, false, err
	}
	n, err := decodeInode(id, v)
	if err != nil {
		return nil, false, errcode.New(errcode.Internal, "%v", err)
	}
	return n, true, nil
}

func (t *txn) putInode(n *Inode) error { return t.tx.Set(inodeKey(n.ID), n.encode()) }

func (t *txn) lookup(dir uint64, name string) (dentry, bool, error) {
	v, ok, err := t.r.Get(dentryKey(dir, name))
	if err != nil || !ok {
		return dentry{}, false, err
	}
	d, err := decodeDentry(v)
	if err != nil {
		return dentry{}, false, errcode.New(errcode.Internal, "entry %q in directory %d: %v", name, dir, err)
	}
	return d, true, nil
}

// insertEntry adds name to dir and declares the insert on the directory's
// marker key, so a concurrent emptiness check (rmdir, rename over a
// directory) conflicts even on engines that miss phantoms.
func (t *txn) insertEntry(dir uint64, name string, child *Inode) error {
	if err := t.tx.Set(dentryKey(dir, name), dentry{ID: child.ID, Type: child.Type}.encode()); err != nil {
		return err
	}
	if err := t.dirChanged(dir); err != nil {
		return err
	}
	return t.touchMarker(dirInsertMarker(dir))
}

// touchMarker makes every concurrent reader of marker (a conflict key that
// never holds a value) conflict with this transaction. It clears the key, a
// blind write: kv's AddWriteConflictKey on Badger reads the key too (to
// write its value back), which made every two creates in one directory, or
// two opens of one file, conflict with each other. Clearing a key that never
// holds a value changes nothing, and on every engine a write is a write
// conflict.
func (t *txn) touchMarker(marker []byte) error {
	return t.tx.Clear(marker)
}

// dirEmpty reports whether directory id has no entries, guarded against
// concurrent inserts by the directory's marker key.
func (t *txn) dirEmpty(id uint64) (bool, error) {
	if err := t.tx.AddReadConflictKey(dirInsertMarker(id)); err != nil {
		return false, err
	}
	b, e := dirRange(id)
	kvs, err := t.r.GetRange(b, e, kv.RangeOptions{Limit: 1})
	return len(kvs) == 0, err
}

// hasSessions reports whether inode id is open for writing, guarded against
// a concurrent open by the session marker key.
func (t *txn) hasSessions(id uint64) (bool, error) {
	if err := t.tx.AddReadConflictKey(sessionPrefix(id)); err != nil {
		return false, err
	}
	p := sessionPrefix(id)
	kvs, err := t.r.GetRange(p, kv.PrefixEnd(p), kv.RangeOptions{Limit: 1})
	return len(kvs) > 0, err
}

// removeInode deletes n and its xattrs; a file's chunks are queued for the
// background collector.
func (t *txn) removeInode(n *Inode) error {
	if err := t.tx.Clear(inodeKey(n.ID)); err != nil {
		return err
	}
	// A pending trim goes with the file: the collector removes every chunk.
	if err := t.tx.Clear(trimKey(n.ID)); err != nil {
		return err
	}
	// So do its locks (holders that still have it open lock nothing now).
	if err := t.tx.Clear(lockKey(n.ID)); err != nil {
		return err
	}
	xp := xattrPrefix(n.ID)
	if err := t.tx.ClearRange(xp, kv.PrefixEnd(xp)); err != nil {
		return err
	}
	if n.Type == TypeDir {
		if err := t.clearDirTimes(n.ID); err != nil {
			return err
		}
	}
	if n.Type == TypeFile {
		t.s.kickGC()
		return t.tx.Set(gcKey(n.ID), gcEntry{Type: TypeFile, Size: n.Size, Layout: n.Layout}.encode())
	}
	return nil
}

// dropLink removes one link of a non-directory: the inode goes when its last
// link does, unless the file is open for writing, in which case the last
// close (or the session pruner) removes it.
func (t *txn) dropLink(n *Inode) error {
	if n.Nlink > 0 {
		n.Nlink--
	}
	n.Ctime = t.now
	if n.Nlink > 0 {
		return t.putInode(n)
	}
	if n.Type == TypeFile {
		open, err := t.hasSessions(n.ID)
		if err != nil {
			return err
		}
		if open {
			return t.putInode(n)
		}
	}
	return t.removeInode(n)
}

func (s *Server) kickGC() {
	select {
	case s.gcKick <- struct{}{}:
	default:
	}
}

// idAllocator hands out inode ids from batches reserved in one KV counter,
// so servers touch the shared counter once per batch, not once per create.
type idAllocator struct {
	engine kv.Engine
	batch  uint64
	mu     sync.Mutex
	next   uint64
	end    uint64
}

func (a *idAllocator) alloc(ctx context.Context, n int) ([]uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]uint64, 0, n)
	for len(out) < n {
		if a.next == a.end {
			var begin uint64
			err := a.engine.Transact(ctx, func(tx kv.Tx) error {
				v, ok, err := tx.Get(keyIDNext)
				if err != nil {
					return err
				}
				begin = firstDynamicID
				if ok {
					if len(v) != 8 {
						return errors.New("corrupt inode id counter")
					}
					begin = be64(v)
				}
				return tx.Set(keyIDNext, appendBE64(nil, begin+a.batch))
			})
			if err != nil {
				return nil, mapKVError(err)
			}
			a.next, a.end = begin, begin+a.batch
		}
		out = append(out, a.next)
		a.next++
	}
	return out, nil
}

// needChainCount is returned by a create's transaction body when it needs
// the chain count of a table it was not given: ChainCount may be a network
// call (a routing refresh), which must not run inside a transaction body
// (bodies may run many times, and a slow call holds the transaction open).
// Create asks for the count outside and runs the transaction again.
type needChainCount struct{ table uint32 }

func (e needChainCount) Error() string {
	return fmt.Sprintf("meta: chain count of table %d needed", e.table)
}

// chainCounts are chain counts asked before a transaction, by table.
type chainCounts map[uint32]int

// fetch asks ChainTables for table's chain count (outside any transaction).
func (c chainCounts) fetch(ctx context.Context, s *Server, table uint32) error {
	if s.cfg.Chains == nil {
		return nil
	}
	n, err := s.cfg.Chains.ChainCount(ctx, table)
	if err != nil {
		return err
	}
	if n <= 0 {
		return errInval("chain table %d has no chains", table)
	}
	c[table] = n
	return nil
}

// chooseLayout fills in a new file's chain range: StripeSize consecutive
// chains starting at a round-robin position, and a shuffle seed. The
// table's chain count must be in counts (else needChainCount).
func (t *txn) chooseLayout(base Layout, counts chainCounts) (Layout, error) {
	l := Layout{ChainTable: base.ChainTable, ChunkSize: base.ChunkSize, StripeSize: max(base.StripeSize, 1)}
	if l.ChunkSize == 0 {
		return l, errInval("layout: chunk size must be positive")
	}
	l.Seed = rand.Uint64()
	if t.s.cfg.Chains == nil {
		return l, nil
	}
	n, ok := counts[l.ChainTable]
	if !ok {
		return l, needChainCount{l.ChainTable}
	}
	if int(l.StripeSize) > n {
		l.StripeSize = uint32(n)
	}
	pos := t.s.cursor.Add(uint64(l.StripeSize)) - uint64(l.StripeSize)
	l.ChainBegin = uint32(pos % uint64(n))
	return l, nil
}
