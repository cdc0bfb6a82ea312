package checkpoint

import (
	"context"
	"os"
	"path"
	"sort"
	"sync"
	"sync/atomic"

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

// file opens (once) a data file of the checkpoint; a missing or short file
// is an error naming it and the tensor that needed it.
func (r *Reader) file(ctx context.Context, name, tensor string) (*client.File, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errcode.New(errcode.BadFile, "checkpoint %s: reader %v", r.path, errClosed)
	}
	if f := r.files[name]; f != nil {
		return f, nil
	}
	of := ""
	if tensor != "" {
		of = " of tensor '" + tensor + "'"
	}
	p := path.Join(r.path, name)
	f, err := r.s.c.Open(ctx, r.s.u, meta.P(p), os.O_RDONLY, 0)
	if err != nil {
		if errcode.Is(err, errcode.NotFound) {
			return nil, errcode.New(errcode.NotFound, "checkpoint %s: data file %s%s is missing", r.path, name, of)
		}
		return nil, err
	}
	if want := r.m.Files[name].Size; f.Size() < want {
		_ = f.Close()
		who := ""
		if tensor != "" {
			who = " tensor '" + tensor + "':"
		}
		return nil, errcode.New(errcode.OutOfRange, "checkpoint %s:%s data file %s has %d bytes, the manifest says %d (truncated)", r.path, who, name, f.Size(), want)
	}
	r.files[name] = f
	return f, nil
}

