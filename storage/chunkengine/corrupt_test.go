package chunkengine

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
)

func TestChecksumCorruptionDetected(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	data := randBytes(r, 100<<10)
	// Each way of reading must detect a flipped byte on a freshly opened
	// engine (nothing verified yet) and mark the chunk corrupt.
	reads := map[string]func(e *Engine, id ChunkID) error{
		"full read": func(e *Engine, id ChunkID) error {
			_, _, err := e.Read(id, 0, testChunkSize, false)
			return err
		},
		"partial read": func(e *Engine, id ChunkID) error {
			_, _, err := e.Read(id, 10, 100, false)
			return err
		},
		"region": func(e *Engine, id ChunkID) error {
			_, err := e.OpenRegion(id, 0, 4096, false)
			return err
		},
		"verify": func(e *Engine, id ChunkID) error { return e.Verify(id) },
		"overwrite in the middle": func(e *Engine, id ChunkID) error {
			_, err := e.Apply(id, Update{Kind: UpdateWrite, Offset: 50, Data: []byte("x"), ChainVer: 1})
			return err
		},
		"shrinking truncate": func(e *Engine, id ChunkID) error {
			_, err := e.Apply(id, Update{Kind: UpdateTruncate, Length: 10, ChainVer: 1})
			return err
		},
	}
	for name, read := range reads {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			dir := t.TempDir()
			e := openT(t, dir, Options{NoSync: true})
			id := ChunkID{30, 1}
			other := ChunkID{30, 2}
			mustApply(t, e, id, Update{Kind: UpdateWrite, Data: data, ChunkSize: testChunkSize, ChainVer: 1})
			mustApply(t, e, other, Update{Kind: UpdateWrite, Data: data, ChunkSize: testChunkSize, ChainVer: 1})
			path := e.DataPath(id)
			e.Close()
			testutil.FlipByte(t, path, 70000)

			e = openT(t, dir, Options{NoSync: true})
			err := read(e, id)
			wantCode(t, err, errcode.ChecksumMismatch)
			if !e.IsCorrupt(id) || !slices.Equal(e.CorruptChunks(), []ChunkID{id}) {
				t.Fatalf("not marked corrupt: %v", e.CorruptChunks())
			}
			// Every later read fails fast; the other chunk is fine.
			_, _, err = e.Read(id, 0, 10, true)
			wantCode(t, err, errcode.ChecksumMismatch)
			checkContent(t, e, other, data)
			// The flag is durable.
			e.Close()
			e = openT(t, dir, Options{NoSync: true})
			if m, _ := e.Stat(id); !m.Corrupt {
				t.Fatalf("corrupt flag lost on reopen: %+v", m)
			}
			// Ordinary updates are refused; a full-chunk replace repairs.
			_, err = e.Apply(id, Update{Kind: UpdateWrite, Offset: 1000, Data: []byte("x"), ChainVer: 1})
			wantCode(t, err, errcode.ChecksumMismatch)
			v, err := e.Prepare(id, Update{Kind: UpdateReplace, Data: data, Version: 5, ChainVer: 2})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Commit(id, v, 2); err != nil {
				t.Fatal(err)
			}
			if e.IsCorrupt(id) {
				t.Fatal("replace did not clear the corrupt flag")
			}
			checkContent(t, e, id, data)
		})
	}
}

func TestCorruptionShortAndMissingFile(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, dir, Options{NoSync: true, VerifyInterval: -1})
	a, b := ChunkID{31, 0}, ChunkID{31, 1}
	mustApply(t, e, a, Update{Kind: UpdateWrite, Data: make([]byte, 5000), ChunkSize: MinChunkSize})
	mustApply(t, e, b, Update{Kind: UpdateWrite, Data: make([]byte, 5000), ChunkSize: MinChunkSize})
	// Damage while the engine is open: VerifyInterval -1 re-checks on
	// every read, so no reopen is needed.
	if err := os.Truncate(e.DataPath(a), 4000); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.Read(a, 100, 10, false)
	wantCode(t, err, errcode.ChecksumMismatch)
	pathB := e.DataPath(b)
	e.Close()
	os.Remove(pathB)
	// A missing committed file is found when the target opens.
	e = openT(t, dir, Options{NoSync: true})
	if got := e.CorruptChunks(); !slices.Equal(got, []ChunkID{a, b}) {
		t.Fatalf("corrupt chunks after reopen: %v", got)
	}
}

