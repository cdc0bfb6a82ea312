package chunkengine

import (
	"errors"
	"io"
	"os"
	"time"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
)

// readView is what a read sees of a chunk: its committed version and
// whether a recent full check vouches for it.
type readView struct {
	c        *chunk
	v        verState
	verified bool
}

func (e *Engine) view(id ChunkID, off uint32, relaxed bool) (readView, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return readView{}, errcode.New(errcode.Unavailable, "chunk engine %s is closed", e.dir)
	}
	c := e.getLocked(id)
	if c == nil || !c.exists() {
		return readView{}, errcode.New(errcode.NotFound, "chunk %s not found", id)
	}
	s := &c.st
	if s.Corrupt {
		return readView{}, errcode.New(errcode.ChecksumMismatch, "chunk %s version %d is marked corrupt; read another replica", id, s.Committed.Version)
	}
	if s.Pending.Version != 0 && !relaxed {
		return readView{}, errcode.New(errcode.NotCommitted, "chunk %s has pending version %d (committed %d)", id, s.Pending.Version, s.Committed.Version)
	}
	if s.Committed.Version == 0 {
		return readView{}, errcode.New(errcode.NotFound, "chunk %s has no committed version", id)
	}
	if off > s.Size {
		return readView{}, errcode.New(errcode.OutOfRange, "chunk %s: read offset %d past chunk size %d", id, off, s.Size)
	}
	v := s.Committed
	verified := e.opts.VerifyInterval > 0 && c.verifiedVer == v.Version && c.verifiedGen == v.Gen &&
		time.Since(c.verifiedAt) < e.opts.VerifyInterval
	return readView{c: c, v: v, verified: verified}, nil
}

func (e *Engine) markVerified(c *chunk, v verState) {
	e.mu.Lock()
	if c.st.Committed.Version == v.Version && c.st.Committed.Gen == v.Gen {
		c.verifiedVer, c.verifiedGen, c.verifiedAt = v.Version, v.Gen, time.Now()
	}
	e.mu.Unlock()
}

// openView opens the data file of rv, through the engine's descriptor
// cache; the caller releases it with e.fds.release. A file that vanished
// because a commit replaced the version is reported as retry.
func (e *Engine) openView(id ChunkID, rv readView) (of *openFile, retry bool, err error) {
	k := fdKey{id: id, gen: rv.v.Gen}
	of, err = e.openCached(id, rv.v.Gen)
	if err == nil {
		// A commit may have replaced this generation, and dropped it from
		// the cache, between our view and the add: then unlist it again,
		// or the cache would keep a removed file's space in use. (The
		// descriptor itself stays good for this read.)
		if e.genGone(rv) {
			e.fds.drop(k)
		}
		return of, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, ioErr(id, "open data file", err)
	}
	if e.genGone(rv) {
		return nil, true, nil
	}
	return nil, false, e.corrupt(id, rv.v, "data file missing")
}

// openCached returns data file (id, gen) opened for reading, from the
// descriptor cache or newly opened and cached; release it with
// e.fds.release.
func (e *Engine) openCached(id ChunkID, gen uint64) (*openFile, error) {
	k := fdKey{id: id, gen: gen}
	if of := e.fds.get(k); of != nil {
		return of, nil
	}
	f, err := e.fs.OpenFile(e.dataPath(id, gen), os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	return e.fds.add(k, f), nil
}

// genGone reports whether the data file rv read from is no longer the
// chunk's committed one (a commit replaced it, or the chunk was removed).
func (e *Engine) genGone(rv readView) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return rv.c.dead || rv.c.st.Committed.Version != rv.v.Version || rv.c.st.Committed.Gen != rv.v.Gen
}

// corrupt marks the committed version v of id corrupt and returns the
// error a reader gets.
func (e *Engine) corrupt(id ChunkID, v verState, reason string) error {
	if err := e.markCorrupt(id, v.Version, reason); err != nil {
		e.log.Error("persist corrupt flag", "chunk", id, "err", err)
	}
	return errcode.New(errcode.ChecksumMismatch, "chunk %s version %d: %s; chunk marked corrupt, read another replica", id, v.Version, reason)
}

