package client_test

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/service/meta"
)

func pattern(n int, salt byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i>>8) ^ byte(i) ^ salt
	}
	return p
}

// Sequential small writes stay in the write-back buffer until Flush;
// Flush puts them in storage; Sync/Close publish the length to others.
func TestWriteBackVisibility(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	w := newClient(t, c, client.Config{WriteBuffer: 1 << 20})
	r := newClient(t, c, client.Config{})
	store := r.ChunkStore()
	f, err := w.Open(ctx, meta.Root, meta.P("/wb"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(100*4096, 1)
	for i := 0; i < len(data); i += 4096 {
		if _, err := f.WriteAt(data[i:i+4096], int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := store.QueryLength(ctx, f.Inode().ID, f.Inode().Layout); err != nil || got != 0 {
		t.Fatalf("storage length before Flush = %d, %v; want 0 (buffered)", got, err)
	}
	if f.Size() != int64(len(data)) {
		t.Fatalf("writer's Size() %d, want %d", f.Size(), len(data))
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, err := store.QueryLength(ctx, f.Inode().ID, f.Inode().Layout); err != nil || got != uint64(len(data)) {
		t.Fatalf("storage length after Flush = %d, %v; want %d", got, err, len(data))
	}
	if got, err := r.ReadFile(ctx, meta.Root, meta.P("/wb")); err != nil || len(got) != 0 {
		t.Fatalf("other client before Sync: %d bytes, %v; want 0 (length not finalized)", len(got), err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, err := r.ReadFile(ctx, meta.Root, meta.P("/wb")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("other client after Sync: %d bytes, %v", len(got), err)
	}
	more := pattern(3*testChunk+5, 2)
	if _, err := f.WriteAt(more, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := r.ReadFile(ctx, meta.Root, meta.P("/wb")); err != nil || !bytes.Equal(got, append(data, more...)) {
		t.Fatalf("other client after Close: %d bytes, %v", len(got), err)
	}
}

// A read sees the same client's buffered writes, on the same handle and
// on another handle of the file.
func TestReadSeesBufferedWrites(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	cl := newClient(t, c, client.Config{WriteBuffer: 1 << 20})
	f, err := cl.Open(ctx, meta.Root, meta.P("/rb"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := cl.Open(ctx, meta.Root, meta.P("/rb"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	data := pattern(10000, 3)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*client.File{f, g} {
		buf := make([]byte, len(data))
		if n, err := h.ReadAt(buf, 0); err != nil || n != len(data) || !bytes.Equal(buf, data) {
			t.Fatalf("read of buffered write: %d %v", n, err)
		}
	}
}

// Read-ahead windows and cached blocks are dropped when this client writes.
func TestReadAheadAndCacheInvalidation(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	cl := newClient(t, c, client.Config{ReadAhead: 2 * testChunk, WriteBuffer: -1})
	size := 8 * testChunk
	m := &model{}
	m.writeAt(pattern(size, 4), 0)
	if err := cl.WriteFile(ctx, meta.Root, meta.P("/ra"), m.data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := cl.Open(ctx, meta.Root, meta.P("/ra"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	other, err := cl.Open(ctx, meta.Root, meta.P("/ra"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	const step = 4096
	for off := 0; off < size; off += step {
		checkRead(t, "sequential", f, m, int64(off), step)
		switch off {
		case testChunk: // overwrite ahead of the reader, inside the window or prefetch
			p := pattern(testChunk, 5)
			if _, err := f.WriteAt(p, int64(off+step)); err != nil {
				t.Fatal(err)
			}
			m.writeAt(p, int64(off+step))
		case 4 * testChunk: // the same through another handle of this client
			p := pattern(testChunk/2, 6)
			if _, err := other.WriteAt(p, int64(off+2*step)); err != nil {
				t.Fatal(err)
			}
			m.writeAt(p, int64(off+2*step))
		}
	}
	// Small random reads go through the block cache.
	checkRead(t, "cached", f, m, 100, 1000)
	p := pattern(1000, 7)
	if _, err := other.WriteAt(p, 50); err != nil {
		t.Fatal(err)
	}
	m.writeAt(p, 50)
	checkRead(t, "after overwrite", f, m, 100, 1000)
	checkRead(t, "tail", f, m, int64(size-10), 100)
}

// Another client's cached blocks are not used after the file was
// overwritten in place and reopened.
func TestCacheCloseToOpen(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	a := newClient(t, c, client.Config{})
	b := newClient(t, c, client.Config{ReadAhead: -1})
	if err := a.WriteFile(ctx, meta.Root, meta.P("/cc"), pattern(5000, 8), 0o644); err != nil {
		t.Fatal(err)
	}
	read := func() []byte {
		f, err := b.Open(ctx, meta.Root, meta.P("/cc"), os.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 100)
		if _, err := f.ReadAt(buf, 10); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		return buf
	}
	if got := read(); !bytes.Equal(got, pattern(5000, 8)[10:110]) {
		t.Fatal("first read wrong")
	}
	f, err := a.Open(ctx, meta.Root, meta.P("/cc"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(pattern(5000, 9), 0); err != nil { // same length: only mtime tells
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := read(); !bytes.Equal(got, pattern(5000, 9)[10:110]) {
		t.Fatal("reopened file served stale cached data")
	}
}

// Small reads fetch whole cache blocks only when access is sequential: a
// random 4 KiB read asks storage for its own 4 KiB (not the aligned 128 KiB
// block around it), and a sequential run of small reads is served by
// read-ahead or cached blocks, fetched once.
func TestSmallRandomReadsFetchOnlyTheirBytes(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	cl := newClient(t, c, client.Config{})
	size := 8 * testChunk
	m := &model{}
	m.writeAt(pattern(size, 8), 0)
	if err := cl.WriteFile(ctx, meta.Root, meta.P("/rand"), m.data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := cl.Open(ctx, meta.Root, meta.P("/rand"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := cl.Stats().StorageReadBytes
	const reads, step = 40, 4096
	for i := range reads {
		// Offsets far apart, never continuing the previous read.
		off := int64((i*7919+13)%(size/step-1)+1) * step
		checkRead(t, "random", f, m, off, step)
	}
	if got := cl.Stats().StorageReadBytes - before; got != reads*step {
		t.Fatalf("%d random 4 KiB reads asked storage for %d bytes, want exactly %d", reads, got, reads*step)
	}
	// Sequential small reads without read-ahead: the first read (it does
	// not continue an earlier one) fetches its own bytes; from then on
	// each aligned 128 KiB block is fetched once, whole, and cached.
	seqClient := newClient(t, c, client.Config{ReadAhead: -1})
	g, err := seqClient.Open(ctx, meta.Root, meta.P("/rand"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	before = seqClient.Stats().StorageReadBytes
	for off := int64(step); off <= 256<<10; off += step {
		checkRead(t, "sequential", g, m, off, step)
	}
	if got, want := seqClient.Stats().StorageReadBytes-before, int64(step+3*128<<10); got != want {
		t.Fatalf("sequential 4 KiB reads over [4K, 260K) asked storage for %d bytes, want %d (the first read, then blocks 0-2 once each)", got, want)
	}
}