func TestVerifyInterval(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, dir, Options{NoSync: true}) // default interval: one check vouches for a minute
	id := ChunkID{32, 0}
	data := bytes.Repeat([]byte("0123456789"), 1000)
	mustApply(t, e, id, Update{Kind: UpdateWrite, Data: data, ChunkSize: MinChunkSize})
	if _, _, err := e.Read(id, 0, 20, false); err != nil {
		t.Fatal(err)
	}
	testutil.FlipByte(t, e.DataPath(id), 5)
	// Within the interval a partial read away from the damage trusts the
	// earlier check; a full read and Verify always check.
	if got, _, err := e.Read(id, 100, 10, false); err != nil || string(got) != "0123456789" {
		t.Fatalf("cached partial read: %q %v", got, err)
	}
	wantCode(t, e.Verify(id), errcode.ChecksumMismatch)
	if !e.IsCorrupt(id) {
		t.Fatal("Verify did not mark corrupt")
	}
}

func TestRegion(t *testing.T) {
	e := openT(t, t.TempDir(), Options{NoSync: true})
	id := ChunkID{33, 0}
	old := bytes.Repeat([]byte("A"), 10000)
	mustApply(t, e, id, Update{Kind: UpdateWrite, Data: old, ChunkSize: MinChunkSize})
	rg, err := e.OpenRegion(id, 100, 500, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rg.Close()
	if rg.Offset != 100 || rg.Length != 500 || rg.Version != 1 || rg.Checksum != crc(old) {
		t.Fatalf("region %+v", rg)
	}
	// A copy-on-write overwrite commits and unlinks the old file; the
	// region still reads the version it was opened for.
	mustApply(t, e, id, Update{Kind: UpdateWrite, Offset: 50, Data: bytes.Repeat([]byte("B"), 1000)})
	got, err := io.ReadAll(io.NewSectionReader(rg.File, rg.Offset, rg.Length))
	if err != nil || !bytes.Equal(got, old[100:600]) {
		t.Fatalf("region content changed under a commit: %v", err)
	}
	// Clipped to the length; empty past it.
	rg2, err := e.OpenRegion(id, 9900, 500, false)
	if err != nil || rg2.Length != 100 || rg2.Version != 2 {
		t.Fatalf("clipped region %+v %v", rg2, err)
	}
	rg2.Close()
	rg3, err := e.OpenRegion(id, 20000, 10, false)
	if err != nil || rg3.Length != 0 || rg3.File != nil {
		t.Fatalf("region past the end %+v %v", rg3, err)
	}
	rg3.Close()
}

func TestRecoveryRemovesGarbage(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, dir, Options{NoSync: true})
	a, b, c := ChunkID{40, 0}, ChunkID{40, 1}, ChunkID{40, 2}
	mustApply(t, e, a, Update{Kind: UpdateWrite, Data: []byte("committed a"), ChunkSize: MinChunkSize})
	mustApply(t, e, b, Update{Kind: UpdateWrite, Data: []byte("committed b"), ChunkSize: MinChunkSize})
	// b: pending copy-on-write version in its own file, which we delete.
	if _, err := e.Prepare(b, Update{Kind: UpdateWrite, Offset: 0, Data: []byte("X")}); err != nil {
		t.Fatal(err)
	}
	// c: pending create whose data stays.
	if _, err := e.Prepare(c, Update{Kind: UpdateWrite, Data: []byte("pending c"), ChunkSize: MinChunkSize}); err != nil {
		t.Fatal(err)
	}
	pathA, pathB := e.DataPath(a), e.DataPath(b)
	e.Close()
	files, _ := filepath.Glob(filepath.Join(dir, dataDir, "*", "*"))
	removed := 0
	for _, f := range files {
		if id, _, _ := parseDataName(filepath.Base(f)); id == b && f != pathB {
			os.Remove(f) // the pending version's data
			removed++
		}
	}
	if removed != 1 {
		t.Fatalf("expected one pending data file for %s, removed %d", b, removed)
	}
	// Garbage: an unreferenced data file, a stray name, a leftover
	// snapshot temp file, an uncommitted tail on a committed file.
	orphan := e.dataPath(ChunkID{40, 9}, 77)
	os.MkdirAll(filepath.Dir(orphan), 0o755)
	if err := os.WriteFile(orphan, []byte("orphan"), 0o644); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(filepath.Dir(pathA), "junk.tmp")
	os.WriteFile(stray, []byte("junk"), 0o644)
	os.WriteFile(filepath.Join(dir, snapTmpName), []byte("half a snapshot"), 0o644)
	f, _ := os.OpenFile(pathA, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("uncommitted tail"))
	f.Close()
	// A torn record at the log's end.
	lf, _ := os.OpenFile(filepath.Join(dir, logName), os.O_WRONLY|os.O_APPEND, 0)
	lf.Write([]byte{40, 0, 0, 0, 1, 2})
	lf.Close()

	e = openT(t, dir, Options{NoSync: true})
	for _, p := range []string{orphan, stray, filepath.Join(dir, snapTmpName)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s survived reopen", p)
		}
	}
	if fi, _ := os.Stat(pathA); fi.Size() != int64(len("committed a")) {
		t.Fatalf("uncommitted tail not trimmed: size %d", fi.Size())
	}
	checkContent(t, e, a, []byte("committed a"))
	if m, _ := e.Stat(b); m.PendingVersion != 0 || m.Version != 1 {
		t.Fatalf("pending version with missing data not dropped: %+v", m)
	}
	checkContent(t, e, b, []byte("committed b"))
	if m, _ := e.Stat(c); m.PendingVersion != 1 {
		t.Fatalf("intact pending create lost: %+v", m)
	}
	if err := e.Commit(c, 1, 0); err != nil {
		t.Fatal(err)
	}
	checkContent(t, e, c, []byte("pending c"))
	// New records append cleanly after the cut tail.
	mustApply(t, e, a, Update{Kind: UpdateWrite, Offset: 11, Data: []byte("!")})
	e.Close()
	e = openT(t, dir, Options{NoSync: true})
	checkContent(t, e, a, []byte("committed a!"))
}

