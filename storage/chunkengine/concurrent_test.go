package chunkengine

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
)

// TestConcurrentChunks runs writers on different chunks, readers racing
// the writers of one chunk, GC of another inode, and Dump, all at once
// (meant for -race). Readers must only ever see whole committed versions.
func TestConcurrentChunks(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, dir, Options{NoSync: true, CompactBytes: 4 << 10})
	const writers, steps = 4, 60
	var wg, readers sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 64)
	// content of version v of a chunk: a uniform byte, so a torn read shows.
	content := func(w, v int) []byte { return bytes.Repeat([]byte{byte(w*steps + v)}, 3000+v*37) }
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			id := ChunkID{60, uint32(w)}
			for v := 1; v <= steps; v++ {
				u := Update{Kind: UpdateReplace, Data: content(w, v), Version: uint64(v), ChunkSize: MinChunkSize}
				if v%3 == 0 {
					u = Update{Kind: UpdateWrite, Data: content(w, v), ChunkSize: MinChunkSize}
				}
				ver, err := e.Prepare(id, u)
				if err == nil {
					err = e.Commit(id, ver, 0)
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d step %d: %w", w, v, err)
					return
				}
			}
		}(w)
	}
	// Readers of chunk 60:0 while it changes.
	var goodReads atomic.Int64
	for r := 0; r < 3; r++ {
		readers.Add(1)
		go func(r bool) {
			defer readers.Done()
			for stopped := false; !stopped; {
				select {
				case <-stop:
					stopped = true // one last read after the writers finish
				default:
				}
				got, ver, err := e.Read(ChunkID{60, 0}, 0, MinChunkSize, r)
				switch {
				case errcode.Is(err, errcode.NotCommitted) || errcode.Is(err, errcode.NotFound):
					continue
				case err != nil:
					errs <- fmt.Errorf("reader: %w", err)
					return
				}
				// Versions grow in length and each write starts at 0, so
				// every committed version is one byte value throughout.
				if len(got) == 0 || bytes.Count(got, got[:1]) != len(got) {
					errs <- fmt.Errorf("reader: torn or empty content at version %d", ver)
					return
				}
				goodReads.Add(1)
			}
		}(r == 0)
	}
	// GC of another inode and metadata dumps.
	for i := uint32(0); i < 40; i++ {
		mustApply(t, e, ChunkID{61, i}, Update{Kind: UpdateWrite, Data: []byte("gc me"), ChunkSize: MinChunkSize})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			_, more, err := e.RemoveInode(61, 3)
			if err != nil {
				errs <- err
				return
			}
			_ = e.Dump()
			if _, err := e.SpaceInfo(); err != nil {
				errs <- err
				return
			}
			if !more {
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if goodReads.Load() == 0 {
		t.Fatal("no reader saw a committed version")
	}
	if _, _, found := e.QueryLastChunk(61); found {
		t.Fatal("inode 61 not fully removed")
	}
	for w := 0; w < writers; w++ {
		m, _ := e.Stat(ChunkID{60, uint32(w)})
		if m.Version != steps {
			t.Fatalf("writer %d: version %d, want %d", w, m.Version, steps)
		}
		want := content(w, steps)
		checkContent(t, e, ChunkID{60, uint32(w)}, want)
	}
	// Same state after a reopen.
	e.Close()
	e2 := openT(t, dir, Options{NoSync: true})
	if len(e2.Dump()) != writers {
		t.Fatalf("after reopen: %d chunks", len(e2.Dump()))
	}
}
