package fuse

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// root is the identity the mount itself uses for calls that are not made on
// behalf of a caller (attribute refreshes by inode id, keeping unlinked open
// files alive); the kernel has already checked the caller's permissions.
var root = meta.User{}

// fileSystem is the state one mount shares between its nodes.
type fileSystem struct {
	b     Backend
	meta  meta.FS
	opts  Options
	log   *slog.Logger
	creds *credCache
	// xattrs remembers xattr names found absent (xattr.go).
	xattrs *missingXattrs
	// clientID owns the file locks taken through this mount; locks
	// records which fcntl lock owners hold locks (locks.go).
	clientID string
	locks    lockOwners

	mu   sync.Mutex
	open map[uint64]*openInode // inode id -> handles open through this mount
	// releases records which inodes had handles released; see fillAttr.
	releases releaseLog
}

// openInode is what this mount has open of one inode. pin is a write session
// the mount opens when a name of the inode is removed while it is open:
// meta keeps an inode with write sessions after its last link goes, so the
// open handles can go on reading it (the POSIX "unlinked while open" rule).
type openInode struct {
	handles map[*fileHandle]struct{}
	pin     File
}

func newFileSystem(b Backend, opts Options) *fileSystem {
	var m meta.FS
	var id string
	if b != nil {
		m = boundedMeta{fs: b.Meta(), d: opts.MetaTimeout}
		id = b.ClientID()
	}
	return &fileSystem{b: b, meta: m, clientID: id, opts: opts, log: opts.Logger.With("component", "fuse"),
		creds: newCredCache(), open: map[uint64]*openInode{}, xattrs: newMissingXattrs(opts.AttrTimeout)}
}

// ctx strips the FUSE interrupt from a request's context: a call that is
// abandoned half-way (the caller got a signal, and Go programs get SIGURG
// all the time) could have changed the namespace after all, so every call
// runs to completion, bounded by Options.MetaTimeout (boundedMeta) and the
// client's own timeouts.
func opCtx(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// errno converts an EmberFS error to what the kernel returns to the caller.
func (fsys *fileSystem) errno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	n := errcode.ErrnoOf(err)
	switch n {
	case syscall.EAGAIN:
		// A service that stayed unavailable past the retries: to a
		// blocking system call that is an I/O error, not "try again"
		// (which callers of read/write treat as a non-blocking miss).
		n = syscall.EIO
		fallthrough
	case syscall.EIO, syscall.ETIMEDOUT:
		// Not a file-system answer but a failure: worth a log line.
		fsys.log.Warn("operation failed", "op", op, "err", err)
	}
	return n
}

func typeMode(t meta.FileType) uint32 { return t.ModeType() }

// releaseLog numbers handle releases and remembers the inodes of the last
// few, so that an attribute read can tell whether a handle of *its* inode was
// released while it ran (a mount-wide counter made every stat that overlapped
// any close elsewhere on the mount ask meta a second time).
type releaseLog struct {
	mu  sync.Mutex
	seq uint64
	ids [256]uint64 // ids[n % 256] is the inode of release n
}

func (l *releaseLog) now() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

func (l *releaseLog) add(id uint64) {
	l.mu.Lock()
	l.seq++
	l.ids[l.seq%uint64(len(l.ids))] = id
	l.mu.Unlock()
}

// releasedSince reports whether a handle of id may have been released after
// now() returned since (true when too many releases happened to tell).
func (l *releaseLog) releasedSince(id, since uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seq-since > uint64(len(l.ids)) {
		return true
	}
	for n := since + 1; n <= l.seq; n++ {
		if l.ids[n%uint64(len(l.ids))] == id {
			return true
		}
	}
	return false
}

