package client

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// metaTimeout bounds one meta call made on behalf of a File method (those
// take no context: they implement io.ReaderAt and io.WriterAt).
const metaTimeout = 60 * time.Second

// File is an open EmberFS file. ReadAt and WriteAt may be called
// concurrently; writes through one File are applied in call order.
//
// Writes that continue the previous write are collected in a write-back
// buffer (Config.WriteBuffer) and sent when it fills, on Flush, Sync,
// Close, Truncate, or before a read that overlaps them. A buffered write
// that storage does not take (after the storage client's retries) is
// acknowledged data lost: from then on every WriteAt, Flush, Sync, Truncate
// and Close of the handle fails with EIO (never EAGAIN, which callers would
// retry), so the loss cannot go unnoticed.
// Reads that continue the previous read fetch a read-ahead window
// (Config.ReadAhead) and prefetch the next one in the background.
type File struct {
	c       *Client
	u       meta.User
	ino     meta.Inode
	session uint64
	chains  []uint32
	st      *inodeState
	stamp   uint64 // (size, mtime) at open: keys the hot-data cache
	read    bool
	write   bool
	append  bool
	direct  bool // O_DIRECT: reads bypass read-ahead and the hot-data cache

	wmu    sync.Mutex // serializes writes, flushes, truncate, close
	closed bool
	wrote  bool // data written through this handle: close finalizes the length

	mu      sync.Mutex // guards the fields below
	wbuf    []byte     // write-back buffer (from the client's pool)
	wbufOff int64
	lastEnd int64 // end of the previous read (sequential detection)
	win     *window
	pf      *prefetch

	// The write pipeline (pipeline.go): writes sent to storage and not yet
	// acknowledged, and the first failure of a buffered (acknowledged)
	// write, which every later call reports.
	pmu      sync.Mutex
	pcond    *sync.Cond
	inflight []*pendingWrite
	lost     error
}

type window struct {
	off  int64
	data []byte
	gen  uint64
}

type prefetch struct {
	off  int64
	n    int64
	gen  uint64
	done chan struct{}
	data []byte
	err  error
}

// Open opens (and with os.O_CREATE creates) the file p names, as user u.
// flags are os.O_* flags: access mode O_RDONLY, O_WRONLY or O_RDWR, and
// O_CREATE, O_EXCL, O_TRUNC, O_APPEND, O_DIRECT (reads then skip this
// client's read-ahead and hot-data cache; writes are unchanged: durable
// at Sync or Close); mode holds the permission bits of a
// new file (umask already applied). PathAt{Parent: id} opens inode id.
// Every open starts a meta session, ended by Close: a write session, or a
// read session that keeps the file's data if it is unlinked meanwhile.
func (c *Client) Open(ctx context.Context, u meta.User, p meta.PathAt, flags int, mode uint32) (*File, error) {
	return c.open(ctx, u, p, flags, mode, c.cfg.ClientID)
}

// ReadFileAt opens the file p names for reading, reads it at off into buf
// and closes it: the whole-file read of a small-file dataset in one meta
// call (resolve, permission check, inode: a read-only transaction) and one
// storage read per chunk, where Open+ReadAt+Close costs a session write to
// meta at open and another at close. It returns the file's length at open
// and the bytes read (min(len(buf), size-off)); a file longer than buf is
// read only in part, so a caller that wants it all reads again with a
// buffer of the returned size.
//
// No session is held, so unlinking the file during the read does not keep
// its data: the read then returns the data or, if the collector already
// deleted chunks it needed, ESTALE (readDirect checks the inode whenever a
// chunk is missing), never zeros in place of data.
func (c *Client) ReadFileAt(ctx context.Context, u meta.User, p meta.PathAt, buf []byte, off int64) (size int64, n int, err error) {
	// O_DIRECT: one read of exactly these bytes, no read-ahead window
	// copied through for a file read once.
	f, err := c.open(ctx, u, p, os.O_RDONLY|syscall.O_DIRECT, 0, "")
	if err != nil {
		return 0, 0, err
	}
	size = f.Size()
	n, err = f.ReadAt(buf, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, 0, err
	}
	return size, n, nil
}

