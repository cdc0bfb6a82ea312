package fuse

import (
	"context"
	"math"
	"sync"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// Advisory locks (flock and fcntl byte-range locks, OFD locks included) are
// kept by the metadata service (service/meta/locks.go), so they hold
// across mounts and clients; the kernel forwards them (EnableLocks) and
// keeps none itself. A lock's owner is this mount's client id plus the
// kernel's lock owner: the process's file table for fcntl locks, the open
// file description for flock and OFD locks.
//
// Releasing them is this mount's job, because the kernel keeps no list:
//   - fcntl locks go when their process closes any descriptor of the file:
//     the kernel sends FLUSH with the closing process's lock owner
//     (lockFS.Flush);
//   - flock and OFD locks go with the open file description: RELEASE
//     (fileHandle.Release drops every owner that locked through the handle);
//   - a mount that dies loses its client lease, and meta then treats its
//     locks as gone.

// offsetMax is the kernel's OFFSET_MAX: a lock "to the end of the file".
const offsetMax = math.MaxInt64

// lockOwners records the fcntl lock owners that set locks through this
// mount, per kernel node id (go-fuse's, not the inode id: FLUSH names the
// node), so a close asks meta only when its process holds locks on the
// file, not on every close.
type lockOwners struct {
	mu    sync.Mutex
	posix map[uint64]map[uint64]struct{} // node id -> kernel lock owners
}

func (o *lockOwners) add(ino, owner uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.posix == nil {
		o.posix = map[uint64]map[uint64]struct{}{}
	}
	if o.posix[ino] == nil {
		o.posix[ino] = map[uint64]struct{}{}
	}
	o.posix[ino][owner] = struct{}{}
}

// take forgets owner's fcntl locks on ino and reports whether it had any.
func (o *lockOwners) take(ino, owner uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	owners := o.posix[ino]
	if _, ok := owners[owner]; !ok {
		return false
	}
	delete(owners, owner)
	if len(owners) == 0 {
		delete(o.posix, ino)
	}
	return true
}

// lockOf converts a kernel lock request to meta's form.
func (fsys *fileSystem) lockOf(owner uint64, lk *gofuse.FileLock, flags uint32) (meta.FileLock, syscall.Errno) {
	l := meta.FileLock{Client: fsys.clientID, Owner: owner, Flock: flags&gofuse.FUSE_LK_FLOCK != 0,
		Start: lk.Start, End: lk.End, Pid: lk.Pid}
	switch lk.Typ {
	case syscall.F_RDLCK:
		l.Type = meta.LockRead
	case syscall.F_WRLCK:
		l.Type = meta.LockWrite
	case syscall.F_UNLCK:
		l.Type = meta.LockUnlock
	default:
		return l, syscall.EINVAL
	}
	if l.End >= offsetMax {
		l.End = meta.LockToEOF
	}
	if l.Start > l.End {
		return l, syscall.EINVAL
	}
	return l, 0
}

func (h *fileHandle) Getlk(ctx context.Context, owner uint64, lk *gofuse.FileLock, flags uint32, out *gofuse.FileLock) syscall.Errno {
	l, errno := h.fsys.lockOf(owner, lk, flags)
	if errno != 0 {
		return errno
	}
	res, err := h.fsys.meta.Lock(opCtx(ctx), root, meta.LockRequest{Inode: h.id, Lock: l, Test: true})
	if err != nil {
		return h.fsys.errno("getlk", err)
	}
	*out = gofuse.FileLock{Typ: syscall.F_UNLCK}
	if c := res.Conflict; c != nil {
		out.Start, out.End, out.Pid = c.Start, min(c.End, offsetMax), c.Pid
		out.Typ = syscall.F_RDLCK
		if c.Type == meta.LockWrite {
			out.Typ = syscall.F_WRLCK
		}
	}
	return 0
}

func (h *fileHandle) Setlk(ctx context.Context, owner uint64, lk *gofuse.FileLock, flags uint32) syscall.Errno {
	l, errno := h.fsys.lockOf(owner, lk, flags)
	if errno != 0 {
		return errno
	}
	return h.setLock(ctx, l)
}

// Setlkw waits for the lock by trying again, backing off to half a second
// between tries: meta does not queue waiters or wake them (so there is no
// fairness among waiters and no EDEADLK detection; docs/fuse.md). A signal
// to the waiting process (FUSE interrupt) ends the wait with EINTR.
func (h *fileHandle) Setlkw(ctx context.Context, owner uint64, lk *gofuse.FileLock, flags uint32) syscall.Errno {
	l, errno := h.fsys.lockOf(owner, lk, flags)
	if errno != 0 {
		return errno
	}
	pause := 5 * time.Millisecond
	for {
		errno := h.setLock(ctx, l)
		if errno != syscall.EAGAIN {
			return errno
		}
		select {
		case <-ctx.Done():
			return syscall.EINTR
		case <-time.After(pause):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

func (h *fileHandle) setLock(ctx context.Context, l meta.FileLock) syscall.Errno {
	if l.Type != meta.LockUnlock {
		// Recorded before the call: a lock that lands although the answer
		// is lost must still be released at close.
		h.noteOwner(l)
	}
	_, err := h.fsys.meta.Lock(opCtx(ctx), root, meta.LockRequest{Inode: h.id, Lock: l})
	if errcode.Is(err, errcode.Busy) {
		return syscall.EAGAIN // not the EIO that fsys.errno makes of EAGAIN
	}
	return h.fsys.errno("setlk", err)
}

// handleOwner is a lock owner that locked through a handle.
type handleOwner struct {
	owner uint64
	flock bool
}

func (h *fileHandle) noteOwner(l meta.FileLock) {
	h.lockMu.Lock()
	if h.lockOwners == nil {
		h.lockOwners = map[handleOwner]struct{}{}
	}
	h.lockOwners[handleOwner{l.Owner, l.Flock}] = struct{}{}
	h.lockMu.Unlock()
}

// releaseLocks drops, at the last close of the open file description, the
// locks of every owner that locked through it: flock and OFD locks belong
// to the description, and a process's fcntl locks were already dropped by
// the FLUSH of its close (dropping them again changes nothing).
func (h *fileHandle) releaseLocks(ctx context.Context) {
	h.lockMu.Lock()
	owners := h.lockOwners
	h.lockOwners = nil
	h.lockMu.Unlock()
	for o := range owners {
		h.fsys.unlockAll(ctx, h.id, o.owner, o.flock)
	}
}

// unlockAll removes every lock of owner on inode ino.
func (fsys *fileSystem) unlockAll(ctx context.Context, ino, owner uint64, flock bool) {
	l := meta.FileLock{Client: fsys.clientID, Owner: owner, Flock: flock, Type: meta.LockUnlock, Start: 0, End: meta.LockToEOF}
	if _, err := fsys.meta.Lock(ctx, root, meta.LockRequest{Inode: ino, Lock: l}); err != nil &&
		!errcode.Is(err, errcode.Stale) && !errcode.Is(err, errcode.NotFound) {
		// The lock stays until this mount's lease ends (unmount or death).
		fsys.log.Warn("releasing file locks at close failed", "inode", ino, "owner", owner, "err", err)
	}
}

// lockFS is the go-fuse bridge with fcntl lock release on FLUSH: the lock
// owner of the closing process is in the FLUSH request only, which the
// fs package does not pass on. It notes which owners lock which nodes,
// and a FLUSH by such an owner unlocks its whole range through the
// flushed handle (fileHandle.Setlk).
type lockFS struct {
	gofuse.RawFileSystem
	fsys *fileSystem
}

func (r lockFS) note(in *gofuse.LkIn) {
	if in.LkFlags&gofuse.FUSE_LK_FLOCK == 0 && in.Lk.Typ != syscall.F_UNLCK {
		r.fsys.locks.add(in.NodeId, in.Owner)
	}
}

func (r lockFS) SetLk(cancel <-chan struct{}, in *gofuse.LkIn) gofuse.Status {
	r.note(in)
	return r.RawFileSystem.SetLk(cancel, in)
}

func (r lockFS) SetLkw(cancel <-chan struct{}, in *gofuse.LkIn) gofuse.Status {
	r.note(in)
	return r.RawFileSystem.SetLkw(cancel, in)
}

func (r lockFS) Flush(cancel <-chan struct{}, in *gofuse.FlushIn) gofuse.Status {
	st := r.RawFileSystem.Flush(cancel, in) // data first: whoever gets the lock next must see it
	if r.fsys.locks.take(in.NodeId, in.LockOwner) {
		unlock := &gofuse.LkIn{InHeader: in.InHeader, Fh: in.Fh, Owner: in.LockOwner,
			Lk: gofuse.FileLock{Start: 0, End: offsetMax, Typ: syscall.F_UNLCK}}
		if ust := r.RawFileSystem.SetLk(nil, unlock); !ust.Ok() {
			r.fsys.log.Warn("releasing fcntl locks at close failed", "node", in.NodeId, "owner", in.LockOwner, "status", ust)
		}
	}
	return st
}
