package chunkengine

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs/faultfs"
)

// directDir is a directory on a file system that takes O_DIRECT (the
// test's temporary directory). These tests check the direct write path,
// so a temporary directory on tmpfs fails them loudly rather than letting
// them pass on the buffered path.
func directDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	fd, err := syscall.Open(filepath.Join(dir, "probe"), syscall.O_CREAT|syscall.O_RDWR|syscall.O_DIRECT, 0o644)
	if err != nil {
		t.Fatalf("%s refuses O_DIRECT (%v): run the chunk engine tests with TMPDIR on a disk file system", dir, err)
	}
	syscall.Close(fd)
	os.Remove(filepath.Join(dir, "probe"))
	return dir
}

// directStep is one update of the direct-I/O workload and the content the
// chunk has after it.
type directStep struct {
	name   string
	id     ChunkID
	u      Update
	direct bool // the update writes an aligned run of at least directMin
}

// directSteps exercise every way an update writes data, with data that is
// not aligned in memory (bounce buffer), offsets that are not aligned
// (buffered head), lengths with a buffered tail, and copies.
func directSteps() []directStep {
	r := rand.New(rand.NewPCG(7, 7))
	odd := func(n int) []byte { return randBytes(r, n+1)[1:] } // 1 byte past an aligned start
	const cs = 4 << 20
	a, b, c := ChunkID{9, 0}, ChunkID{9, 1}, ChunkID{9, 2}
	return []directStep{
		{"new file, unaligned memory, buffered tail", a, Update{Kind: UpdateWrite, Data: odd(1<<20 + 100), ChunkSize: cs}, true},
		{"in-place append at an unaligned offset", a, Update{Kind: UpdateWrite, Offset: 1<<20 + 100, Data: odd(300 << 10)}, true},
		{"overwrite inside: copy into a new file", a, Update{Kind: UpdateWrite, Offset: 4096, Data: randBytes(r, 200<<10)}, true},
		{"write after a hole, aligned memory", b, Update{Kind: UpdateWrite, Offset: 64 << 10, Data: alignedCopy(randBytes(r, 512<<10)), ChunkSize: cs}, true},
		{"truncate down: copy of a prefix", b, Update{Kind: UpdateTruncate, Length: 100<<10 + 5}, true},
		{"small write stays buffered", b, Update{Kind: UpdateWrite, Offset: 100<<10 + 5, Data: randBytes(r, 5000)}, false},
		{"replace with a whole new file", c, Update{Kind: UpdateReplace, Version: 7, Data: randBytes(r, 2<<20), ChunkSize: cs}, true},
		{"KeepCached: through the page cache", c, Update{Kind: UpdateWrite, Offset: 2 << 20, Data: alignedCopy(randBytes(r, 1<<20)), KeepCached: true}, false},
	}
}

func alignedCopy(p []byte) []byte {
	b := alignedBuf(len(p))
	copy(b, p)
	return b
}

// checkAll checks every chunk of model (checkContent) and its checksum
// against the whole content on disk.
func checkAll(t *testing.T, e *Engine, model map[ChunkID][]byte, when string) {
	t.Helper()
	t.Logf("checking: %s", when)
	for id, want := range model {
		checkContent(t, e, id, want)
		if err := e.Verify(id); err != nil {
			t.Fatalf("%s: verify %s: %v", when, id, err)
		}
	}
}

