package client

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// piece is the part of a file range that falls in one chunk.
type piece struct {
	index uint32 // chunk index
	inOff uint32 // offset in the chunk
	pos   int    // offset in the caller's buffer
	n     int
}

// splitRange cuts [off, off+n) at chunk boundaries.
func splitRange(off int64, n int, chunkSize uint32) []piece {
	cs := int64(chunkSize)
	out := make([]piece, 0, n/int(cs)+2)
	for pos := 0; pos < n; {
		o := off + int64(pos)
		in := o % cs
		k := int(min(cs-in, int64(n-pos)))
		out = append(out, piece{index: uint32(o / cs), inOff: uint32(in), pos: pos, n: k})
		pos += k
	}
	return out
}

// fanOut runs fn for every piece, at most Config.Parallel requests of this
// client in flight, and returns each piece's error.
func (c *Client) fanOut(ctx context.Context, ps []piece, fn func(ctx context.Context, p piece) error) []error {
	errs := make([]error, len(ps))
	if len(ps) == 1 {
		c.sem <- struct{}{}
		errs[0] = fn(ctx, ps[0])
		<-c.sem
		return errs
	}
	var wg sync.WaitGroup
	for i, p := range ps {
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = errcode.New(errcode.Canceled, "%v", ctx.Err())
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-c.sem; wg.Done() }()
			errs[i] = fn(ctx, p)
		}()
	}
	wg.Wait()
	return errs
}

// readDirect fills p with the file bytes at off from storage, in parallel
// over chunks. Missing chunks and bytes past a chunk's end read as zeros
// (holes); the caller keeps p within the file length.
//
// A missing chunk is a hole only while the inode exists: the collector
// deletes a removed file's chunks after meta dropped its inode, so when a
// chunk is missing the read asks meta whether the inode is still there
// (one call per read that met a missing chunk) and fails with ESTALE if not,
// instead of returning zeros for data that is gone (issue 13, hole 8).
func (f *File) readDirect(p []byte, off int64) error {
	f.c.storageReadBytes.Add(int64(len(p)))
	ps := splitRange(off, len(p), f.ino.Layout.ChunkSize)
	var missing atomic.Bool
	errs := f.c.fanOut(f.c.ctx, ps, func(ctx context.Context, pc piece) error {
		buf := p[pc.pos : pc.pos+pc.n]
		res, err := f.c.sc.Read(ctx, meta.ChunkChain(f.chains, pc.index), storageclient.ChunkID{Inode: f.ino.ID, Index: pc.index}, pc.inOff, buf, storageclient.ReadOptions{})
		if errcode.Is(err, errcode.NotFound) {
			missing.Store(true)
			clear(buf)
			return nil
		}
		if err != nil {
			return err
		}
		clear(buf[res.N:])
		return nil
	})
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if missing.Load() {
		return f.checkInodeLives()
	}
	return nil
}

// checkInodeLives returns ESTALE when the file's inode no longer exists in
// meta (its data may already be collected).
func (f *File) checkInodeLives() error {
	ctx, cancel := f.ctx()
	defer cancel()
	_, err := f.c.mfs.Stat(ctx, meta.Root, meta.PathAt{Parent: f.ino.ID})
	switch {
	case err == nil:
		return nil
	case errcode.Is(err, errcode.NotFound) || errcode.Is(err, errcode.Stale):
		return errcode.New(errcode.Stale, "read inode %d: the file was removed and its data collected (stale handle)", f.ino.ID)
	default:
		return err
	}
}

// writeDirect writes p at off to storage, in parallel over chunks; it
// returns how many leading bytes are known written.
func (f *File) writeDirect(p []byte, off int64) (int, error) {
	ps := splitRange(off, len(p), f.ino.Layout.ChunkSize)
	errs := f.c.fanOut(f.c.ctx, ps, func(ctx context.Context, pc piece) error {
		_, err := f.c.sc.Write(ctx, meta.ChunkChain(f.chains, pc.index), storageclient.ChunkID{Inode: f.ino.ID, Index: pc.index},
			f.ino.Layout.ChunkSize, pc.inOff, p[pc.pos:pc.pos+pc.n])
		return err
	})
	for i, err := range errs {
		if err != nil {
			return ps[i].pos, err
		}
	}
	return len(p), nil
}