// open is Open with the client id the meta session is recorded under; ""
// opens a read-only file without a session (ReadFileAt).
func (c *Client) open(ctx context.Context, u meta.User, p meta.PathAt, flags int, mode uint32, clientID string) (*File, error) {
	acc := flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	if acc == os.O_WRONLY|os.O_RDWR {
		return nil, errcode.New(errcode.InvalidArgument, "open %s: access mode %#x is not O_RDONLY, O_WRONLY or O_RDWR", p, acc)
	}
	read, write := acc != os.O_WRONLY, acc != os.O_RDONLY
	trunc := flags&os.O_TRUNC != 0
	var res meta.OpenResult
	var err error
	// A handle of this client that wrote may close while the open is on
	// the wire: meta then answered the length from before that close, and
	// the handle's own view of the length is gone by the time this open
	// joins the inode's state (see below).
	closes := c.writerCloses.Load()
	if flags&os.O_CREATE != 0 {
		res, err = c.mfs.Create(ctx, u, p, meta.CreateOptions{Mode: mode & 0o7777, Exclusive: flags&os.O_EXCL != 0,
			Truncate: trunc, Read: read, Write: write, ClientID: clientID})
	} else {
		res, err = c.mfs.Open(ctx, u, p, meta.OpenOptions{Read: read, Write: write, Truncate: trunc, ClientID: clientID})
	}
	if err != nil {
		return nil, err
	}
	f := &File{c: c, u: u, ino: res.Inode, session: res.Session, read: read, write: write, append: flags&os.O_APPEND != 0,
		direct: flags&syscall.O_DIRECT != 0}
	f.pcond = sync.NewCond(&f.pmu)
	fail := func(err error) (*File, error) {
		if f.session != 0 {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), metaTimeout)
			_, _ = c.mfs.Close(cctx, u, meta.CloseOptions{Inode: f.ino.ID, Session: f.session})
			cancel()
		}
		return nil, err
	}
	switch res.Inode.Type {
	case meta.TypeFile:
	case meta.TypeDir:
		return fail(errcode.New(errcode.IsDirectory, "open %s: is a directory", p))
	default:
		return fail(errcode.New(errcode.InvalidArgument, "open %s: not a regular file (%s)", p, res.Inode.Type))
	}
	if f.chains, err = meta.LayoutChains(ctx, c.cache, res.Inode.Layout); err != nil {
		return fail(err)
	}
	f.stamp = res.Inode.Size*0x9e3779b97f4a7c15 ^ uint64(res.Inode.Mtime.UnixNano())
	f.st = c.acquireInode(res.Inode)
	if c.writerCloses.Load() != closes && !(trunc && write) {
		// Read the length that close finalized (write, close(2), open,
		// read on one FUSE mount read nothing when the kernel's release
		// raced the open: tests/posix).
		if n, serr := c.mfs.Stat(ctx, meta.Root, meta.PathAt{Parent: res.Inode.ID}); serr == nil {
			f.st.opened(int64(n.Size))
		}
	}
	if trunc && write {
		f.st.setSize(int64(res.Inode.Size))
		c.dropCached(res.Inode.ID)
	}
	f.st.addFile(f)
	return f, nil
}

// Inode is the file's inode as opened, with Size as this client sees it.
func (f *File) Inode() meta.Inode {
	n := f.ino
	n.Size = uint64(f.Size())
	return n
}

// Size is the file length as this client sees it: the length at open,
// grown by writes through this client (buffered ones included) and set by
// truncates through it.
func (f *File) Size() int64 { return f.st.getSize() }

func (f *File) maxSize() int64 { return int64(f.ino.Layout.ChunkSize) << 32 }

func (f *File) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(f.c.ctx, metaTimeout)
}

func (f *File) isClosed() bool {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return f.closed
}

// ReadAt reads len(p) bytes at off, as os.File.ReadAt does: fewer bytes
// only at the end of the file, with io.EOF. Holes read as zeros.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if !f.read {
		return 0, errcode.New(errcode.BadFile, "read inode %d: not open for reading", f.ino.ID)
	}
	if off < 0 {
		return 0, errcode.New(errcode.InvalidArgument, "read inode %d: negative offset %d", f.ino.ID, off)
	}
	if f.isClosed() {
		return 0, errcode.New(errcode.BadFile, "read inode %d: %v", f.ino.ID, errClosed)
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Unflushed writes of this client to the range go to storage first.
	if err := f.st.flushOverlapping(off, int64(len(p))); err != nil {
		return 0, err
	}
	size := f.Size()
	if off >= size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	if err := f.readRange(p[:n], off, size); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *File) readRange(p []byte, off, size int64) error {
	if f.direct {
		// O_DIRECT: no caching in this client either; the caller asked
		// for exactly these bytes from storage.
		return f.readDirect(p, off)
	}
	f.mu.Lock()
	seq := off == f.lastEnd
	f.mu.Unlock()
	if f.c.cfg.ReadAhead > 0 {
		if done, err := f.readAhead(p, off, size); done {
			return err
		}
	} else {
		f.mu.Lock()
		f.lastEnd = off + int64(len(p))
		f.mu.Unlock()
	}
	if f.c.data != nil && len(p) < cacheBlock {
		return f.readCached(p, off, size, seq)
	}
	return f.readDirect(p, off)
}