// fillAttr converts an inode to FUSE attributes. Files this mount has open
// for writing report the size their handles see (buffered writes included);
// the metadata service learns it on flush, fsync or close.
//
// since is fsys.releases.now() read before in was fetched: a handle of in
// released meanwhile may have finalized a length newer than in's, so the
// size is read again.
func (fsys *fileSystem) fillAttr(ctx context.Context, in *meta.Inode, since uint64, out *gofuse.Attr) {
	out.Ino = in.ID
	out.Mode = typeMode(in.Type) | in.Mode&meta.ModePerm
	out.Nlink = in.Nlink
	out.Rdev = in.Rdev
	out.Owner = gofuse.Owner{Uid: in.UID, Gid: in.GID}
	out.Size = in.Size
	mtime, ctime := in.Mtime, in.Ctime
	if in.Type == meta.TypeFile {
		sz, ok, releasing := fsys.openSize(in.ID)
		fresh := func() {
			if n, err := fsys.meta.Stat(ctx, root, meta.PathAt{Parent: in.ID}); err == nil {
				out.Size, mtime, ctime = n.Size, n.Mtime, n.Ctime
			}
		}
		if len(releasing) > 0 {
			// A writable handle is being released: its close is setting
			// the final length (and mtime) in meta. Neither the handle's
			// size (a truncate by path may have passed it by) nor in's
			// (older than the close) is the answer; the length after the
			// close is.
			for _, done := range releasing {
				<-done
			}
			fresh()
			sz, ok, _ = fsys.openSize(in.ID)
		}
		if ok {
			out.Size = sz
		} else if len(releasing) == 0 && fsys.releases.releasedSince(in.ID, since) {
			fresh()
		}
		// Meta moves mtime when a writer's length is finalized (fsync,
		// close); until then the last write through this mount is the
		// file's mtime and ctime, as write(2) sets them on a local file
		// system.
		if w := fsys.lastWrite(in.ID); w.After(mtime) {
			mtime = w
			if w.After(ctime) {
				ctime = w
			}
		}
	}
	if in.Type == meta.TypeDir && out.Size == 0 {
		out.Size = 4096
	}
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = MaxWrite // the best I/O size: one full FUSE request
	out.SetTimes(&in.Atime, &mtime, &ctime)
}

// lastWrite is the time of the latest write through a handle of inode id
// still open (not being released) on this mount; zero if none.
func (fsys *fileSystem) lastWrite(id uint64) time.Time {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	var last int64
	if oi := fsys.open[id]; oi != nil {
		for h := range oi.handles {
			if !h.releasing {
				last = max(last, h.lastWrite.Load())
			}
		}
	}
	if last == 0 {
		return time.Time{}
	}
	return time.Unix(0, last)
}

// openSize is the largest size a writable handle of inode id reports, and
// the release-finished channels of writable handles being released (their
// sizes do not count).
func (fsys *fileSystem) openSize(id uint64) (uint64, bool, []chan struct{}) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	oi := fsys.open[id]
	if oi == nil {
		return 0, false, nil
	}
	var size int64 = -1
	var releasing []chan struct{}
	for h := range oi.handles {
		switch f := h.opened(); {
		case !h.writable:
		case h.releasing:
			releasing = append(releasing, h.released)
		case f != nil:
			size = max(size, f.Size())
		}
	}
	return uint64(size), size >= 0, releasing
}

// settleLength makes the length of inode id final in meta as far as this
// mount's handles go: it waits for handles being released (their close
// finalizes the length) and syncs the open writable ones. Meta moves a
// file's mtime when a close or fsync grows its length, so an explicit time
// set before that would be lost.
func (fsys *fileSystem) settleLength(id uint64) error {
	var files []File
	var releasing []chan struct{}
	fsys.mu.Lock()
	if oi := fsys.open[id]; oi != nil {
		for h := range oi.handles {
			switch f := h.opened(); {
			case !h.writable:
			case h.releasing:
				releasing = append(releasing, h.released)
			case f != nil:
				files = append(files, f)
			}
		}
	}
	fsys.mu.Unlock()
	for _, done := range releasing {
		<-done
	}
	for _, f := range files {
		// A handle closed meanwhile (EBADF) has finalized the length itself.
		if err := f.Sync(); err != nil && !errcode.Is(err, errcode.BadFile) {
			return err
		}
	}
	return nil
}