// ReadAt reads committed bytes of chunk id from offset off into p and
// returns how many it read (fewer than len(p) at the end of the chunk)
// and the committed version read. With relaxed false, a chunk holding a
// pending version answers NotCommitted. Unless a check within
// Options.VerifyInterval vouches for this version, the whole committed
// content is checked against its CRC32C first (in the same pass when the
// read covers the whole chunk); a mismatch marks the chunk corrupt and
// returns ChecksumMismatch.
func (e *Engine) ReadAt(id ChunkID, p []byte, off uint32, relaxed bool) (int, uint64, error) {
	b, ver, err := e.read(id, off, relaxed, func(n int) []byte { return p[:min(n, len(p))] })
	return len(b), ver, err
}

// Read returns up to n committed bytes of chunk id from offset off, and
// the committed version; see ReadAt.
func (e *Engine) Read(id ChunkID, off, n uint32, relaxed bool) ([]byte, uint64, error) {
	if n > MaxChunkSize {
		return nil, 0, errcode.New(errcode.OutOfRange, "chunk %s: read of %d bytes, more than the largest chunk size %d", id, n, MaxChunkSize)
	}
	return e.read(id, off, relaxed, func(avail int) []byte { return make([]byte, min(avail, int(n))) })
}

// read reads into the buffer that buf returns for the number of committed
// bytes available from off.
func (e *Engine) read(id ChunkID, off uint32, relaxed bool, buf func(avail int) []byte) ([]byte, uint64, error) {
	for {
		rv, err := e.view(id, off, relaxed)
		if err != nil {
			return nil, 0, err
		}
		if off >= rv.v.Length {
			return buf(0), rv.v.Version, nil
		}
		p := buf(int(rv.v.Length - off))
		if len(p) == 0 {
			return p, rv.v.Version, nil
		}
		of, retry, err := e.openView(id, rv)
		if retry {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		err = e.readVerified(id, of.f, rv, p, off)
		e.fds.release(of)
		if err != nil {
			return nil, 0, err
		}
		return p, rv.v.Version, nil
	}
}

// readVerified fills p from f at off, verifying the checksum as ReadAt
// describes.
func (e *Engine) readVerified(id ChunkID, f vfs.File, rv readView, p []byte, off uint32) error {
	if rv.verified {
		if _, err := f.ReadAt(p, int64(off)); err != nil {
			if err == io.EOF {
				return e.corrupt(id, rv.v, "data file shorter than chunk length")
			}
			return ioErr(id, "read data file", err)
		}
		return nil
	}
	if off == 0 && len(p) == int(rv.v.Length) {
		// The read covers the whole content: verify in the same pass.
		if _, err := f.ReadAt(p, 0); err != nil {
			if err == io.EOF {
				return e.corrupt(id, rv.v, "data file shorter than chunk length")
			}
			return ioErr(id, "read data file", err)
		}
		if got := crc32c.Checksum(p); got != rv.v.Checksum {
			return e.corrupt(id, rv.v, checksumReason(rv.v.Checksum, got))
		}
		e.markVerified(rv.c, rv.v)
		return nil
	}
	return e.verifyFile(id, f, rv, p, off)
}

// verifyFile checks the whole committed content of rv against its
// checksum, copying [off, off+len(p)) into p on the way (p may be empty).
func (e *Engine) verifyFile(id ChunkID, f vfs.File, rv readView, p []byte, off uint32) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var crc uint32
	winEnd := off + uint32(len(p))
	for pos := uint32(0); pos < rv.v.Length; {
		k := min(uint32(len(buf)), rv.v.Length-pos)
		blk := buf[:k]
		direct := pos >= off && pos+k <= winEnd // block lies inside the window
		if direct {
			blk = p[pos-off : pos-off+k]
		}
		if _, err := f.ReadAt(blk, int64(pos)); err != nil {
			if err == io.EOF {
				return e.corrupt(id, rv.v, "data file shorter than chunk length")
			}
			return ioErr(id, "read data file", err)
		}
		crc = crc32c.Update(crc, blk)
		if !direct {
			if lo, hi := max(pos, off), min(pos+k, winEnd); lo < hi {
				copy(p[lo-off:hi-off], blk[lo-pos:hi-pos])
			}
		}
		pos += k
	}
	if crc != rv.v.Checksum {
		return e.corrupt(id, rv.v, checksumReason(rv.v.Checksum, crc))
	}
	e.markVerified(rv.c, rv.v)
	return nil
}

