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

	mu   sync.Mutex
	open map[uint64]*openInode // inode id -> handles open through this mount
	// releases counts handles unregistered; see fillAttr.
	releases atomic.Uint64
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
	if b != nil {
		m = boundedMeta{fs: b.Meta(), d: opts.MetaTimeout}
	}
	return &fileSystem{b: b, meta: m, opts: opts, log: opts.Logger.With("component", "fuse"),
		creds: newCredCache(), open: map[uint64]*openInode{}}
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

func typeMode(t meta.FileType) uint32 {
	switch t {
	case meta.TypeDir:
		return syscall.S_IFDIR
	case meta.TypeSymlink:
		return syscall.S_IFLNK
	}
	return syscall.S_IFREG
}

// fillAttr converts an inode to FUSE attributes. Files this mount has open
// for writing report the size their handles see (buffered writes included);
// the metadata service learns it on flush, fsync or close.
//
// since is fsys.releases read before in was fetched: a handle released
// meanwhile may have finalized a length newer than in's, so the size is
// read again.
func (fsys *fileSystem) fillAttr(ctx context.Context, in *meta.Inode, since uint64, out *gofuse.Attr) {
	out.Ino = in.ID
	out.Mode = typeMode(in.Type) | in.Mode&meta.ModePerm
	out.Nlink = in.Nlink
	out.Owner = gofuse.Owner{Uid: in.UID, Gid: in.GID}
	out.Size = in.Size
	if in.Type == meta.TypeFile {
		if sz, ok := fsys.openSize(in.ID); ok {
			out.Size = sz
		} else if fsys.releases.Load() != since {
			if fresh, err := fsys.meta.Stat(ctx, root, meta.PathAt{Parent: in.ID}); err == nil {
				out.Size = fresh.Size
			}
		}
	}
	if in.Type == meta.TypeDir && out.Size == 0 {
		out.Size = 4096
	}
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = MaxWrite // the best I/O size: one full FUSE request
	out.SetTimes(&in.Atime, &in.Mtime, &in.Ctime)
}

// openSize is the largest size a writable handle of inode id reports.
func (fsys *fileSystem) openSize(id uint64) (uint64, bool) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	oi := fsys.open[id]
	if oi == nil {
		return 0, false
	}
	var size int64 = -1
	for h := range oi.handles {
		if h.writable {
			size = max(size, h.f.Size())
		}
	}
	return uint64(size), size >= 0
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
	fsys.releases.Add(1)
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
	f        File
	writable bool
	// releasing (guarded by fsys.mu) is set once Release starts closing f:
	// the kernel sends RELEASE after close(2) has returned, so a truncate(2)
	// may arrive meanwhile and must not use the closing handle.
	releasing bool
}

func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	n, err := h.f.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.fsys.errno("read", err)
	}
	return gofuse.ReadResultData(dest[:n]), 0
}

func (h *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := h.f.WriteAt(data, off)
	if err != nil {
		return uint32(n), h.fsys.errno("write", err)
	}
	return uint32(n), 0
}

// Flush runs on every close(2) of a descriptor (and dup); its error is what
// close returns, so buffered writes are pushed here.
func (h *fileHandle) Flush(ctx context.Context) syscall.Errno {
	if !h.writable {
		return 0
	}
	return h.fsys.errno("flush", h.f.Flush())
}

func (h *fileHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if !h.writable {
		return 0
	}
	return h.fsys.errno("fsync", h.f.Sync())
}

// Release runs when the kernel drops the last reference to the open file.
func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	h.fsys.mu.Lock()
	h.releasing = true
	h.fsys.mu.Unlock()
	err := h.f.Close()
	if pin := h.fsys.unregister(h); pin != nil {
		if perr := pin.Close(); perr != nil {
			h.fsys.log.Warn("closing the session that kept an unlinked file alive", "inode", h.id, "err", perr)
		}
	}
	return h.fsys.errno("release", err)
}

// openFlags maps open(2) flags to what the client is asked for. O_APPEND is
// dropped: the kernel computes the offset of every append itself.
func (fsys *fileSystem) openFlags(flags uint32) int {
	f := int(flags) & (syscall.O_ACCMODE | syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC)
	return f
}

// openFile opens p through the client; with the writeback cache the kernel
// may read pages of a file opened write-only (to fill partial pages), so
// such opens ask for read access too when the caller has it.
func (fsys *fileSystem) openFile(ctx context.Context, u meta.User, p meta.PathAt, flags uint32, mode uint32) (*fileHandle, syscall.Errno) {
	f := fsys.openFlags(flags)
	var file File
	var err error
	if fsys.opts.WritebackCache && f&syscall.O_ACCMODE == syscall.O_WRONLY {
		file, err = fsys.openBounded(ctx, u, p, f&^syscall.O_ACCMODE|syscall.O_RDWR, mode)
		if errcode.ErrnoOf(err) == syscall.EACCES {
			file, err = fsys.openBounded(ctx, u, p, f, mode)
		}
	} else {
		file, err = fsys.openBounded(ctx, u, p, f, mode)
	}
	if err != nil {
		return nil, fsys.errno("open", err)
	}
	h := &fileHandle{fsys: fsys, id: file.Inode().ID, f: file, writable: f&syscall.O_ACCMODE != syscall.O_RDONLY}
	fsys.register(h)
	return h, 0
}

func (fsys *fileSystem) fuseOpenFlags() uint32 {
	if fsys.opts.DirectIO {
		return gofuse.FOPEN_DIRECT_IO
	}
	return 0
}

func setTime(t time.Time) *time.Time { return &t }
