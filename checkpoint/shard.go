package checkpoint

import (
	"context"
	"os"
	"path"
	"sync"

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
// checkpoint as one sequential stream. The client's write pipeline keeps
// many chunk writes in flight across the file's chains while the caller
// hands over the next regions; the CRC32C of each region is computed on
// its own goroutine while the region is being written.
type ShardWriter struct {
	s      *Store
	path   string
	f      *client.File
	stop   func()
	mu     sync.Mutex
	off    int64
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

// Size is the number of bytes appended so far.
func (w *ShardWriter) Size() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.off
}

// Write appends regions in order and returns where each went with its
// CRC32C. The regions' memory is not used after Write returns. A failure
// leaves the shard unusable (every later call fails): abort the save.
func (w *ShardWriter) Write(regions [][]byte) ([]Written, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errcode.New(errcode.BadFile, "shard %s: %v", w.path, errClosed)
	}
	if w.err != nil {
		return nil, w.err
	}
	out := make([]Written, len(regions))
	var wg sync.WaitGroup
	for i, r := range regions {
		out[i] = Written{Offset: w.off, Length: int64(len(r))}
		if len(r) == 0 {
			out[i].CRC32C = crc32c.Checksum(nil)
			continue
		}
		// Small regions are checksummed here; large ones on a goroutine
		// of their own, overlapping the write.
		if len(r) < 1<<20 {
			out[i].CRC32C = crc32c.Checksum(r)
		} else {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out[i].CRC32C = crc32c.Checksum(r)
			}()
		}
		if _, err := w.f.WriteAt(r, w.off); err != nil {
			wg.Wait()
			w.err = errcode.New(errcode.CodeOf(err), "shard %s: writing region %d (%d bytes at offset %d): %v", w.path, i, len(r), w.off, err)
			return nil, w.err
		}
		w.off += int64(len(r))
	}
	wg.Wait()
	return out, nil
}

// Close waits for every write in flight and finalizes the file; an error
// from any earlier write that was still in flight is returned here.
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