// readAhead serves sequential reads from a window and keeps the next one
// coming. It reports done=false when the read is not sequential.
func (f *File) readAhead(p []byte, off, size int64) (done bool, err error) {
	ra := f.c.cfg.ReadAhead
	n := int64(len(p))
	gen := f.st.generation()
	f.mu.Lock()
	seq := off == f.lastEnd
	f.lastEnd = off + n
	if f.pf != nil && f.pf.gen != gen {
		f.pf = nil // data changed meanwhile; its result is ignored
	}
	if w := f.win; w != nil && w.gen == gen && off >= w.off && off+n <= w.off+int64(len(w.data)) {
		copy(p, w.data[off-w.off:])
		if seq && off+n >= w.off+int64(len(w.data))/2 {
			f.startPrefetchLocked(w.off+int64(len(w.data)), size, gen)
		}
		f.mu.Unlock()
		return true, nil
	}
	if pf := f.pf; pf != nil && off >= pf.off && off < pf.off+pf.n {
		f.mu.Unlock()
		<-pf.done
		f.mu.Lock()
		if f.pf == pf {
			f.pf = nil
			if pf.err == nil {
				f.win = &window{off: pf.off, data: pf.data, gen: pf.gen}
			}
		}
		ok := pf.err == nil && off+n <= pf.off+int64(len(pf.data)) && f.st.generation() == pf.gen
		if ok {
			copy(p, pf.data[off-pf.off:])
			f.startPrefetchLocked(pf.off+int64(len(pf.data)), size, gen)
		}
		f.mu.Unlock()
		return ok, nil
	}
	if !seq || n >= ra {
		f.mu.Unlock()
		return false, nil
	}
	f.pf = nil
	f.mu.Unlock()
	buf := make([]byte, min(ra, size-off))
	if err := f.readDirect(buf, off); err != nil {
		return true, err
	}
	copy(p, buf)
	f.mu.Lock()
	if f.st.generation() == gen {
		f.win = &window{off: off, data: buf, gen: gen}
		f.startPrefetchLocked(off+int64(len(buf)), size, gen)
	}
	f.mu.Unlock()
	return true, nil
}

func (f *File) startPrefetchLocked(from, size int64, gen uint64) {
	if f.pf != nil || from >= size {
		return
	}
	pf := &prefetch{off: from, n: min(f.c.cfg.ReadAhead, size-from), gen: gen, done: make(chan struct{})}
	f.pf = pf
	go func() {
		defer close(pf.done)
		buf := make([]byte, pf.n)
		pf.err = f.readDirect(buf, from)
		pf.data = buf
	}()
}

// dropReadAhead forgets the windows (after this handle changed data).
func (f *File) dropReadAhead() {
	f.mu.Lock()
	f.win, f.pf = nil, nil
	f.mu.Unlock()
}

// readCached serves a small read from cached blocks. Missing blocks are
// fetched whole and cached only when the read continues the previous one
// (seq): a random small read fetches just its own bytes, since fetching
// the aligned block around each would move 32 times the data of a 4 KiB
// read for blocks that random access rarely comes back to.
func (f *File) readCached(p []byte, off, size int64, seq bool) error {
	d := f.c.data
	end := off + int64(len(p))
	if !seq {
		for b := off / cacheBlock; b*cacheBlock < end; b++ {
			bLen := min(int64(cacheBlock), size-b*cacheBlock)
			if data, ok := d.get(f.ino.ID, f.stamp, b); !ok || int64(len(data)) < bLen {
				return f.readDirect(p, off)
			}
		}
	}
	for b := off / cacheBlock; b*cacheBlock < end; b++ {
		bOff := b * cacheBlock
		bLen := min(int64(cacheBlock), size-bOff)
		data, ok := d.get(f.ino.ID, f.stamp, b)
		if !ok || int64(len(data)) < bLen {
			epoch := d.epoch(f.ino.ID)
			data = make([]byte, bLen)
			if err := f.readDirect(data, bOff); err != nil {
				return err
			}
			d.put(f.ino.ID, f.stamp, b, epoch, data)
		}
		lo, hi := max(off, bOff), min(end, bOff+bLen)
		copy(p[lo-off:hi-off], data[lo-bOff:hi-bOff])
	}
	return nil
}