// ReadTensors reads whole tensors into dsts (dsts[i] must be exactly the
// length of names[i]) and checks each one's CRC32C. Errors name the tensor
// and its file.
func (r *Reader) ReadTensors(ctx context.Context, names []string, dsts [][]byte) error {
	if len(names) != len(dsts) {
		return errcode.New(errcode.InvalidArgument, "checkpoint %s: %d tensor names but %d buffers", r.path, len(names), len(dsts))
	}
	reqs := make([]Range, len(names))
	for i, n := range names {
		t, ok := r.Tensor(n)
		if !ok {
			return errcode.New(errcode.NotFound, "checkpoint %s: no tensor '%s'", r.path, n)
		}
		if int64(len(dsts[i])) != t.Length {
			return errcode.New(errcode.InvalidArgument, "checkpoint %s: tensor '%s' has %d bytes (dtype %s, shape %v), the buffer given has %d",
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
	left   atomic.Int64 // bytes not read yet
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

// unitPart is the part of one request that falls in a unit.
type unitPart struct {
	q   *Range
	pos int   // offset in q.Dst
	at  int64 // file offset
	n   int
}

// unit is one storage read: a stretch of one chunk. A unit with a single
// part reads straight into that request's buffer; a unit with several
// (small tensors packed in one chunk) reads the span once into a scratch
// buffer and copies each part out: one request instead of many, and
// storage checks the chunk once.
type unit struct {
	file  string
	off   int64
	n     int64
	parts []unitPart
}

// plan cuts the requests into units: per file, in offset order, one unit
// per chunk touched (coalescing the parts that share a chunk).
func (r *Reader) plan(ctx context.Context, reqs []Range) ([]unit, error) {
	byFile := map[string][]*Range{}
	var order []string
	for i := range reqs {
		q := &reqs[i]
		q.left.Store(int64(len(q.Dst)))
		if len(q.Dst) == 0 {
			continue
		}
		if _, ok := byFile[q.File]; !ok {
			order = append(order, q.File)
		}
		byFile[q.File] = append(byFile[q.File], q)
	}
	sort.Strings(order)
	perFile := make([][]unit, len(order))
	for fi, name := range order {
		qs := byFile[name]
		f, err := r.file(ctx, name, qs[0].tensor)
		if err != nil {
			if qs[0].tensor != "" && !errcode.Is(err, errcode.NotFound) && !errcode.Is(err, errcode.OutOfRange) {
				return nil, errcode.New(errcode.CodeOf(err), "reading tensor '%s': %v", qs[0].tensor, err)
			}
			return nil, err
		}
		cs := f.ChunkSize()
		sort.SliceStable(qs, func(i, j int) bool { return qs[i].Offset < qs[j].Offset })
		var us []unit
		for _, q := range qs {
			for pos := 0; pos < len(q.Dst); {
				at := q.Offset + int64(pos)
				k := int(min(cs-at%cs, int64(len(q.Dst)-pos)))
				p := unitPart{q: q, pos: pos, at: at, n: k}
				if len(us) > 0 && us[len(us)-1].off/cs == at/cs {
					u := &us[len(us)-1]
					u.parts = append(u.parts, p)
					u.n = max(u.off+u.n, at+int64(k)) - u.off
				} else {
					us = append(us, unit{file: name, off: at, n: int64(k), parts: []unitPart{p}})
				}
				pos += k
			}
		}
		perFile[fi] = us
	}
	// Interleave the files so that every shard (and its chains) is busy.
	var out []unit
	for k := 0; ; k++ {
		added := false
		for _, us := range perFile {
			if k < len(us) {
				out = append(out, us[k])
				added = true
			}
		}
		if !added {
			return out, nil
		}
	}
}

func (r *Reader) read(ctx context.Context, reqs []Range) error {
	units, err := r.plan(ctx, reqs)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var first error
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	// Zero-length tensors have nothing to read but a CRC to check.
	for i := range reqs {
		if len(reqs[i].Dst) == 0 {
			if err := r.check(&reqs[i]); err != nil {
				return err
			}
		}
	}
	next := atomic.Int64{}
	workers := min(r.s.opts.ReadParallel, len(units))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var scratch []byte
			for {
				i := int(next.Add(1) - 1)
				if i >= len(units) {
					return
				}
				mu.Lock()
				stop := first != nil
				mu.Unlock()
				if stop {
					return
				}
				if err := ctx.Err(); err != nil {
					fail(errcode.New(errcode.Canceled, "checkpoint %s: %v", r.path, err))
					return
				}
				if err := r.readUnit(ctx, &units[i], &scratch); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func (r *Reader) readUnit(ctx context.Context, u *unit, scratch *[]byte) error {
	q0 := u.parts[0].q
	what := "range"
	if q0.tensor != "" {
		what = "tensor '" + q0.tensor + "'"
	}
	f, err := r.file(ctx, u.file, q0.tensor)
	if err != nil {
		return err
	}
	if len(u.parts) == 1 {
		p := u.parts[0]
		err = f.ReadDirectAt(p.q.Dst[p.pos:p.pos+p.n], p.at)
	} else {
		if int64(cap(*scratch)) < u.n {
			*scratch = make([]byte, u.n)
		}
		buf := (*scratch)[:u.n]
		if err = f.ReadDirectAt(buf, u.off); err == nil {
			for _, p := range u.parts {
				copy(p.q.Dst[p.pos:p.pos+p.n], buf[p.at-u.off:])
			}
		}
	}
	if err != nil {
		return errcode.New(errcode.CodeOf(err), "checkpoint %s: %s in file %s (bytes %d-%d): %v", r.path, what, u.file, u.off, u.off+u.n, err)
	}
	for _, p := range u.parts {
		if p.q.left.Add(-int64(p.n)) == 0 {
			if err := r.check(p.q); err != nil {
				return err
			}
		}
	}
	return nil
}

// check verifies a fully read tensor's CRC32C.
func (r *Reader) check(q *Range) error {
	if !q.verify {
		return nil
	}
	if got := crc32c.Checksum(q.Dst); got != q.crc {
		return errcode.New(errcode.ChecksumMismatch, "checkpoint %s: tensor '%s' in file %s (bytes %d-%d): CRC32C %08x, manifest says %08x",
			r.path, q.tensor, q.File, q.Offset, q.Offset+int64(len(q.Dst)), got, q.crc)
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
