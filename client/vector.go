package client

import (
	"context"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// Bulk I/O for callers that plan their own byte layout (checkpoint/): no
// write-back buffer, no read-ahead window and no hot-data cache, so bytes
// move between storage and the caller's memory without a copy, and every
// chunk is sent as one request (a scatter list when several buffers fall
// in one chunk).

// ChunkSize is the file's chunk size.
func (f *File) ChunkSize() int64 { return int64(f.ino.Layout.ChunkSize) }

// WriteVecAt writes the concatenation of bufs at off straight from the
// buffers' memory: one storage write per chunk touched (the buffers that
// fall in it go as one scatter list, sent with writev), up to
// Config.Parallel chunks in flight, and returns when all are acknowledged.
// Calls for disjoint ranges may run concurrently (not with Close or
// Truncate); the buffers must not change until it returns. Any buffered
// write of this handle is sent first.
func (f *File) WriteVecAt(bufs [][]byte, off int64) error {
	if !f.write {
		return errcode.New(errcode.BadFile, "write inode %d: not open for writing", f.ino.ID)
	}
	if off < 0 {
		return errcode.New(errcode.InvalidArgument, "write inode %d: negative offset %d", f.ino.ID, off)
	}
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	if n == 0 {
		return nil
	}
	if off+n > f.maxSize() {
		return errcode.New(errcode.FileTooLarge, "write inode %d: end %d past the largest file of chunk size %d (%d)", f.ino.ID, off+n, f.ino.Layout.ChunkSize, f.maxSize())
	}
	f.wmu.Lock()
	if f.closed {
		f.wmu.Unlock()
		return errcode.New(errcode.BadFile, "write inode %d: %v", f.ino.ID, errClosed)
	}
	if err := f.drainLocked(); err != nil {
		f.wmu.Unlock()
		return err
	}
	f.wrote = true
	f.wmu.Unlock()

	cs := int64(f.ino.Layout.ChunkSize)
	type vpiece struct {
		piece
		data [][]byte
	}
	var ps []vpiece
	bi, bo := 0, 0 // current buffer and offset in it
	for pos := int64(0); pos < n; {
		o := off + pos
		in := o % cs
		k := min(cs-in, n-pos)
		vp := vpiece{piece: piece{index: uint32(o / cs), inOff: uint32(in), n: int(k)}}
		for need := int(k); need > 0; {
			for bo == len(bufs[bi]) {
				bi, bo = bi+1, 0
			}
			t := min(need, len(bufs[bi])-bo)
			vp.data = append(vp.data, bufs[bi][bo:bo+t])
			bo += t
			need -= t
		}
		ps = append(ps, vp)
		pos += k
	}
	plain := make([]piece, len(ps))
	for i := range ps {
		plain[i] = ps[i].piece
		plain[i].pos = i // index into ps
	}
	errs := f.c.fanOut(f.c.ctx, plain, func(ctx context.Context, pc piece) error {
		_, err := f.c.sc.WriteV(ctx, meta.ChunkChain(f.chains, pc.index), storageclient.ChunkID{Inode: f.ino.ID, Index: pc.index},
			f.ino.Layout.ChunkSize, pc.inOff, ps[pc.pos].data...)
		return err
	})
	f.changed(off + n)
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// ReadDirectAt fills p with the bytes at off straight from storage, in
// parallel over chunks, bypassing read-ahead and the hot-data cache (holes
// read as zeros). The range must lie within the file (ReadAt's EOF rules do
// not apply: a range past the end is OutOfRange).
func (f *File) ReadDirectAt(p []byte, off int64) error {
	if !f.read {
		return errcode.New(errcode.BadFile, "read inode %d: not open for reading", f.ino.ID)
	}
	if off < 0 || off+int64(len(p)) > f.Size() {
		return errcode.New(errcode.OutOfRange, "read inode %d: bytes [%d, %d) outside the file (%d bytes)", f.ino.ID, off, off+int64(len(p)), f.Size())
	}
	if f.isClosed() {
		return errcode.New(errcode.BadFile, "read inode %d: %v", f.ino.ID, errClosed)
	}
	if len(p) == 0 {
		return nil
	}
	if err := f.st.flushOverlapping(off, int64(len(p))); err != nil {
		return err
	}
	return f.readDirect(p, off)
}
