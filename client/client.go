// Package client is the native EmberFS client: it follows mgmtd's routing,
// talks to the meta servers for the namespace (failing over between them)
// and to the storage services for file data, striping files over chains,
// fanning large reads and writes out over chunks, reading ahead on
// sequential reads and buffering sequential writes. See docs/client.md.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/chunkstore"
	"github.com/emberfs/emberfs/service/meta/metaclient"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// Defaults for Config fields left 0.
const (
	DefaultReadAhead     = 4 << 20
	DefaultWriteBuffer   = 4 << 20
	DefaultCacheBytes    = 64 << 20
	DefaultParallel      = 32
	DefaultWriteInFlight = 8
	DefaultCacheTTL      = 3 * time.Second
	// cacheBlock is the unit of the hot-data cache: small reads fetch and
	// cache the aligned block(s) around them.
	cacheBlock = 128 << 10
)

// Config configures a Client.
type Config struct {
	// MgmtdAddrs lists mgmtd addresses (any of them; the client follows
	// the primary).
	MgmtdAddrs []string
	// Token is the cluster token.
	Token string
	// ClientID names this client's meta write sessions (renewed while the
	// client lives). Default: a random id.
	ClientID string
	// ReadAhead is the read-ahead window of a sequentially read file;
	// WriteBuffer the write-back buffer of a sequentially written file;
	// CacheBytes the size of the hot-data cache. 0 takes the default, a
	// negative value turns the feature off.
	ReadAhead   int64
	WriteBuffer int64
	CacheBytes  int64
	// CacheTTL bounds how long a cached data block is trusted: writes by
	// this client invalidate at once, writes by other clients are seen
	// after reopening the file with a changed size or mtime, or after
	// CacheTTL (default 3 s).
	CacheTTL time.Duration
	// Parallel bounds the chunk requests one client has in flight
	// (default 32).
	Parallel int
	// WriteInFlight bounds the writes one open file has sent to storage
	// and not yet seen acknowledged (write-back buffers, each up to
	// WriteBuffer bytes, usually one chunk): WriteAt returns while they
	// are in flight, and their errors come back from the next WriteAt,
	// Flush, Sync or Close. Default 8; negative: 1 (one at a time).
	WriteInFlight int
	// MetaRetryWindow is how long a meta call keeps looking for a
	// reachable meta server (default 10 s).
	MetaRetryWindow time.Duration
	// LeaseRenewal is how often the client renews its meta lease, which
	// keeps its write sessions, open-file sessions and file locks. 0:
	// every third of the lease meta grants, at most 15 s. Negative: never,
	// so they lapse one client TTL after they were made, as those of a
	// client cut off from meta do (tests model that with it).
	LeaseRenewal time.Duration
	// Storage tunes the storage client (Token is set from Token).
	Storage storageclient.Config
	Logger  *slog.Logger
}

// Client is a connection to one EmberFS cluster; safe for concurrent use.
type Client struct {
	cfg   Config
	log   *slog.Logger
	conn  *mgmtdclient.Conn
	cache *mgmtdclient.Cache
	sc    *storageclient.Client
	mfs   *metaclient.FailoverClient
	data  *dataCache
	sem   chan struct{}
	// writeInFlight is Config.WriteInFlight resolved; bufPool holds
	// write-back buffers of capacity WriteBuffer.
	writeInFlight int
	bufPool       sync.Pool
	ctx           context.Context
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	closeMu       sync.Once

	mu     sync.Mutex
	inodes map[uint64]*inodeState

	storageReadBytes atomic.Int64
	// writerCloses counts closes of handles that wrote (File.Open).
	writerCloses atomic.Uint64
}

// Stats are a client's cumulative counters.
type Stats struct {
	// StorageReadBytes counts file bytes asked of storage: reads, their
	// read-ahead and the blocks fetched for the hot-data cache.
	StorageReadBytes int64
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{StorageReadBytes: c.storageReadBytes.Load()}
}

