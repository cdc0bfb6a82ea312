package client_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// model is the expected content of one file.
type model struct{ data []byte }

func (m *model) writeAt(p []byte, off int64) {
	if end := off + int64(len(p)); end > int64(len(m.data)) {
		m.data = append(m.data, make([]byte, end-int64(len(m.data)))...)
	}
	copy(m.data[off:], p)
}

func (m *model) truncate(n int64) {
	if n <= int64(len(m.data)) {
		m.data = m.data[:n]
		return
	}
	m.data = append(m.data, make([]byte, n-int64(len(m.data)))...)
}

// checkRead compares one ReadAt with the model, os.File semantics included.
func checkRead(t *testing.T, what string, f *client.File, m *model, off int64, n int) {
	t.Helper()
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = 0xee // must be overwritten, holes included
	}
	got, err := f.ReadAt(buf, off)
	size := int64(len(m.data))
	wantN := int(max(0, min(int64(n), size-off)))
	wantEOF := off+int64(n) > size
	if got != wantN || (err == io.EOF) != wantEOF || (err != nil && err != io.EOF) {
		t.Fatalf("%s: ReadAt(%d bytes at %d) of %d-byte file = %d, %v; want %d, EOF=%v", what, n, off, size, got, err, wantN, wantEOF)
	}
	if wantN > 0 && !bytes.Equal(buf[:got], m.data[off:off+int64(got)]) {
		i := 0
		for i < got && buf[i] == m.data[off+int64(i)] {
			i++
		}
		t.Fatalf("%s: ReadAt(%d at %d): first difference at file offset %d: got %#x want %#x", what, n, off, off+int64(i), buf[i], m.data[off+int64(i)])
	}
}

