package client

import (
	"syscall"

	"github.com/emberfs/emberfs/internal/errcode"
)

// The write pipeline of an open file: writes are handed to goroutines that
// send them to storage (fanned out over chunks, so over the stripe's
// chains), at most Config.WriteInFlight per file. A write waits for any
// earlier write in flight that overlaps it, so writes through one File are
// still applied in call order. A failed write that was buffered (its
// WriteAt already returned success) is data lost: it is kept in f.lost and
// every later WriteAt, Flush, Sync, Truncate and Close fails with it (EIO),
// so a retried write cannot paper over the hole (issue 13, hole 10). A
// write sent straight from the caller's memory fails only its own WriteAt.
// Flush, Sync, Truncate and Close wait for every write in flight; a read
// waits for those overlapping it.

// pendingWrite is one write sent to storage and not yet acknowledged.
type pendingWrite struct {
	off, end int64
	done     chan struct{}
	err      error // set before done is closed
}

func (w *pendingWrite) overlaps(off, n int64) bool { return off < w.end && off+n > w.off }

// submit starts writing p at off, once fewer than WriteInFlight writes are
// in flight and none overlaps [off, off+len(p)). owned, when not nil, is a
// pool buffer returned to the pool when the write is done. The caller
// holds f.wmu.
func (f *File) submit(p []byte, off int64, owned []byte) *pendingWrite {
	w := &pendingWrite{off: off, end: off + int64(len(p)), done: make(chan struct{})}
	f.pmu.Lock()
	for len(f.inflight) >= f.c.writeInFlight || f.overlapsLocked(off, int64(len(p))) {
		f.pcond.Wait()
	}
	f.inflight = append(f.inflight, w)
	f.pmu.Unlock()
	go func() {
		_, err := f.writeDirect(p, off)
		if err != nil {
			err = writeFailed(f.ino.ID, off, w.end, owned != nil, err)
		}
		f.pmu.Lock()
		for i, x := range f.inflight {
			if x == w {
				f.inflight = append(f.inflight[:i], f.inflight[i+1:]...)
				break
			}
		}
		if err != nil && owned != nil && f.lost == nil {
			f.lost = err
		}
		w.err = err
		close(w.done)
		f.pcond.Broadcast()
		f.pmu.Unlock()
		// Readers that fetched the old bytes while the write ran must not
		// cache them.
		f.changed(w.end)
		if owned != nil {
			f.c.putBuf(owned)
		}
	}()
	return w
}

func (f *File) overlapsLocked(off, n int64) bool {
	for _, w := range f.inflight {
		if w.overlaps(off, n) {
			return true
		}
	}
	return false
}

func (f *File) inFlightOverlaps(off, n int64) bool {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	return f.overlapsLocked(off, n)
}

// waitAll waits until no write is in flight.
func (f *File) waitAll() {
	f.pmu.Lock()
	for len(f.inflight) > 0 {
		f.pcond.Wait()
	}
	f.pmu.Unlock()
}

// waitRange waits for the writes in flight overlapping [off, off+n) and
// returns the first of their errors.
func (f *File) waitRange(off, n int64) error {
	f.pmu.Lock()
	var ws []*pendingWrite
	for _, w := range f.inflight {
		if w.overlaps(off, n) {
			ws = append(ws, w)
		}
	}
	f.pmu.Unlock()
	var err error
	for _, w := range ws {
		<-w.done
		if err == nil {
			err = w.err
		}
	}
	return err
}

// writeFailed turns a storage failure of the write of [off, end) into what
// the caller gets. Retryable codes (EAGAIN, EINTR, ETIMEDOUT) become EIO:
// the storage client already retried for its whole window, and a caller
// told EAGAIN retries the write (Python's io.Buffered* even takes
// BlockingIOError for a partial write). ENOSPC, EROFS, EFBIG and the like
// keep their errno. buffered says the bytes were acknowledged earlier.
func writeFailed(ino uint64, off, end int64, buffered bool, err error) error {
	errno := errcode.ErrnoOf(err)
	switch errno {
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EFBIG, syscall.EBADF, syscall.EINVAL, syscall.EACCES, syscall.EPERM:
	default:
		errno = syscall.EIO
	}
	if buffered {
		return errcode.WithErrno(errcode.CodeOf(err), errno,
			"inode %d: buffered write of bytes [%d, %d) was acknowledged but storage did not take it (%v); this handle lost data and fails every further call", ino, off, end, err)
	}
	return errcode.WithErrno(errcode.CodeOf(err), errno, "write inode %d bytes [%d, %d): %v", ino, off, end, err)
}

// getBuf returns an empty write-back buffer of capacity WriteBuffer.
func (c *Client) getBuf() []byte {
	if b, ok := c.bufPool.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, c.cfg.WriteBuffer)
}

func (c *Client) putBuf(b []byte) {
	if int64(cap(b)) == c.cfg.WriteBuffer {
		c.bufPool.Put(&b)
	}
}