// TestDirectIOWrites: every update layout written with O_DIRECT reads back
// byte for byte, before and after a reopen, and the direct path was taken
// exactly where the update has an aligned run of directMin or more.
func TestDirectIOWrites(t *testing.T) {
	dir := filepath.Join(directDir(t), "t")
	e := openT(t, dir, Options{VerifyInterval: -1})
	model := map[ChunkID][]byte{}
	for _, s := range directSteps() {
		before := e.directBytes.Load()
		if _, err := e.Apply(s.id, s.u); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		model[s.id] = applyModel(model[s.id], s.u)
		if got := e.directBytes.Load() > before; got != s.direct {
			t.Errorf("%s: wrote with O_DIRECT: %v, want %v", s.name, got, s.direct)
		}
		checkAll(t, e, model, s.name)
	}
	if e.noDirect.Load() {
		t.Fatal("the engine turned O_DIRECT off on a file system that takes it")
	}
	e.Close()
	checkAll(t, openT(t, dir, Options{VerifyInterval: -1}), model, "after reopen")

	// The same workload with BufferedIO writes nothing directly.
	e = openT(t, filepath.Join(t.TempDir(), "b"), Options{BufferedIO: true})
	for _, s := range directSteps() {
		mustApply(t, e, s.id, s.u)
	}
	if n := e.directBytes.Load(); n != 0 {
		t.Fatalf("BufferedIO engine wrote %d bytes with O_DIRECT", n)
	}
}

// TestDirectIOCrashImages: after each acknowledged direct-I/O update, the
// disk a power loss could leave (only what was synced; or each unsynced
// change kept, lost or torn) reopens to exactly the acknowledged content.
// O_DIRECT puts bytes on the device but not necessarily past its cache,
// and not the allocation that makes them readable: the fdatasync after a
// direct write is what this test depends on (skipping it fails it).
func TestDirectIOCrashImages(t *testing.T) {
	root := directDir(t)
	ffs, err := faultfs.New(vfs.Default, root, faultfs.Options{SkipRealSync: true})
	if err != nil {
		t.Fatal(err)
	}
	e := openT(t, filepath.Join(root, "t"), Options{FS: ffs, VerifyInterval: -1})
	model := map[ChunkID][]byte{}
	for i, s := range directSteps() {
		if _, err := e.Apply(s.id, s.u); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		model[s.id] = applyModel(model[s.id], s.u)
		for _, mode := range []faultfs.CrashMode{faultfs.LoseUnsynced, faultfs.TearUnsynced} {
			img := filepath.Join(t.TempDir(), "img")
			if err := ffs.CrashImage(img, mode, uint64(i)); err != nil {
				t.Fatal(err)
			}
			r, err := Open(filepath.Join(img, "t"), Options{VerifyInterval: -1, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatalf("%s, %s: reopen: %v", s.name, mode, err)
			}
			if bad := r.CorruptChunks(); len(bad) > 0 {
				t.Fatalf("%s, %s: chunks %v marked corrupt after the crash", s.name, mode, bad)
			}
			checkAll(t, r, model, fmt.Sprintf("%s, crash image %s", s.name, mode))
			r.Close()
		}
	}
	if e.directBytes.Load() == 0 {
		t.Fatal("nothing was written with O_DIRECT")
	}
}

// TestDataCRCChecked: with DataCRCChecked the engine takes the caller's
// checksum of the data (new file, append after a hole, replace) and the
// chunk's checksum comes out exactly as if computed from the bytes; a
// wrong one is not silent: the next verification marks the chunk corrupt.
func TestDataCRCChecked(t *testing.T) {
	e := openT(t, t.TempDir(), Options{NoSync: true, VerifyInterval: -1})
	r := rand.New(rand.NewPCG(8, 8))
	id := ChunkID{10, 0}
	var model []byte
	for _, u := range []Update{
		{Kind: UpdateWrite, Data: randBytes(r, 100<<10), ChunkSize: 1 << 20},
		{Kind: UpdateWrite, Offset: 300 << 10, Data: randBytes(r, 7777)},
		{Kind: UpdateWrite, Offset: 300<<10 + 7777, Data: randBytes(r, 1)},
		{Kind: UpdateReplace, Version: 9, Data: randBytes(r, 5000)},
		{Kind: UpdateWrite, Offset: 5000, Data: randBytes(r, 64<<10)},
	} {
		u.DataCRC, u.DataCRCChecked = crc(u.Data), true
		mustApply(t, e, id, u)
		model = applyModel(model, u)
		checkContent(t, e, id, model)
	}
	bad := randBytes(r, 4096)
	mustApply(t, e, id, Update{Kind: UpdateWrite, Offset: uint32(len(model)), Data: bad, DataCRC: crc(bad) ^ 1, DataCRCChecked: true})
	if _, _, err := e.Read(id, 0, 10, false); !errcode.Is(err, errcode.ChecksumMismatch) || !e.IsCorrupt(id) {
		t.Fatalf("read after an update with a wrong checked CRC: %v (corrupt %v), want ChecksumMismatch and the chunk marked corrupt", err, e.IsCorrupt(id))
	}
}

// TestDirectIORefusedWrite: a file system that takes the O_DIRECT flag but
// refuses the write itself with EINVAL (a device whose logical block is
// larger than directAlign) gets the data through the page cache instead,
// and the engine stops trying O_DIRECT; whether the caller's data was
// aligned in memory (written directly) or not (bounce buffer) must not
// matter. faultfs answers the first data write with EINVAL, as the kernel
// does, after the descriptor was switched to O_DIRECT.
func TestDirectIORefusedWrite(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"aligned memory", alignedCopy(randBytes(r, 1<<20))},
		{"unaligned memory", randBytes(r, 1<<20+1)[1:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := directDir(t)
			ffs, err := faultfs.New(vfs.Default, root, faultfs.Options{SkipRealSync: true})
			if err != nil {
				t.Fatal(err)
			}
			e := openT(t, filepath.Join(root, "t"), Options{FS: ffs, VerifyInterval: -1})
			rule := ffs.Add(faultfs.Rule{Ops: faultfs.OpWrite, Path: ruleDataFiles, Times: 1, Err: syscall.EINVAL})
			id := ChunkID{11, 0}
			if _, err := e.Apply(id, Update{Kind: UpdateWrite, Data: tc.data, ChunkSize: 4 << 20}); err != nil {
				t.Fatalf("write refused with EINVAL by O_DIRECT was not retried through the page cache: %v", err)
			}
			if ffs.Fired(rule) != 1 {
				t.Fatalf("the EINVAL rule fired %d times, want 1", ffs.Fired(rule))
			}
			if !e.noDirect.Load() {
				t.Fatal("the engine keeps using O_DIRECT after the file system refused a direct write")
			}
			if n := e.directBytes.Load(); n != 0 {
				t.Fatalf("%d bytes counted as written with O_DIRECT, none were", n)
			}
			checkAll(t, e, map[ChunkID][]byte{id: tc.data}, "after the refused direct write")
		})
	}
}