// randomOps runs seeded random writes, reads, truncates, flushes and
// reopens on one file and checks every read against the model.
func randomOps(t *testing.T, cl *client.Client, path string, seed uint64, ops int) *model {
	ctx := ctxT(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	m := &model{}
	f, err := cl.Open(ctx, meta.Root, meta.P(path), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{1, 100, 4096, testChunk - 1, testChunk, testChunk + 1, 3*testChunk + 17, 200 << 10}
	lastEnd := int64(0)
	for i := range ops {
		what := fmt.Sprintf("%s seed %d op %d", path, seed, i)
		switch r := rng.IntN(100); {
		case r < 40: // write: sequential, near the end, or a far sparse one
			n := sizes[rng.IntN(len(sizes))]
			var off int64
			switch rng.IntN(4) {
			case 0, 1:
				off = lastEnd
			case 2:
				off = rng.Int64N(int64(len(m.data)) + 1)
			default:
				off = int64(len(m.data)) + rng.Int64N(6*testChunk) // leaves a hole
			}
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(rng.UintN(255) + 1)
			}
			if got, err := f.WriteAt(p, off); err != nil || got != n {
				t.Fatalf("%s: WriteAt(%d at %d) = %d, %v", what, n, off, got, err)
			}
			m.writeAt(p, off)
			lastEnd = off + int64(n)
		case r < 75: // read: sequential run or random range
			n := sizes[rng.IntN(len(sizes))]
			off := rng.Int64N(int64(len(m.data)) + testChunk)
			if rng.IntN(2) == 0 {
				for k := range 4 {
					checkRead(t, what, f, m, int64(k)*int64(n), n)
				}
			} else {
				checkRead(t, what, f, m, off, n)
			}
		case r < 85:
			size := rng.Int64N(int64(len(m.data))*3/2 + 1)
			if err := f.Truncate(size); err != nil {
				t.Fatalf("%s: Truncate(%d): %v", what, size, err)
			}
			m.truncate(size)
		case r < 92:
			if err := f.Flush(); err != nil {
				t.Fatalf("%s: Flush: %v", what, err)
			}
		default: // close and reopen: the length must survive through meta
			if err := f.Close(); err != nil {
				t.Fatalf("%s: Close: %v", what, err)
			}
			if f, err = cl.Open(ctx, meta.Root, meta.P(path), os.O_RDWR, 0); err != nil {
				t.Fatalf("%s: reopen: %v", what, err)
			}
			if f.Size() != int64(len(m.data)) {
				t.Fatalf("%s: reopened size %d, want %d", what, f.Size(), len(m.data))
			}
		}
		if f.Size() != int64(len(m.data)) {
			t.Fatalf("%s: Size() %d, want %d", what, f.Size(), len(m.data))
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); !errcode.Is(err, errcode.BadFile) {
		t.Fatalf("second close: %v, want EBADF", err)
	}
	return m
}

func verifyFile(t *testing.T, cl *client.Client, path string, m *model) {
	t.Helper()
	got, err := cl.ReadFile(ctxT(t), meta.Root, meta.P(path))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, m.data) {
		t.Fatalf("%s: read back %d bytes, model has %d (equal prefix: %v)", path, len(got), len(m.data), bytes.HasPrefix(m.data, got))
	}
}

func TestRandomOpsMatchModel(t *testing.T) {
	c := startCluster(t)
	configs := map[string]client.Config{
		"defaults":          {},
		"no-buffers":        {ReadAhead: -1, WriteBuffer: -1, CacheBytes: -1},
		"tiny-buffers":      {ReadAhead: 3000, WriteBuffer: 5000, CacheBytes: 1 << 20},
		"chunk-sized-buffs": {ReadAhead: testChunk, WriteBuffer: testChunk},
	}
	fresh := newClient(t, c, client.Config{})
	seed := uint64(1)
	for name, cfg := range configs {
		cl := newClient(t, c, cfg)
		for range 2 {
			path := fmt.Sprintf("/%s-%d", name, seed)
			m := randomOps(t, cl, path, seed, 120)
			verifyFile(t, cl, path, m)
			verifyFile(t, fresh, path, m) // another client: no cache of the writer's
			seed++
		}
	}
}

func TestConcurrentWritersDifferentFiles(t *testing.T) {
	c := startCluster(t)
	cl := newClient(t, c, client.Config{})
	const writers = 8
	models := make([]*model, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			models[w] = randomOps(t, cl, fmt.Sprintf("/w%d", w), uint64(100+w), 40)
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	other := newClient(t, c, client.Config{})
	for w := range writers {
		verifyFile(t, other, fmt.Sprintf("/w%d", w), models[w])
	}
}

func TestErrorsCarryErrno(t *testing.T) {
	c := startCluster(t)
	cl := newClient(t, c, client.Config{})
	ctx := ctxT(t)
	if _, err := cl.Open(ctx, meta.Root, meta.P("/missing"), os.O_RDONLY, 0); !errcode.Is(err, errcode.NotFound) || errcode.ErrnoOf(err) != 2 {
		t.Fatalf("open missing: %v (errno %d)", err, errcode.ErrnoOf(err))
	}
	if err := cl.WriteFile(ctx, meta.Root, meta.P("/x"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Open(ctx, meta.Root, meta.P("/x"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644); !errcode.Is(err, errcode.AlreadyExists) {
		t.Fatalf("O_EXCL on existing: %v", err)
	}
	if _, err := cl.Mkdir(ctx, meta.Root, meta.P("/d"), 0o755, false); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Open(ctx, meta.Root, meta.P("/d"), os.O_RDONLY, 0); !errcode.Is(err, errcode.IsDirectory) {
		t.Fatalf("open dir: %v", err)
	}
	f, err := cl.Open(ctx, meta.Root, meta.P("/x"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("a"), 0); !errcode.Is(err, errcode.BadFile) {
		t.Fatalf("write on read-only handle: %v", err)
	}
	if _, err := f.ReadAt(make([]byte, 1), -1); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("negative offset: %v", err)
	}
	f.Close()
	if _, err := f.ReadAt(make([]byte, 1), 0); !errcode.Is(err, errcode.BadFile) {
		t.Fatalf("read after close: %v", err)
	}
	w, err := cl.Open(ctx, meta.Root, meta.P("/x"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.ReadAt(make([]byte, 1), 0); !errcode.Is(err, errcode.BadFile) {
		t.Fatalf("read on write-only handle: %v", err)
	}
	if _, err := w.WriteAt([]byte("x"), int64(testChunk)<<32); !errcode.Is(err, errcode.FileTooLarge) || errcode.ErrnoOf(err) != 27 {
		t.Fatalf("write past max size: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := cl.Open(ctx, meta.Root, meta.P("/x"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt([]byte(" world"), 0); err != nil { // O_APPEND ignores the offset
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.ReadFile(ctx, meta.Root, meta.P("/x")); err != nil || string(got) != "hello world" {
		t.Fatalf("after append: %q %v", got, err)
	}
	if err := cl.Remove(ctx, meta.Root, meta.P("/d")); err != nil {
		t.Fatal(err)
	}
	if err := cl.Remove(ctx, meta.Root, meta.P("/x")); err != nil {
		t.Fatal(err)
	}
	if err := cl.Remove(ctx, meta.Root, meta.P("/x")); errcode.ErrnoOf(err) != 2 {
		t.Fatalf("remove twice: %v", err)
	}
	if !errors.Is(io.EOF, io.EOF) {
		t.Fatal("unreachable")
	}
}