// WriteAt writes p at off (with O_APPEND: at the end of the file, as
// pwrite does on Linux).
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if !f.write {
		return 0, errcode.New(errcode.BadFile, "write inode %d: not open for writing", f.ino.ID)
	}
	if off < 0 {
		return 0, errcode.New(errcode.InvalidArgument, "write inode %d: negative offset %d", f.ino.ID, off)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.closed {
		return 0, errcode.New(errcode.BadFile, "write inode %d: %v", f.ino.ID, errClosed)
	}
	if err := f.lostErr(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if f.append {
		// The end of the file is where every client's appends meet: meta
		// hands out the offset and moves the end in one transaction, so
		// appends from other clients and mounts land after each other
		// instead of over each other (docs/client.md, "O_APPEND").
		ctx, cancel := f.ctx()
		at, err := f.c.mfs.ReserveAppend(ctx, f.u, f.ino.ID, f.session, uint64(len(p)))
		cancel()
		if err != nil {
			return 0, err
		}
		off = int64(at)
	}
	end := off + int64(len(p))
	if end > f.maxSize() {
		return 0, errcode.New(errcode.FileTooLarge, "write inode %d: end %d past the largest file of chunk size %d (%d)", f.ino.ID, end, f.ino.Layout.ChunkSize, f.maxSize())
	}
	if !f.wrote {
		f.wrote = true
		f.st.wroteFirst()
	}
	wb := f.c.cfg.WriteBuffer
	// A write that fills the pipeline by itself goes out straight from the
	// caller's memory (no copy) and is waited for; smaller ones are copied
	// into write-back buffers, which are sent in the background as they
	// fill, so a stream of writes keeps many chunk writes in flight.
	if wb <= 0 || int64(len(p)) >= int64(f.c.writeInFlight)*int64(f.ino.Layout.ChunkSize) && int64(len(p)) >= wb {
		f.flushLocked()
		pw := f.submit(p, off, nil)
		<-pw.done
		if pw.err != nil {
			// Not acknowledged: the caller learns it failed, as from a
			// failed pwrite; the handle stays usable.
			return 0, pw.err
		}
		f.changed(end)
		return len(p), nil
	}
	for rest, at := p, off; len(rest) > 0; {
		f.mu.Lock()
		contiguous := f.wbuf != nil && at == f.wbufOff+int64(len(f.wbuf))
		f.mu.Unlock()
		if !contiguous {
			f.flushLocked()
			f.mu.Lock()
			f.wbuf, f.wbufOff = f.c.getBuf(), at
			f.mu.Unlock()
		}
		f.mu.Lock()
		limit := f.bufferEnd(f.wbufOff)
		k := int(min(int64(len(rest)), limit-at))
		f.wbuf = append(f.wbuf, rest[:k]...)
		full := f.wbufOff+int64(len(f.wbuf)) >= limit
		f.mu.Unlock()
		rest, at = rest[k:], at+int64(k)
		if full {
			f.flushLocked()
		}
	}
	f.changed(end)
	return len(p), nil
}

// bufferEnd is where a write-back buffer starting at off is sent: after
// WriteBuffer bytes, cut back to a chunk boundary when one falls inside, so
// that a sequential stream sends whole chunks and two buffers in flight
// never write the same chunk.
func (f *File) bufferEnd(off int64) int64 {
	end := off + f.c.cfg.WriteBuffer
	if aligned := end - end%int64(f.ino.Layout.ChunkSize); aligned > off {
		return aligned
	}
	return end
}

// changed records data changed through this handle up to end.
func (f *File) changed(end int64) {
	f.st.grew(end)
	f.c.dropCached(f.ino.ID)
	f.dropReadAhead()
}

// lostErr is the failure of a buffered write, if one failed: the handle
// acknowledged bytes storage does not have, and says so on every call.
func (f *File) lostErr() error {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	return f.lost
}

// dirtyOverlaps reports whether [off, off+n) has bytes of this handle
// that storage may not have yet (buffered or in flight).
func (f *File) dirtyOverlaps(off, n int64) bool {
	f.mu.Lock()
	buffered := f.wbuf != nil && off < f.wbufOff+int64(len(f.wbuf)) && off+n > f.wbufOff
	f.mu.Unlock()
	return buffered || f.inFlightOverlaps(off, n)
}

// flushLocked hands the write-back buffer to the pipeline (f.wmu held);
// it returns at once unless the pipeline is full. drainLocked waits.
func (f *File) flushLocked() {
	f.mu.Lock()
	buf, off := f.wbuf, f.wbufOff
	f.wbuf = nil
	f.mu.Unlock()
	if buf == nil {
		return
	}
	f.submit(buf, off, buf)
}

// drainLocked sends the write-back buffer, waits for every write in flight
// and returns the loss of buffered data, if any (f.wmu held).
func (f *File) drainLocked() error {
	f.flushLocked()
	f.waitAll()
	return f.lostErr()
}

// flushForRead makes this handle's writes to [off, off+n) readable from
// storage for a reader; a failure is returned to the reader, and the writer
// keeps reporting it too.
func (f *File) flushForRead(off, n int64) error {
	f.wmu.Lock()
	if !f.closed {
		f.flushLocked()
	}
	f.wmu.Unlock()
	return f.waitRange(off, n)
}

// Flush sends buffered writes to storage. Once it returns, every other
// client reading the range sees them (the length is finalized for others
// by Sync or Close).
func (f *File) Flush() error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.closed {
		return errcode.New(errcode.BadFile, "flush inode %d: %v", f.ino.ID, errClosed)
	}
	return f.drainLocked()
}

