package chunkengine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs/faultfs"
)

// Reads after the first one reuse the cached descriptor: with every open
// of a data file failing, reads of a cached version still work, while a
// new version (a new file) is opened, not served from the old descriptor.
func TestFDCacheReusesDescriptors(t *testing.T) {
	ffs, e, _ := openFaulty(t, Options{})
	r := rand.New(rand.NewPCG(1, 2))
	id := ChunkID{Inode: 7, Index: 1}
	want := randBytes(r, 100<<10)
	mustApply(t, e, id, Update{Kind: UpdateWrite, ChunkSize: testChunkSize, Data: want})
	checkContent(t, e, id, want)

	rule := ffs.Add(faultfs.Rule{Ops: faultfs.OpOpen, Path: ruleDataFiles, Err: syscall.EIO})
	for i := range 20 {
		off := uint32(i * 4096)
		p := make([]byte, 4096)
		if _, _, err := e.ReadAt(id, p, off, false); err != nil {
			t.Fatalf("read %d with opens failing: %v", i, err)
		}
		if !bytes.Equal(p, want[off:off+4096]) {
			t.Fatalf("read %d: wrong bytes", i)
		}
		reg, err := e.OpenRegion(id, off, 4096, false)
		if err != nil {
			t.Fatalf("region %d with opens failing: %v", i, err)
		}
		if _, err := reg.File.ReadAt(p, reg.Offset); err != nil || !bytes.Equal(p, want[off:off+4096]) {
			t.Fatalf("region %d: %v or wrong bytes", i, err)
		}
		reg.Close()
	}
	if n := ffs.Fired(rule); n != 0 {
		t.Fatalf("data files were opened %d times for cached reads", n)
	}

	// An overwrite inside the content makes a new file (copy-on-write,
	// reading the old content through the cached descriptor): reading it
	// must open that file, which now fails.
	mustApply(t, e, id, Update{Kind: UpdateWrite, Offset: 10, Data: []byte("new bytes")})
	_, _, err := e.Read(id, 0, 4096, false)
	wantCode(t, err, errcode.Internal)
	if n := ffs.Fired(rule); n != 1 {
		t.Fatalf("open rule fired %d times, want 1 (the new version's file)", n)
	}
}

// dataFDs lists this process's descriptors on files under dir; deleted
// ones carry the kernel's " (deleted)" suffix.
func dataFDs(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list descriptors: %v", err)
	}
	var out []string
	for _, ent := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", ent.Name()))
		rel, ok := strings.CutPrefix(target, filepath.Join(dir, dataDir)+"/")
		if err == nil && ok && strings.Contains(rel, "/") { // data/<shard>/<file>, not a shard directory
			out = append(out, target)
		}
	}
	return out
}

// The cache stays within its bound, and never keeps a removed or replaced
// data file open (its disk space would stay in use) except while a
// reader still holds it.
func TestFDCacheBoundAndDroppedFiles(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, dir, Options{NoSync: true, OpenFiles: 3})
	r := rand.New(rand.NewPCG(3, 4))
	contents := map[ChunkID][]byte{}
	for i := range 8 {
		id := ChunkID{Inode: 9, Index: uint32(i)}
		contents[id] = randBytes(r, 8<<10)
		mustApply(t, e, id, Update{Kind: UpdateWrite, ChunkSize: testChunkSize, Data: contents[id]})
		checkContent(t, e, id, contents[id])
	}
	if fds := dataFDs(t, dir); len(fds) != 3 {
		t.Fatalf("%d data files open after reading 8 chunks, want the bound 3: %v", len(fds), fds)
	}

	// A region held across a commit that replaces its file keeps reading
	// the old content; the file is dropped from the cache at the commit
	// and closed when the region is released.
	id := ChunkID{Inode: 9, Index: 7}
	old := contents[id]
	reg, err := e.OpenRegion(id, 0, 8<<10, false)
	if err != nil {
		t.Fatal(err)
	}
	contents[id] = applyModel(append([]byte(nil), old...), Update{Kind: UpdateWrite, Offset: 100, Data: []byte("replaced")})
	mustApply(t, e, id, Update{Kind: UpdateWrite, Offset: 100, Data: []byte("replaced")})
	p := make([]byte, len(old))
	if _, err := reg.File.ReadAt(p, 0); err != nil || !bytes.Equal(p, old) {
		t.Fatalf("held region after the commit: %v or content changed", err)
	}
	if fds := dataFDs(t, dir); !hasDeleted(fds) {
		t.Fatalf("the held region's file should still be open (deleted): %v", fds)
	}
	reg.Close()
	reg.Close() // harmless
	checkContent(t, e, id, contents[id])

	// Remove a cached chunk and truncate another to 0 (no file).
	if _, err := e.Apply(ChunkID{Inode: 9, Index: 6}, Update{Kind: UpdateRemove}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ChunkID{Inode: 9, Index: 5}, Update{Kind: UpdateTruncate, Length: 0}); err != nil {
		t.Fatal(err)
	}
	if fds := dataFDs(t, dir); hasDeleted(fds) || len(fds) > 3 {
		t.Fatalf("descriptors after replace/remove: %v (want at most 3, none deleted)", fds)
	}
	if n, _, err := e.RemoveInode(9, 100); err != nil || n != 7 {
		t.Fatalf("remove inode: %d removed, %v", n, err)
	}
	if fds := dataFDs(t, dir); len(fds) != 0 {
		t.Fatalf("descriptors after removing every chunk: %v", fds)
	}
	e.Close()
	if fds := dataFDs(t, dir); len(fds) != 0 {
		t.Fatalf("descriptors after close: %v", fds)
	}
}

func hasDeleted(fds []string) bool {
	for _, f := range fds {
		if strings.HasSuffix(f, " (deleted)") {
			return true
		}
	}
	return false
}

// Many readers and writers on few chunks with a tiny cache: every read
// returns one committed version's bytes whole (checked against the
// version's CRC), and nothing leaks.
func TestFDCacheConcurrent(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, dir, Options{NoSync: true, OpenFiles: 2, VerifyInterval: -1})
	const chunks = 4
	for i := range chunks {
		id := ChunkID{Inode: 11, Index: uint32(i)}
		mustApply(t, e, id, Update{Kind: UpdateWrite, ChunkSize: testChunkSize, Data: bytes.Repeat([]byte{byte(i)}, 16<<10)})
	}
	done := make(chan error, 8)
	for w := range 8 {
		go func() {
			r := rand.New(rand.NewPCG(uint64(w), 5))
			for n := range 300 {
				id := ChunkID{Inode: 11, Index: uint32(r.IntN(chunks))}
				if w < 2 {
					// Writers: overwrite from 0 (a new file each time).
					b := bytes.Repeat([]byte{byte(n)}, 16<<10)
					if _, err := e.Apply(id, Update{Kind: UpdateWrite, Data: b}); err != nil {
						done <- err
						return
					}
					continue
				}
				got, _, err := e.Read(id, 0, 16<<10, false)
				if err != nil {
					done <- fmt.Errorf("read %s: %w", id, err)
					return
				}
				if !bytes.Equal(got, bytes.Repeat(got[:1], len(got))) {
					done <- fmt.Errorf("read %s: mixed content", id)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if fds := dataFDs(t, dir); hasDeleted(fds) || len(fds) > 2 {
		t.Fatalf("descriptors after the run: %v", fds)
	}
}