// New connects to the cluster: it dials mgmtd and waits for the first
// routing info (bounded by ctx); meta and storage connections are made on
// first use.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.MgmtdAddrs) == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "client: no mgmtd address given")
	}
	if cfg.Token == "" {
		return nil, errcode.New(errcode.InvalidArgument, "client: no cluster token given")
	}
	if cfg.ClientID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		host, _ := os.Hostname()
		cfg.ClientID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	cfg.ReadAhead = orDefault(cfg.ReadAhead, DefaultReadAhead)
	cfg.WriteBuffer = orDefault(cfg.WriteBuffer, DefaultWriteBuffer)
	cfg.CacheBytes = orDefault(cfg.CacheBytes, DefaultCacheBytes)
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.WriteInFlight == 0 {
		cfg.WriteInFlight = DefaultWriteInFlight
	}
	if cfg.MetaRetryWindow <= 0 {
		cfg.MetaRetryWindow = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{cfg: cfg, log: cfg.Logger.With("component", "client"), sem: make(chan struct{}, cfg.Parallel),
		inodes: map[uint64]*inodeState{}, writeInFlight: max(cfg.WriteInFlight, 1)}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	var err error
	if c.conn, err = mgmtdclient.Dial(cfg.MgmtdAddrs, cfg.Token); err != nil {
		return nil, errcode.New(errcode.Unavailable, "client: mgmtd %v: %v", cfg.MgmtdAddrs, err)
	}
	c.cache = mgmtdclient.NewCache(c.conn)
	c.cache.Start()
	// Without a deadline from the caller, an unreachable mgmtd must not
	// hang New forever.
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := c.cache.Refresh(wctx); err != nil {
		if _, werr := c.cache.WaitFor(wctx, func(*routing.Routing) bool { return true }); werr != nil {
			return nil, errcode.New(errcode.Unavailable, "client: no routing info from mgmtd %v: %v", cfg.MgmtdAddrs, err)
		}
	}
	scfg := cfg.Storage
	scfg.Token = cfg.Token
	c.sc = storageclient.New(c.cache, scfg)
	if c.mfs, err = metaclient.NewFailoverClient(metaclient.FailoverConfig{Addrs: metaclient.RoutingMetaAddrs(c.cache), Token: cfg.Token,
		RetryWindow: cfg.MetaRetryWindow}); err != nil {
		return nil, err
	}
	if cfg.CacheBytes > 0 {
		if c.data, err = newDataCache(cfg.CacheBytes, cfg.CacheTTL); err != nil {
			return nil, err
		}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if cfg.LeaseRenewal >= 0 {
		c.wg.Add(1)
		go c.renewLoop()
	}
	ok = true
	return c, nil
}

func orDefault(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return max(v, 0)
}

// renewLoop keeps this client's meta lease alive, so that its write
// sessions and file locks are not dropped while it runs. It renews every
// 15 s, or every third of the lease meta grants if that is shorter (a
// cluster with a short client TTL frees a dead client's locks sooner),
// or every Config.LeaseRenewal if that is set.
func (c *Client) renewLoop() {
	defer c.wg.Done()
	const most = 15 * time.Second
	for {
		every := most
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		exp, err := c.mfs.RenewClient(ctx, c.cfg.ClientID)
		cancel()
		if err != nil && c.ctx.Err() == nil {
			c.log.Warn("renewing the client lease failed", "client", c.cfg.ClientID, "err", err)
			every = time.Second
		} else if err == nil {
			every = c.cfg.LeaseRenewal
			if every == 0 {
				every = min(most, max(time.Until(exp)/3, 100*time.Millisecond))
			}
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// Close releases connections. Open files should be closed first: their
// unflushed buffers are not written.
func (c *Client) Close() error {
	c.closeMu.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
		if c.mfs != nil {
			_ = c.mfs.CloseConn()
		}
		if c.sc != nil {
			_ = c.sc.Close()
		}
		if c.data != nil {
			c.data.close()
		}
		if c.cache != nil {
			c.cache.Close()
		}
		if c.conn != nil {
			_ = c.conn.Close()
		}
	})
	return nil
}

// ID is the client id of this client's meta write sessions.
func (c *Client) ID() string { return c.cfg.ClientID }

// Meta is the namespace API (every meta.FS operation), failing over
// between the meta servers routing lists.
func (c *Client) Meta() meta.FS { return c.mfs }

// Routing is the client's routing cache (mgmtd's view of the cluster).
func (c *Client) Routing() *mgmtdclient.Cache { return c.cache }

// Storage is the client's storage client.
func (c *Client) Storage() *storageclient.Client { return c.sc }

// ChunkStore returns a meta.ChunkStore over this client's connections.
func (c *Client) ChunkStore() *chunkstore.Store { return chunkstore.New(c.cache, c.sc) }

// inodeState is what every open File of one inode in this client shares:
// the length as this client sees it, and a generation bumped by every
// write and truncate through this client (cached data of an older
// generation is ignored).
type inodeState struct {
	mu    sync.Mutex
	refs  int
	size  int64
	gen   uint64
	files map[*File]struct{} // open handles, whose buffers reads must see
	// writers counts open handles that wrote (their length is not final in
	// meta until they close); dirtyEnd is the furthest end they wrote.
	// Without such writers meta's length is the truth, and an open takes
	// it even when another client made the file shorter.
	writers  int
	dirtyEnd int64
}

// wroteFirst records that a handle wrote for the first time.
func (s *inodeState) wroteFirst() {
	s.mu.Lock()
	s.writers++
	s.mu.Unlock()
}

// writerClosed records that a handle that wrote has closed (its length is
// final in meta, or its close failed and the length is what meta has).
func (s *inodeState) writerClosed() {
	s.mu.Lock()
	if s.writers--; s.writers == 0 {
		s.dirtyEnd = 0
	}
	s.mu.Unlock()
}

// unfinalizedSize is the length this client's open writers give the file,
// and whether there are any.
func (s *inodeState) unfinalizedSize() (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size, s.writers > 0
}

// opened takes the length meta reported at an open (close-to-open): it
// replaces this client's view unless handles of this client wrote data
// meta has not finalized, whose end then counts too.
func (s *inodeState) opened(metaSize int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	size := metaSize
	if s.writers > 0 {
		size = max(size, s.dirtyEnd)
	}
	if size != s.size {
		s.size = size
		s.gen++
	}
}

func (s *inodeState) addFile(f *File) {
	s.mu.Lock()
	if s.files == nil {
		s.files = map[*File]struct{}{}
	}
	s.files[f] = struct{}{}
	s.mu.Unlock()
}

func (s *inodeState) removeFile(f *File) {
	s.mu.Lock()
	delete(s.files, f)
	s.mu.Unlock()
}

// flushOverlapping flushes every handle of the inode whose write-back
// buffer overlaps [off, off+n), so that a read sees this client's writes.
func (s *inodeState) flushOverlapping(off, n int64) error {
	s.mu.Lock()
	var dirty []*File
	for f := range s.files {
		if f.dirtyOverlaps(off, n) {
			dirty = append(dirty, f)
		}
	}
	s.mu.Unlock()
	for _, f := range dirty {
		if err := f.flushForRead(off, n); err != nil {
			return err
		}
	}
	return nil
}

func (s *inodeState) getSize() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

func (s *inodeState) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// grew records a write that ended at end and invalidates cached data.
func (s *inodeState) grew(end int64) {
	s.mu.Lock()
	s.gen++
	s.size = max(s.size, end)
	s.dirtyEnd = max(s.dirtyEnd, end)
	s.mu.Unlock()
}

func (s *inodeState) setSize(size int64) {
	s.mu.Lock()
	s.gen++
	s.size = size
	s.dirtyEnd = min(s.dirtyEnd, size)
	s.mu.Unlock()
}

func (c *Client) acquireInode(n meta.Inode) *inodeState {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.inodes[n.ID]
	if s == nil {
		s = &inodeState{size: int64(n.Size)}
		c.inodes[n.ID] = s
	} else {
		s.opened(int64(n.Size))
	}
	s.refs++
	return s
}

func (c *Client) releaseInode(id uint64, s *inodeState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.refs--
	if s.refs == 0 && c.inodes[id] == s {
		delete(c.inodes, id)
	}
}

// dropCached invalidates the cached data blocks of inode id.
func (c *Client) dropCached(id uint64) {
	if c.data != nil {
		c.data.dropInode(id)
	}
}

// invalidate drops this client's view of inode id after a namespace call
// changed its data (truncate through Meta-level wrappers).
func (c *Client) invalidate(id uint64, size int64) {
	c.mu.Lock()
	s := c.inodes[id]
	c.mu.Unlock()
	if s != nil {
		s.setSize(size)
	}
	if c.data != nil {
		c.data.dropInode(id)
	}
}

// errClosed is returned by calls on a closed File.
var errClosed = errors.New("file already closed")
