package checkpoint

import (
	"context"
	"errors"
	"io"
	"os"
	"path"
	"sync"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// Reader reads a published checkpoint.
type Reader struct {
	s      *Store
	path   string
	m      *Manifest
	byName map[string]int

	mu     sync.Mutex
	files  map[string]*client.File
	closed bool
}

// Open opens the published checkpoint at p and reads its manifest.
func (s *Store) Open(ctx context.Context, p string) (*Reader, error) {
	p = path.Clean(p)
	m, err := s.Inspect(ctx, p)
	if err != nil {
		return nil, err
	}
	r := &Reader{s: s, path: p, m: m, byName: make(map[string]int, len(m.Tensors)), files: map[string]*client.File{}}
	for i, t := range m.Tensors {
		r.byName[t.Name] = i
	}
	return r, nil
}

// Path is the checkpoint's path.
func (r *Reader) Path() string { return r.path }

// Manifest is the checkpoint's manifest (do not modify).
func (r *Reader) Manifest() *Manifest { return r.m }

// Tensor returns the manifest entry of a tensor.
func (r *Reader) Tensor(name string) (Tensor, bool) {
	i, ok := r.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return r.m.Tensors[i], true
}

// file opens (once) a data file of the checkpoint; a missing file is an
// error naming it.
func (r *Reader) file(ctx context.Context, name string) (*client.File, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errcode.New(errcode.BadFile, "checkpoint %s: reader %v", r.path, errClosed)
	}
	if f := r.files[name]; f != nil {
		return f, nil
	}
	p := path.Join(r.path, name)
	f, err := r.s.c.Open(ctx, r.s.u, meta.P(p), os.O_RDONLY, 0)
	if err != nil {
		if errcode.Is(err, errcode.NotFound) {
			return nil, errcode.New(errcode.NotFound, "checkpoint %s: data file %s is missing", r.path, name)
		}
		return nil, err
	}
	if want := r.m.Files[name].Size; f.Size() < want {
		_ = f.Close()
		return nil, errcode.New(errcode.OutOfRange, "checkpoint %s: data file %s has %d bytes, the manifest says %d (truncated)", r.path, name, f.Size(), want)
	}
	r.files[name] = f
	return f, nil
}

// ReadTensors reads whole tensors into dsts (dsts[i] must be exactly the
// length of names[i]), many at once, each large one fanned out over its
// chunks straight into dsts[i], and checks each one's CRC32C. Errors name
// the tensor and its file.
func (r *Reader) ReadTensors(ctx context.Context, names []string, dsts [][]byte) error {
	if len(names) != len(dsts) {
		return errcode.New(errcode.InvalidArgument, "checkpoint %s: %d tensor names but %d buffers", r.path, len(names), len(dsts))
	}
	reqs := make([]Range, len(names))
	for i, n := range names {
		t, ok := r.Tensor(n)
		if !ok {
			return errcode.New(errcode.NotFound, "checkpoint %s: no tensor %q", r.path, n)
		}
		if int64(len(dsts[i])) != t.Length {
			return errcode.New(errcode.InvalidArgument, "checkpoint %s: tensor %q has %d bytes (dtype %s, shape %v), the buffer given has %d",
				r.path, n, t.Length, t.Dtype, t.Shape, len(dsts[i]))
		}
		reqs[i] = Range{File: t.File, Offset: t.Offset, Dst: dsts[i], tensor: n, verify: true, crc: t.CRC32C}
	}
	return r.read(ctx, reqs)
}

// Range is a raw byte range of a data file to read into Dst (partial
// reads: no checksum to check).
type Range struct {
	File   string
	Offset int64
	Dst    []byte

	tensor string
	verify bool
	crc    uint32
}

// ReadRanges reads raw byte ranges in parallel (no CRC check: use
// ReadTensors for whole tensors).
func (r *Reader) ReadRanges(ctx context.Context, ranges []Range) error {
	for i := range ranges {
		ranges[i].verify, ranges[i].tensor = false, ""
		fi, ok := r.m.Files[ranges[i].File]
		if !ok {
			return errcode.New(errcode.NotFound, "checkpoint %s: no data file %s", r.path, ranges[i].File)
		}
		if ranges[i].Offset < 0 || ranges[i].Offset+int64(len(ranges[i].Dst)) > fi.Size {
			return errcode.New(errcode.OutOfRange, "checkpoint %s: range [%d, %d) outside data file %s (%d bytes)",
				r.path, ranges[i].Offset, ranges[i].Offset+int64(len(ranges[i].Dst)), ranges[i].File, fi.Size)
		}
	}
	return r.read(ctx, ranges)
}

func (r *Reader) read(ctx context.Context, reqs []Range) error {
	sem := make(chan struct{}, r.s.opts.ReadParallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return first != nil }
	for i := range reqs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			fail(errcode.New(errcode.Canceled, "checkpoint %s: %v", r.path, ctx.Err()))
		}
		if failed() {
			break
		}
		wg.Add(1)
		go func(q *Range) {
			defer func() { <-sem; wg.Done() }()
			if err := r.readOne(ctx, q); err != nil {
				fail(err)
			}
		}(&reqs[i])
	}
	wg.Wait()
	return first
}

func (r *Reader) readOne(ctx context.Context, q *Range) error {
	what := "range"
	if q.tensor != "" {
		what = "tensor " + q.tensor
	}
	f, err := r.file(ctx, q.File)
	if err != nil {
		if q.tensor != "" {
			return errcode.New(errcode.CodeOf(err), "reading tensor %q: %v", q.tensor, err)
		}
		return err
	}
	if len(q.Dst) > 0 {
		n, err := f.ReadAt(q.Dst, q.Offset)
		if err != nil && !(errors.Is(err, io.EOF) && n == len(q.Dst)) {
			if errors.Is(err, io.EOF) {
				return errcode.New(errcode.OutOfRange, "checkpoint %s: %s: file %s ends before byte %d", r.path, what, q.File, q.Offset+int64(len(q.Dst)))
			}
			return errcode.New(errcode.CodeOf(err), "checkpoint %s: %s in file %s: %v", r.path, what, q.File, err)
		}
	}
	if q.verify {
		if got := crc32c.Checksum(q.Dst); got != q.crc {
			return errcode.New(errcode.ChecksumMismatch, "checkpoint %s: tensor %q in file %s (bytes %d-%d): CRC32C %08x, manifest says %08x",
				r.path, q.tensor, q.File, q.Offset, q.Offset+int64(len(q.Dst)), got, q.crc)
		}
	}
	return nil
}

// Close closes the data files.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var err error
	for _, f := range r.files {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
