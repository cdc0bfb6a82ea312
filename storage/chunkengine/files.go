package chunkengine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
)

var zeroBlock [64 << 10]byte

// crcZeros extends crc over n zero bytes.
func crcZeros(crc uint32, n int64) uint32 {
	for n > 0 {
		k := min(n, int64(len(zeroBlock)))
		crc = crc32c.Update(crc, zeroBlock[:k])
		n -= k
	}
	return crc
}

// copyBufs are aligned so copyMerge can write them with O_DIRECT.
var copyBufs = sync.Pool{New: func() any { b := alignedBuf(1 << 20); return &b }}

func (e *Engine) fdatasync(f vfs.File) error {
	if e.opts.NoSync {
		return nil
	}
	return f.Sync()
}

// syncShard makes a file creation in id's shard directory durable.
func (e *Engine) syncShard(id ChunkID) error {
	if e.opts.NoSync {
		return nil
	}
	d, err := e.shardDir(dataShard(id))
	if err != nil {
		return err
	}
	return d.Sync()
}

func ioErr(id ChunkID, what string, err error) error {
	return ioErr0(err, "chunk %s: %s", id, what)
}

// ioErr0 turns a file-system error into an errcode error: NoSpace for
// ENOSPC (the caller may retry once space returns), Internal otherwise.
func ioErr0(err error, format string, args ...any) error {
	code := errcode.Internal
	if errors.Is(err, syscall.ENOSPC) {
		code = errcode.NoSpace
	}
	return errcode.New(code, "%s: %v", fmt.Sprintf(format, args...), err)
}

// createFile creates a new, never used data file for id.
func (e *Engine) createFile(id ChunkID) (vfs.File, uint64, error) {
	gen := e.nextGen.Add(1) - 1
	if _, err := e.shardDir(dataShard(id)); err != nil {
		return nil, 0, ioErr(id, "create shard directory", err)
	}
	f, err := e.fs.OpenFile(e.dataPath(id, gen), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, 0, ioErr(id, "create data file", err)
	}
	return f, gen, nil
}

// finishNew syncs a freshly written data file and its directory entry;
// on error it removes the file.
func (e *Engine) finishNew(id ChunkID, f vfs.File, gen uint64, werr error) (uint64, error) {
	if werr == nil && !e.opts.NoSync {
		// Both must be durable before the metadata record names the file,
		// in no particular order: sync them concurrently, so the file
		// system can serve both with one journal commit instead of two in
		// a row.
		dirDone := make(chan error, 1)
		go func() { dirDone <- e.syncShard(id) }()
		werr = e.fdatasync(f)
		if derr := <-dirDone; werr == nil {
			werr = derr
		}
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		e.fs.Remove(e.dataPath(id, gen))
		return 0, ioErr(id, "write data file", werr)
	}
	return gen, nil
}

// writeNewFile writes data as the whole content of a new data file.
func (e *Engine) writeNewFile(id ChunkID, data []byte, cached bool) (uint64, error) {
	f, gen, err := e.createFile(id)
	if err != nil {
		return 0, err
	}
	return e.finishNew(id, f, gen, e.writeData(f, data, 0, cached))
}

// writeTail writes data at off (nil data: only extend to newLen) past the
// committed length of base, in base's own file: bytes past a committed
// length are never visible to readers of any committed version, so the
// committed content is untouched. It returns the file generation.
func (e *Engine) writeTail(id ChunkID, base verState, off uint32, data []byte, newLen uint64, cached bool) (uint64, error) {
	if base.Gen == 0 {
		f, gen, err := e.createFile(id)
		if err != nil {
			return 0, err
		}
		if data != nil {
			err = e.writeData(f, data, int64(off), cached)
		} else {
			err = f.Truncate(int64(newLen))
		}
		return e.finishNew(id, f, gen, err)
	}
	f, err := e.fs.OpenFile(e.dataPath(id, base.Gen), os.O_RDWR, 0)
	if err != nil {
		return 0, ioErr(id, "open data file", err)
	}
	defer f.Close()
	// Drop leftovers of an aborted or crashed tail so any gap reads as zeros.
	if err := f.Truncate(int64(base.Length)); err != nil {
		return 0, ioErr(id, "trim data file", err)
	}
	if data != nil {
		err = e.writeData(f, data, int64(off), cached)
	} else {
		err = f.Truncate(int64(newLen))
	}
	if err == nil {
		err = e.fdatasync(f)
	}
	if err != nil {
		return 0, ioErr(id, "append to data file", err)
	}
	return base.Gen, nil
}