// writableHandle returns a handle of inode id open for writing, if any.
func (fsys *fileSystem) writableHandle(id uint64) *fileHandle {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if oi := fsys.open[id]; oi != nil {
		for h := range oi.handles {
			if h.writable && !h.releasing {
				return h
			}
		}
	}
	return nil
}

func (fsys *fileSystem) register(h *fileHandle) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	oi := fsys.open[h.id]
	if oi == nil {
		oi = &openInode{handles: map[*fileHandle]struct{}{}}
		fsys.open[h.id] = oi
	}
	oi.handles[h] = struct{}{}
}

// unregister forgets h and returns the pin to close once the inode's last
// handle is gone.
func (fsys *fileSystem) unregister(h *fileHandle) File {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	oi := fsys.open[h.id]
	if oi == nil {
		return nil
	}
	delete(oi.handles, h)
	fsys.releases.add(h.id)
	if len(oi.handles) > 0 {
		return nil
	}
	delete(fsys.open, h.id)
	return oi.pin
}

// pinIfOpen keeps inode id alive (see openInode) before a name of it is
// removed, if this mount has it open.
func (fsys *fileSystem) pinIfOpen(ctx context.Context, id uint64) {
	fsys.mu.Lock()
	oi := fsys.open[id]
	need := oi != nil && oi.pin == nil
	fsys.mu.Unlock()
	if !need {
		return
	}
	pin, err := fsys.openBounded(ctx, root, meta.PathAt{Parent: id}, os.O_WRONLY, 0)
	if err != nil {
		fsys.log.Warn("cannot keep open file alive across unlink", "inode", id, "err", err)
		return
	}
	fsys.mu.Lock()
	oi = fsys.open[id]
	if oi != nil && oi.pin == nil {
		oi.pin, pin = pin, nil
	}
	fsys.mu.Unlock()
	if pin != nil { // closed meanwhile, or pinned by a racing unlink
		_ = pin.Close()
	}
}

// fileHandle is one open(2) of a regular file.
type fileHandle struct {
	fsys     *fileSystem
	id       uint64
	writable bool
	// appends: opened O_APPEND (the client puts every write at the end).
	appends bool
	// releasing (guarded by fsys.mu) is set once Release starts closing f:
	// the kernel sends RELEASE after close(2) has returned, so a truncate(2)
	// may arrive meanwhile and must not use the closing handle. released
	// is closed once Release has finished.
	releasing bool
	released  chan struct{}
	// lastWrite is when the handle last wrote (unix ns; fillAttr).
	lastWrite atomic.Int64

	// cur is the client's open file. It is nil for a file this mount
	// created and has not read or written yet (see createFile): meta
	// created it without a write session, and the file is opened on first
	// use, as root with lazyFlags (the creator may write a new file
	// whatever its mode; the kernel checked the create).
	cur       atomic.Pointer[openedFile]
	openMu    sync.Mutex // serializes the lazy open
	lazyFlags int
	created   meta.Inode // the inode as created, for a handle not opened yet

	// lockOwners are the lock owners that set locks through this handle,
	// released with it (locks.go).
	lockMu     sync.Mutex
	lockOwners map[handleOwner]struct{}
}

type openedFile struct{ File }

// opened is the client file, nil while the handle is lazy.
func (h *fileHandle) opened() File {
	if o := h.cur.Load(); o != nil {
		return o.File
	}
	return nil
}

// file is the client file, opened now if the handle was lazy.
func (h *fileHandle) file(ctx context.Context) (File, error) {
	if f := h.opened(); f != nil {
		return f, nil
	}
	h.openMu.Lock()
	defer h.openMu.Unlock()
	if f := h.opened(); f != nil {
		return f, nil
	}
	f, err := h.fsys.openClient(ctx, root, meta.PathAt{Parent: h.id}, h.lazyFlags, 0)
	if err != nil {
		return nil, err
	}
	h.cur.Store(&openedFile{f})
	return f, nil
}