// Sync flushes and makes the length durable in meta (fsync).
func (f *File) Sync() error {
	if err := f.Flush(); err != nil {
		return err
	}
	if f.session == 0 || !f.write {
		return nil // a read session has no length to finalize
	}
	ctx, cancel := f.ctx()
	defer cancel()
	_, err := f.c.mfs.Fsync(ctx, f.u, f.ino.ID)
	return err
}

// Truncate sets the file length (through meta, which cuts the chunks).
func (f *File) Truncate(size int64) error {
	if !f.write {
		return errcode.New(errcode.BadFile, "truncate inode %d: not open for writing", f.ino.ID)
	}
	if size < 0 {
		return errcode.New(errcode.InvalidArgument, "truncate inode %d: negative size %d", f.ino.ID, size)
	}
	if size > f.maxSize() {
		return errcode.New(errcode.FileTooLarge, "truncate inode %d: size %d past the largest file (%d)", f.ino.ID, size, f.maxSize())
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.closed {
		return errcode.New(errcode.BadFile, "truncate inode %d: %v", f.ino.ID, errClosed)
	}
	if err := f.drainLocked(); err != nil {
		return err
	}
	ctx, cancel := f.ctx()
	defer cancel()
	_, err := f.c.mfs.Truncate(ctx, f.u, meta.PathAt{Parent: f.ino.ID}, uint64(size))
	f.st.setSize(size)
	f.c.dropCached(f.ino.ID)
	f.dropReadAhead()
	return err
}

// Close flushes, ends the session (finalizing the length from storage
// after writes; a read session's end lets meta remove an unlinked file)
// and releases the file. A second Close fails with EBADF.
func (f *File) Close() error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.closed {
		return errcode.New(errcode.BadFile, "close inode %d: %v", f.ino.ID, errClosed)
	}
	err := f.drainLocked()
	f.closed = true
	f.mu.Lock()
	pf := f.pf
	f.pf, f.win = nil, nil
	f.mu.Unlock()
	if pf != nil {
		<-pf.done
	}
	if f.session != 0 {
		ctx, cancel := f.ctx()
		n, cerr := f.c.mfs.Close(ctx, f.u, meta.CloseOptions{Inode: f.ino.ID, Session: f.session, UpdateLength: f.wrote})
		if cerr == nil && f.wrote && n.Nlink > 0 && n.Mtime.Equal(f.ino.Mtime) {
			// Meta moves mtime only when the length grows; an in-place
			// overwrite must move it too, so that other clients' caches
			// (keyed by size and mtime) see the change on reopen.
			if _, terr := f.c.mfs.SetAttr(ctx, f.u, meta.PathAt{Parent: f.ino.ID}, meta.SetAttr{MtimeNow: true}); terr != nil {
				f.c.log.Debug("touching mtime after an overwrite failed", "inode", f.ino.ID, "err", terr)
			}
		}
		cancel()
		if err == nil {
			err = cerr
		}
	}
	if f.wrote {
		f.c.writerCloses.Add(1) // before the state forgets this writer's length: see Open
		f.st.writerClosed()
	}
	f.st.removeFile(f)
	f.c.releaseInode(f.ino.ID, f.st)
	return err
}