func TestCompactionKeepsState(t *testing.T) {
	dir := t.TempDir()
	opts := Options{NoSync: true, CompactBytes: 2 << 10}
	e := openT(t, dir, opts)
	model := map[ChunkID][]byte{}
	for i := 0; i < 400; i++ {
		id := ChunkID{50, uint32(i % 13)}
		u := Update{Kind: UpdateWrite, Offset: uint32(len(model[id])), Data: []byte{byte(i)}, ChunkSize: MinChunkSize}
		mustApply(t, e, id, u)
		model[id] = applyModel(model[id], u)
		if i%50 == 49 {
			if _, _, err := e.RemoveInode(50, 2); err != nil {
				t.Fatal(err)
			}
			for id := range model {
				if _, ok := e.Stat(id); !ok {
					delete(model, id)
				}
			}
		}
	}
	// Compaction runs in the background: let the last one finish, and start
	// one more if writes arrived while it ran, before checking the log.
	for e.compacting.Load() || e.mlog.sizeNow() >= opts.CompactBytes {
		e.maybeCompact()
		e.bg.Wait()
	}
	e.Close()
	if fi, err := os.Stat(filepath.Join(dir, snapName)); err != nil || fi.Size() == 0 {
		t.Fatalf("no snapshot written: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, logName)); fi.Size() > 4<<10 {
		t.Fatalf("log not compacted: %d bytes", fi.Size())
	}
	e = openT(t, dir, opts)
	if len(e.Dump()) != len(model) {
		t.Fatalf("%d chunks after reopen, want %d", len(e.Dump()), len(model))
	}
	for id, want := range model {
		checkContent(t, e, id, want)
	}
}
