package checkpoint

import (
	"context"
	"os"
	"path"
	"sync"
	"sync/atomic"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// Written is where one region went in its shard file.
type Written struct {
	Offset int64
	Length int64
	CRC32C uint32
}

// ShardWriter appends byte regions to one shard file of a pending
// checkpoint. Regions go to storage straight from the caller's memory:
// the regions that share a chunk are sent as one scatter list (writev), a
// region of at least one chunk starts on a chunk boundary (the gap before
// it is a hole, never written), so that a reader fetches whole chunks into
// the tensor with no copy and storage verifies each chunk in the same
// pass. Many chunk writes are in flight at once (the client's Parallel);
// each large region's CRC32C is computed on its own goroutine meanwhile.
type ShardWriter struct {
	s      *Store
	path   string
	f      *client.File
	stop   func()
	mu     sync.Mutex
	off    int64
	acked  atomic.Int64 // bytes of regions acknowledged by storage
	closed bool
	err    error // a failed write: the shard is unusable
}

// OpenShard creates shard file name (e.g. "rank-0.bin") in a pending
// directory made by Begin (possibly by another process) and keeps the
// pending directory's lease renewed until Close.
func (s *Store) OpenShard(ctx context.Context, pending, name string) (*ShardWriter, error) {
	if _, _, err := splitPending(pending); err != nil {
		return nil, err
	}
	if !validFileName(name) {
		return nil, errcode.New(errcode.InvalidArgument, "shard file name %q: want a plain file name, not %q or %q", name, ManifestName, leaseName)
	}
	p := path.Join(path.Clean(pending), name)
	f, err := s.c.Open(ctx, s.u, meta.P(p), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	return &ShardWriter{s: s, path: p, f: f, stop: s.keepLease(path.Clean(pending))}, nil
}

// Path is the shard file's path.
func (w *ShardWriter) Path() string { return w.path }

// Size is the shard file's length so far (regions plus alignment holes).
func (w *ShardWriter) Size() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.off
}

// Acked is the number of region bytes storage has acknowledged so far
// (progress of a Write in flight; callers may poll it from any goroutine).
func (w *ShardWriter) Acked() int64 { return w.acked.Load() }

// run is a stretch of the file written by one WriteVecAt: regions back to
// back with no hole between them.
type run struct {
	off  int64
	bufs [][]byte
	n    int64
}

// Write appends regions in order and returns where each went with its
// CRC32C; it returns once storage acknowledged them all, and the regions'
// memory is not used after it returns. A failure leaves the shard unusable
// (every later call fails): abort the save.
func (w *ShardWriter) Write(regions [][]byte) ([]Written, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errcode.New(errcode.BadFile, "shard %s: %v", w.path, errClosed)
	}
	if w.err != nil {
		return nil, w.err
	}
	cs := w.f.ChunkSize()
	out := make([]Written, len(regions))
	var runs []run
	var wg sync.WaitGroup
	off := w.off
	for i, r := range regions {
		n := int64(len(r))
		if n >= cs && off%cs != 0 {
			off += cs - off%cs // whole chunks for a large region
		}
		out[i] = Written{Offset: off, Length: n}
		if n == 0 {
			out[i].CRC32C = crc32c.Checksum(nil)
			continue
		}
		if len(runs) == 0 || runs[len(runs)-1].off+runs[len(runs)-1].n != off {
			runs = append(runs, run{off: off})
		}
		last := &runs[len(runs)-1]
		last.bufs, last.n = append(last.bufs, r), last.n+n
		off += n
		if n < 1<<20 {
			out[i].CRC32C = crc32c.Checksum(r)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].CRC32C = crc32c.Checksum(r)
		}()
	}
	// Every chunk of every run at once (the client bounds the writes in
	// flight); Acked grows chunk by chunk.
	runs = splitRuns(runs, cs)
	errs := make([]error, len(runs))
	for k := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[k] = w.f.WriteVecAt(runs[k].bufs, runs[k].off); errs[k] == nil {
				w.acked.Add(runs[k].n)
			}
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			w.err = errcode.New(errcode.CodeOf(err), "shard %s: writing bytes [%d, %d): %v", w.path, runs[k].off, runs[k].off+runs[k].n, err)
			return nil, w.err
		}
	}
	w.off = off
	return out, nil
}

// Close finalizes the file's length in meta; only a Close that returned
// nil makes the shard usable.
func (w *ShardWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errcode.New(errcode.BadFile, "shard %s: %v", w.path, errClosed)
	}
	w.closed = true
	defer w.stop()
	err := w.f.Close()
	if err != nil {
		return errcode.New(errcode.CodeOf(err), "shard %s: %v", w.path, err)
	}
	return w.err
}

// splitRuns cuts runs at chunk boundaries: one WriteVecAt (one storage
// write) per chunk, so progress is reported per chunk.
func splitRuns(runs []run, cs int64) []run {
	var out []run
	for _, r := range runs {
		off := r.off
		cur := run{off: off}
		for _, b := range r.bufs {
			for len(b) > 0 {
				room := cs - (off % cs)
				k := min(int64(len(b)), room)
				cur.bufs, cur.n = append(cur.bufs, b[:k]), cur.n+k
				b, off = b[k:], off+k
				if off%cs == 0 {
					out = append(out, cur)
					cur = run{off: off}
				}
			}
		}
		if cur.n > 0 {
			out = append(out, cur)
		}
	}
	return out
}