// inode is the handle's inode as the client file sees it.
func (h *fileHandle) inode() meta.Inode {
	if f := h.opened(); f != nil {
		return f.Inode()
	}
	return h.created
}

func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	f, err := h.file(opCtx(ctx))
	if err != nil {
		return nil, h.fsys.errno("read", err)
	}
	n, err := f.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.fsys.errno("read", err)
	}
	return gofuse.ReadResultData(dest[:n]), 0
}

func (h *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f, err := h.file(opCtx(ctx))
	if err != nil {
		return 0, h.fsys.errno("write", err)
	}
	n, err := f.WriteAt(data, off)
	h.lastWrite.Store(time.Now().UnixNano())
	if err != nil {
		return uint32(n), h.fsys.errno("write", err)
	}
	return uint32(n), 0
}

// Flush runs on every close(2) of a descriptor (and dup); its error is what
// close returns, so buffered writes are pushed here. A lazy handle has
// nothing buffered.
func (h *fileHandle) Flush(ctx context.Context) syscall.Errno {
	f := h.opened()
	if !h.writable || f == nil {
		return 0
	}
	return h.fsys.errno("flush", f.Flush())
}

// Fsync: a lazy handle has written nothing, and its create was durable
// when it returned.
func (h *fileHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	f := h.opened()
	if !h.writable || f == nil {
		return 0
	}
	return h.fsys.errno("fsync", f.Sync())
}

// Release runs when the kernel drops the last reference to the open file.
// A lazy handle has no session to end: a create-and-close costs one
// metadata commit.
func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	h.fsys.mu.Lock()
	h.releasing = true
	h.released = make(chan struct{})
	h.fsys.mu.Unlock()
	defer close(h.released)
	h.openMu.Lock() // no lazy open may start after this
	var err error
	if f := h.opened(); f != nil {
		err = f.Close()
	}
	h.cur.Store(&openedFile{closedFile{}})
	h.openMu.Unlock()
	h.releaseLocks(opCtx(ctx))
	if pin := h.fsys.unregister(h); pin != nil {
		if perr := pin.Close(); perr != nil {
			h.fsys.log.Warn("closing the session that kept an unlinked file alive", "inode", h.id, "err", perr)
		}
	}
	return h.fsys.errno("release", err)
}

// openFlags maps open(2) flags to what the client is asked for. O_APPEND is
// passed on: the kernel's append offset is its cached size, which another
// client's appends have moved past, so the client asks meta for the offset
// of every append write (docs/fuse.md, "O_APPEND"). O_DIRECT is passed on:
// the client then skips its read-ahead and data cache.
func (fsys *fileSystem) openFlags(flags uint32) int {
	f := int(flags) & (syscall.O_ACCMODE | syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC | syscall.O_DIRECT | syscall.O_APPEND)
	return f
}

// openClient opens p through the client; with the writeback cache the
// kernel may read pages of a file opened write-only (to fill partial pages),
// so such opens ask for read access too when the caller has it.
func (fsys *fileSystem) openClient(ctx context.Context, u meta.User, p meta.PathAt, f int, mode uint32) (File, error) {
	if fsys.opts.WritebackCache && f&syscall.O_ACCMODE == syscall.O_WRONLY {
		file, err := fsys.openBounded(ctx, u, p, f&^syscall.O_ACCMODE|syscall.O_RDWR, mode)
		if errcode.ErrnoOf(err) != syscall.EACCES {
			return file, err
		}
	}
	return fsys.openBounded(ctx, u, p, f, mode)
}