func checksumReason(want, got uint32) string {
	return "checksum mismatch: stored CRC32C " + hex32(want) + ", content has " + hex32(got)
}

func hex32(v uint32) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b)
}

// Verify checks the whole committed content of chunk id against its
// checksum now, whatever the verification cache says (a scrubber's call).
// A pending version does not stop it.
func (e *Engine) Verify(id ChunkID) error {
	for {
		rv, err := e.view(id, 0, true)
		if err != nil {
			return err
		}
		if rv.v.Length == 0 {
			if rv.v.Checksum != 0 {
				return e.corrupt(id, rv.v, checksumReason(rv.v.Checksum, 0))
			}
			return nil
		}
		of, retry, err := e.openView(id, rv)
		if retry {
			continue
		}
		if err != nil {
			return err
		}
		err = e.verifyFile(id, of.f, rv, nil, 0)
		e.fds.release(of)
		return err
	}
}

// Region is a verified byte range of a chunk's committed content in a data
// file, for sendfile/splice. The committed bytes of a data file never
// change while the file exists, and an open file stays readable after a
// later commit unlinks it, so the range stays valid until Close.
type Region struct {
	File     *os.File // nil when Length is 0; owned by the engine's descriptor cache
	Offset   int64
	Length   int64
	Version  uint64 // committed version the region belongs to
	Checksum uint32 // CRC32C of the whole committed content

	release func()
}

// Close releases the region's file (the descriptor is shared and cached:
// do not close File itself). Closing twice is harmless.
func (r *Region) Close() error {
	if r.release != nil {
		r.release()
		r.release = nil
	}
	return nil
}

// OpenRegion returns committed bytes [off, off+n) of chunk id (clipped to
// the committed length) as a file region. Before handing it out it checks
// the whole content against the checksum unless a check within
// Options.VerifyInterval vouches for this version (the bytes then go to
// the socket by sendfile without passing through user space).
func (e *Engine) OpenRegion(id ChunkID, off, n uint32, relaxed bool) (*Region, error) {
	for {
		rv, err := e.view(id, off, relaxed)
		if err != nil {
			return nil, err
		}
		if off >= rv.v.Length || n == 0 {
			return &Region{Offset: int64(off), Version: rv.v.Version, Checksum: rv.v.Checksum}, nil
		}
		of, retry, err := e.openView(id, rv)
		if retry {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !rv.verified {
			if err := e.verifyFile(id, of.f, rv, nil, 0); err != nil {
				e.fds.release(of)
				return nil, err
			}
		}
		osf := vfs.OSFile(of.f)
		if osf == nil {
			e.fds.release(of)
			return nil, errcode.New(errcode.Internal, "chunk %s: the engine's file system has no OS files to hand out as regions", id)
		}
		length := min(uint64(n), uint64(rv.v.Length-off))
		return &Region{File: osf, Offset: int64(off), Length: int64(length), Version: rv.v.Version, Checksum: rv.v.Checksum,
			release: func() { e.fds.release(of) }}, nil
	}
}

// ReadPrefix reads the first bytes of chunk id's committed content into p
// without checking the whole content against its checksum, and returns
// how many it read and the committed version and length. It is for
// callers whose bytes carry their own checksum (a KV record header): an
// index rebuild can then read the header of every chunk without reading
// every chunk whole.
func (e *Engine) ReadPrefix(id ChunkID, p []byte) (n int, version uint64, length uint32, err error) {
	for {
		rv, err := e.view(id, 0, true)
		if err != nil {
			return 0, 0, 0, err
		}
		k := min(len(p), int(rv.v.Length))
		if k == 0 {
			return 0, rv.v.Version, rv.v.Length, nil
		}
		of, retry, err := e.openView(id, rv)
		if retry {
			continue
		}
		if err != nil {
			return 0, 0, 0, err
		}
		_, err = of.f.ReadAt(p[:k], 0)
		e.fds.release(of)
		if err == io.EOF {
			return 0, 0, 0, e.corrupt(id, rv.v, "data file shorter than chunk length")
		}
		if err != nil {
			return 0, 0, 0, ioErr(id, "read data file", err)
		}
		return k, rv.v.Version, rv.v.Length, nil
	}
}