// TestDirectIOAppendsBesideReaders: direct appends to a chunk while
// readers read small, unaligned pieces of its committed content through
// the engine's cached descriptors. O_DIRECT is switched on only on the
// writer's own descriptor: were it ever set on a shared one, these
// unaligned reads would fail with EINVAL (and sendfile from it too).
func TestDirectIOAppendsBesideReaders(t *testing.T) {
	e := openT(t, filepath.Join(directDir(t), "t"), Options{VerifyInterval: time.Hour})
	r := rand.New(rand.NewPCG(6, 6))
	id := ChunkID{12, 0}
	const piece, pieces = 128<<10 + 3, 24
	model := randBytes(r, 5000)
	mustApply(t, e, id, Update{Kind: UpdateWrite, Data: model, ChunkSize: 4 << 20})
	before := e.directBytes.Load()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 777)
			for !stop.Load() {
				if _, _, err := e.ReadAt(id, buf, 1, false); err != nil && !errcode.Is(err, errcode.NotCommitted) {
					t.Errorf("read beside a direct append: %v", err)
					return
				}
			}
		}()
	}
	for i := 0; i < pieces; i++ {
		d := randBytes(r, piece)
		mustApply(t, e, id, Update{Kind: UpdateWrite, Offset: uint32(len(model)), Data: d})
		model = append(model, d...)
	}
	stop.Store(true)
	wg.Wait()
	if e.directBytes.Load() == before {
		t.Fatal("the appends wrote nothing with O_DIRECT")
	}
	checkAll(t, e, map[ChunkID][]byte{id: model}, "after the appends")
}