// openFile opens p through the client as u and registers the handle.
func (fsys *fileSystem) openFile(ctx context.Context, u meta.User, p meta.PathAt, flags uint32, mode uint32) (*fileHandle, syscall.Errno) {
	f := fsys.openFlags(flags)
	file, err := fsys.openClient(ctx, u, p, f, mode)
	if err != nil {
		return nil, fsys.errno("open", err)
	}
	return fsys.registerOpened(file, f), 0
}

// registerOpened registers a handle for file, opened with open(2) flags f.
func (fsys *fileSystem) registerOpened(file File, f int) *fileHandle {
	h := &fileHandle{fsys: fsys, id: file.Inode().ID, writable: f&syscall.O_ACCMODE != syscall.O_RDONLY, appends: f&syscall.O_APPEND != 0}
	h.cur.Store(&openedFile{file})
	fsys.register(h)
	return h
}

// createFile serves create(2) (open with O_CREAT) with one metadata call
// when the file is new: meta creates it without a write session, and the
// handle opens the client file (which starts the session) only if it is
// read or written. A create-and-close thus costs one commit instead of
// three (create with a session and a client lease, then the close that
// ends the session). A name that already exists is opened the ordinary
// way, as the caller, with the caller's flags (O_TRUNC included).
func (fsys *fileSystem) createFile(ctx context.Context, u meta.User, p meta.PathAt, flags uint32, mode uint32) (*fileHandle, meta.Inode, syscall.Errno) {
	f := fsys.openFlags(flags)
	res, err := fsys.meta.Create(ctx, u, p, meta.CreateOptions{Mode: mode, Exclusive: f&syscall.O_EXCL != 0})
	if err != nil {
		return nil, meta.Inode{}, fsys.errno("create", err)
	}
	if !res.Created || res.Inode.Type != meta.TypeFile {
		h, errno := fsys.openFile(ctx, u, p, flags|syscall.O_CREAT, mode)
		if errno != 0 {
			return nil, meta.Inode{}, errno
		}
		return h, h.inode(), 0
	}
	h := &fileHandle{fsys: fsys, id: res.Inode.ID, writable: f&syscall.O_ACCMODE != syscall.O_RDONLY, appends: f&syscall.O_APPEND != 0,
		lazyFlags: f &^ (syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC), created: res.Inode}
	fsys.register(h)
	return h, res.Inode, 0
}

// fuseOpenFlags are the FOPEN_* flags answered to an open with open(2)
// flags. An O_DIRECT open (or a --direct-io mount) gets FOPEN_DIRECT_IO:
// no page cache for the handle, every read and write reaches EmberFS with
// the caller's size. Every other open gets FOPEN_KEEP_CACHE: the kernel
// keeps the file's cached pages instead of dropping them at each open,
// which is safe because node.Open first drops them itself when the file
// changed since this mount last described it (close-to-open).
//
// An O_APPEND open gets FOPEN_DIRECT_IO too: its writes land where meta
// says, not at the offset the kernel chose, so the kernel must not cache
// them at its offset.
func (fsys *fileSystem) fuseOpenFlags(flags uint32) uint32 {
	if fsys.opts.DirectIO || flags&(syscall.O_DIRECT|syscall.O_APPEND) != 0 {
		return gofuse.FOPEN_DIRECT_IO
	}
	return gofuse.FOPEN_KEEP_CACHE
}

func setTime(t time.Time) *time.Time { return &t }

// closedFile stands in for the file of a released handle, so that a late
// lazy open cannot start a session nobody would end.
type closedFile struct{}

var errReleased = errcode.New(errcode.BadFile, "file handle already released")

func (closedFile) ReadAt([]byte, int64) (int, error)  { return 0, errReleased }
func (closedFile) WriteAt([]byte, int64) (int, error) { return 0, errReleased }
func (closedFile) Truncate(int64) error               { return errReleased }
func (closedFile) Flush() error                       { return nil }
func (closedFile) Sync() error                        { return nil }
func (closedFile) Close() error                       { return nil }
func (closedFile) Inode() meta.Inode                  { return meta.Inode{} }
func (closedFile) Size() int64                        { return -1 }