// copyMerge writes a new data file of newLen bytes: base's content (zeros
// past its length) overlaid with data at off. While copying it checks
// base's checksum, so corrupt content is never laundered into a new
// version with a fresh checksum. It returns the new generation and the new
// content's checksum.
func (e *Engine) copyMerge(c *chunk, base verState, newLen uint32, off uint32, data []byte, cached bool) (uint64, uint32, error) {
	var src vfs.File
	if base.Gen != 0 {
		of, err := e.openCached(c.id, base.Gen)
		if err != nil {
			return 0, 0, ioErr(c.id, "open data file", err)
		}
		defer e.fds.release(of)
		src = of.f
	}
	dst, gen, err := e.createFile(c.id)
	if err != nil {
		return 0, 0, err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var oldCRC, newCRC uint32
	short := false
	end := max(base.Length, newLen)
	for pos := uint32(0); pos < end && err == nil; {
		n := min(uint32(len(buf)), end-pos)
		blk := buf[:n]
		clear(blk)
		if pos < base.Length {
			k := min(n, base.Length-pos)
			if _, rerr := src.ReadAt(blk[:k], int64(pos)); rerr != nil {
				if rerr == io.EOF {
					short = true // the file lost bytes: same as a bad checksum
				} else {
					err = rerr
				}
				break
			}
			oldCRC = crc32c.Update(oldCRC, blk[:k])
		}
		if pos < newLen {
			w := blk[:min(n, newLen-pos)]
			// Overlay the part of data that falls into [pos, pos+len(w)).
			if lo, hi := max(pos, off), min(pos+uint32(len(w)), off+uint32(len(data))); lo < hi {
				copy(w[lo-pos:hi-pos], data[lo-off:hi-off])
			}
			newCRC = crc32c.Update(newCRC, w)
			err = e.writeData(dst, w, int64(pos), cached)
		}
		pos += n
	}
	if err == nil && (short || oldCRC != base.Checksum) {
		dst.Close()
		e.fs.Remove(e.dataPath(c.id, gen))
		e.markCorruptHeld(c, base.Version, "checksum mismatch while copying for update")
		return 0, 0, errcode.New(errcode.ChecksumMismatch, "chunk %s version %d: stored CRC32C %08x, content has %08x; chunk marked corrupt", c.id, base.Version, base.Checksum, oldCRC)
	}
	gen, err = e.finishNew(c.id, dst, gen, err)
	return gen, newCRC, err
}

// markCorruptHeld flags c corrupt; the caller holds c.upd.
func (e *Engine) markCorruptHeld(c *chunk, ver uint64, reason string) {
	st := c.st
	if st.Corrupt || st.Committed.Version != ver {
		return
	}
	e.log.Error("chunk marked corrupt", "chunk", c.id, "version", ver, "reason", reason)
	st.Corrupt = true
	if err := e.persist(c, &st); err != nil {
		e.log.Error("persist corrupt flag", "chunk", c.id, "err", err)
	}
}

// removeFile deletes a data file no metadata points at any more. Failure
// only leaves garbage that the next open removes.
func (e *Engine) removeFile(id ChunkID, gen uint64) {
	e.fds.drop(fdKey{id: id, gen: gen})
	if err := e.fs.Remove(e.dataPath(id, gen)); err != nil && !errors.Is(err, os.ErrNotExist) {
		e.log.Warn("remove old chunk data file", "chunk", id, "gen", gen, "err", err)
	}
}
