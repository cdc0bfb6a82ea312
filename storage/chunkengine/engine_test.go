package chunkengine

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
)

func TestChunkIDEncoding(t *testing.T) {
	ids := []ChunkID{{0, 0}, {1, 0}, {1, 1}, {1, 1 << 31}, {2, 0}, {1 << 63, 7}}
	for i, id := range ids {
		b := id.Bytes()
		if len(b) != ChunkIDSize {
			t.Fatalf("%s encodes to %d bytes", id, len(b))
		}
		back, err := ParseChunkID(b)
		if err != nil || back != id {
			t.Fatalf("round trip of %s: %v %v", id, back, err)
		}
		if i > 0 && bytes.Compare(ids[i-1].Bytes(), b) >= 0 {
			t.Fatalf("encoding of %s does not sort after %s", id, ids[i-1])
		}
		if i > 0 && !ids[i-1].Less(id) {
			t.Fatalf("%s.Less(%s) is false", ids[i-1], id)
		}
	}
	if got := (ChunkID{Inode: 42, Index: 3}).String(); got != "42:3" {
		t.Fatalf("String = %q", got)
	}
	if got := (ChunkID{Inode: 0x0102030405060708, Index: 0x0a0b0c0d}).Bytes(); !bytes.Equal(got, []byte{1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13}) {
		t.Fatalf("encoding is %x", got)
	}
	_, err := ParseChunkID([]byte{1, 2, 3})
	wantCode(t, err, errcode.InvalidArgument)
}

// TestUpdatesMatchModel drives every content path (append, hole, overlap,
// full overwrite, grow, shrink, truncate to zero, replace) through both
// Apply and Prepare/Commit and compares with an in-memory model, across
// reopens.
func TestUpdatesMatchModel(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, dir, Options{NoSync: true, CompactBytes: 8 << 10})
	r := rand.New(rand.NewPCG(1, 2))
	ids := []ChunkID{{7, 0}, {7, 1}, {8, 5}}
	model := map[ChunkID][]byte{}
	vers := map[ChunkID]uint64{}
	for step := 0; step < 300; step++ {
		id := ids[r.IntN(len(ids))]
		cur := model[id]
		var u Update
		switch k := r.IntN(10); {
		case k < 5 || cur == nil:
			n := 1 + r.IntN(40<<10)
			var off int
			switch r.IntN(4) {
			case 0: // append
				off = min(len(cur), testChunkSize-n)
			case 1: // hole past the end
				off = min(len(cur)+r.IntN(8<<10), testChunkSize-n)
			case 2: // full overwrite from 0
				off, n = 0, max(n, len(cur))
			default: // anywhere
				off = r.IntN(testChunkSize - n)
			}
			u = Update{Kind: UpdateWrite, Offset: uint32(off), Data: randBytes(r, n), ChunkSize: testChunkSize}
		case k < 8:
			var l int
			switch r.IntN(3) {
			case 0:
				l = 0
			case 1:
				l = r.IntN(len(cur) + 1)
			default:
				l = len(cur) + r.IntN(testChunkSize-len(cur)+1)
			}
			u = Update{Kind: UpdateTruncate, Length: uint32(l)}
		default:
			u = Update{Kind: UpdateReplace, Data: randBytes(r, r.IntN(64<<10)), Version: vers[id] + 1, ChunkSize: testChunkSize}
		}
		var v uint64
		var err error
		if r.IntN(2) == 0 {
			v, err = e.Apply(id, u)
		} else {
			v, err = e.Prepare(id, u)
			if err == nil {
				err = e.Commit(id, v, 0)
			}
		}
		if err != nil {
			t.Fatalf("step %d %s %s: %v", step, u.Kind, id, err)
		}
		if v != vers[id]+1 {
			t.Fatalf("step %d: version %d, want %d", step, v, vers[id]+1)
		}
		vers[id] = v
		model[id] = applyModel(slices.Clone(cur), u)
		checkContent(t, e, id, model[id])
		if step%97 == 96 {
			e.Close()
			e = openT(t, dir, Options{NoSync: true, CompactBytes: 8 << 10})
			for _, id := range ids {
				if model[id] != nil {
					checkContent(t, e, id, model[id])
				}
			}
		}
	}
	// Every data file on disk belongs to a committed version.
	files, _ := filepath.Glob(filepath.Join(dir, dataDir, "*", "*"))
	if len(files) > len(ids) {
		t.Fatalf("%d data files for %d chunks: old versions were not removed: %v", len(files), len(ids), files)
	}
}

func TestPendingSemantics(t *testing.T) {
	e := openT(t, t.TempDir(), Options{NoSync: true})
	id := ChunkID{1, 0}
	old := bytes.Repeat([]byte("a"), 1000)
	mustApply(t, e, id, Update{Kind: UpdateWrite, Data: old, ChunkSize: MinChunkSize, ChainVer: 3})

	// Pending overwrite: strict reads refuse, relaxed reads see v1.
	v, err := e.Prepare(id, Update{Kind: UpdateWrite, Offset: 10, Data: []byte("XYZ"), ChainVer: 3})
	if err != nil || v != 2 {
		t.Fatalf("prepare: %d %v", v, err)
	}
	_, _, err = e.Read(id, 0, 100, false)
	wantCode(t, err, errcode.NotCommitted)
	_, err = e.OpenRegion(id, 0, 100, false)
	wantCode(t, err, errcode.NotCommitted)
	got, ver, err := e.Read(id, 0, 2000, true)
	if err != nil || ver != 1 || !bytes.Equal(got, old) {
		t.Fatalf("relaxed read: ver %d err %v equal %v", ver, err, bytes.Equal(got, old))
	}
	m, _ := e.Stat(id)
	want := applyModel(slices.Clone(old), Update{Kind: UpdateWrite, Offset: 10, Data: []byte("XYZ")})
	if m.Version != 1 || m.PendingVersion != 2 || m.PendingLength != 1000 || m.PendingChecksum != crc(want) || m.ChainVer != 3 {
		t.Fatalf("meta with pending: %+v", m)
	}
	if err := e.Commit(id, 2, 4); err != nil {
		t.Fatal(err)
	}
	got, ver, err = e.Read(id, 0, 2000, false)
	if err != nil || ver != 2 || !bytes.Equal(got, want) {
		t.Fatalf("after commit: ver %d err %v", ver, err)
	}
	if m, _ := e.Stat(id); m.ChainVer != 4 || m.PendingVersion != 0 {
		t.Fatalf("meta after commit: %+v", m)
	}

	// Pending append, then abort: content and length unchanged.
	v, err = e.Prepare(id, Update{Kind: UpdateWrite, Offset: 1000, Data: []byte("tail"), ChainVer: 4})
	if err != nil || v != 3 {
		t.Fatalf("prepare append: %d %v", v, err)
	}
	if err := e.Abort(id, 3); err != nil {
		t.Fatal(err)
	}
	checkContent(t, e, id, want)
	if fi, err := os.Stat(e.DataPath(id)); err != nil || fi.Size() != 1000 {
		t.Fatalf("aborted tail left in data file: %v %v", fi.Size(), err)
	}
	// The next update reuses version 3.
	if v := mustApply(t, e, id, Update{Kind: UpdateWrite, Offset: 1000, Data: []byte("tail2"), ChainVer: 4}); v != 3 {
		t.Fatalf("version after abort: %d", v)
	}

	// A pending create: strict read NotCommitted, relaxed NotFound.
	nid := ChunkID{1, 1}
	if _, err := e.Prepare(nid, Update{Kind: UpdateWrite, Data: []byte("new"), ChunkSize: MinChunkSize}); err != nil {
		t.Fatal(err)
	}
	_, _, err = e.Read(nid, 0, 10, false)
	wantCode(t, err, errcode.NotCommitted)
	_, _, err = e.Read(nid, 0, 10, true)
	wantCode(t, err, errcode.NotFound)
	if _, _, found := e.QueryLastChunk(1); !found {
		t.Fatal("QueryLastChunk lost chunk 1:0")
	}
	if id, _, _ := e.QueryLastChunk(1); id.Index != 0 {
		t.Fatalf("QueryLastChunk counts a pending create: %s", id)
	}
	if err := e.Abort(nid, 1); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Stat(nid); ok {
		t.Fatal("aborted create still exists")
	}
	_, _, err = e.Read(nid, 0, 10, true)
	wantCode(t, err, errcode.NotFound)

	// A retried forward of the same version replaces the pending content.
	if _, err := e.Prepare(id, Update{Kind: UpdateWrite, Offset: 0, Data: []byte("first"), Version: 4, ChainVer: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Prepare(id, Update{Kind: UpdateWrite, Offset: 0, Data: []byte("again"), Version: 4, ChainVer: 4}); err != nil {
		t.Fatal(err)
	}
	if err := e.Commit(id, 4, 0); err != nil {
		t.Fatal(err)
	}
	got, _, _ = e.Read(id, 0, 5, false)
	if string(got) != "again" {
		t.Fatalf("retried prepare: got %q", got)
	}
}

func TestVersionErrors(t *testing.T) {
	e := openT(t, t.TempDir(), Options{NoSync: true})
	id := ChunkID{2, 0}
	mustApply(t, e, id, Update{Kind: UpdateWrite, Data: []byte("v1"), ChunkSize: MinChunkSize, ChainVer: 5})
	mustApply(t, e, id, Update{Kind: UpdateWrite, Data: []byte("v2"), ChainVer: 5})

	_, err := e.Prepare(id, Update{Kind: UpdateWrite, Data: []byte("x"), Version: 4, ChainVer: 5})
	ve := wantVersionErr(t, err, errcode.Conflict)
	if ve.Committed != 2 || ve.Version != 4 || !strings.Contains(err.Error(), "missed updates") {
		t.Fatalf("gap error: %+v", ve)
	}
	_, err = e.Prepare(id, Update{Kind: UpdateWrite, Data: []byte("x"), Version: 2, ChainVer: 5})
	wantVersionErr(t, err, errcode.AlreadyExists)
	_, err = e.Prepare(id, Update{Kind: UpdateWrite, Data: []byte("x"), ChainVer: 4})
	wantCode(t, err, errcode.StaleVersion)
	if !strings.Contains(err.Error(), "chain version 4") || !strings.Contains(err.Error(), "chain version 5") {
		t.Fatalf("stale message does not name versions: %v", err)
	}

	v, err := e.Prepare(id, Update{Kind: UpdateWrite, Data: []byte("v3"), ChainVer: 5})
	if err != nil || v != 3 {
		t.Fatalf("prepare: %d %v", v, err)
	}
	_, err = e.Prepare(id, Update{Kind: UpdateWrite, Data: []byte("x"), ChainVer: 5})
	wantVersionErr(t, err, errcode.Busy)
	err = e.Commit(id, 4, 5)
	if ve := wantVersionErr(t, err, errcode.Conflict); ve.Pending != 3 {
		t.Fatalf("commit error: %+v", ve)
	}
	err = e.Abort(id, 2)
	wantVersionErr(t, err, errcode.Conflict)
	if err := e.Commit(id, 3, 5); err != nil {
		t.Fatal(err)
	}
	if err := e.Commit(id, 3, 5); err != nil {
		t.Fatalf("retried commit of the committed version: %v", err)
	}
	wantVersionErr(t, e.Commit(id, 4, 5), errcode.NotFound)
	wantVersionErr(t, e.Commit(ChunkID{99, 0}, 1, 5), errcode.NotFound)
	if err := e.Abort(id, 4); err != nil {
		t.Fatalf("abort with nothing pending: %v", err)
	}
	if err := e.Abort(ChunkID{99, 0}, 1); err != nil {
		t.Fatalf("abort of unknown chunk: %v", err)
	}
	// Replace ignores local versions entirely.
	if v, err := e.Prepare(id, Update{Kind: UpdateReplace, Data: []byte("r"), Version: 2}); err != nil || v != 2 {
		t.Fatalf("replace at lower version: %d %v", v, err)
	}
	if err := e.Commit(id, 2, 6); err != nil {
		t.Fatal(err)
	}
	if m, _ := e.Stat(id); m.Version != 2 || m.ChainVer != 6 || m.Length != 1 {
		t.Fatalf("after replace: %+v", m)
	}
}

func TestBadInput(t *testing.T) {
	e := openT(t, t.TempDir(), Options{NoSync: true})
	id := ChunkID{3, 0}
	cases := []struct {
		name string
		u    Update
		code errcode.Code
		msg  []string
	}{
		{"oversize write", Update{Kind: UpdateWrite, Data: make([]byte, MinChunkSize+1), ChunkSize: MinChunkSize}, errcode.OutOfRange, []string{"65537", "65536"}},
		{"offset past chunk size", Update{Kind: UpdateWrite, Offset: MinChunkSize, Data: []byte("x"), ChunkSize: MinChunkSize}, errcode.OutOfRange, []string{"offset 65536", "chunk size 65536"}},
		{"write crossing the end", Update{Kind: UpdateWrite, Offset: MinChunkSize - 2, Data: []byte("xyz"), ChunkSize: MinChunkSize}, errcode.OutOfRange, []string{"ends at 65537"}},
		{"truncate past chunk size", Update{Kind: UpdateTruncate, Length: MinChunkSize + 1, ChunkSize: MinChunkSize}, errcode.OutOfRange, []string{"65537"}},
		{"replace past chunk size", Update{Kind: UpdateReplace, Version: 1, Data: make([]byte, MinChunkSize+5), ChunkSize: MinChunkSize}, errcode.OutOfRange, []string{"65541"}},
		{"chunk size too small", Update{Kind: UpdateWrite, Data: []byte("x"), ChunkSize: 4096}, errcode.InvalidArgument, []string{"chunk size 4096"}},
		{"chunk size too large", Update{Kind: UpdateWrite, Data: []byte("x"), ChunkSize: MaxChunkSize + 1}, errcode.InvalidArgument, []string{"67108865"}},
		{"create without chunk size", Update{Kind: UpdateWrite, Data: []byte("x")}, errcode.InvalidArgument, []string{"no chunk size"}},
		{"empty write", Update{Kind: UpdateWrite, ChunkSize: MinChunkSize}, errcode.InvalidArgument, []string{"0 bytes"}},
		{"unknown kind", Update{Kind: 77, ChunkSize: MinChunkSize}, errcode.InvalidArgument, []string{"kind 77"}},
		{"replace without version", Update{Kind: UpdateReplace, Data: []byte("x"), ChunkSize: MinChunkSize}, errcode.InvalidArgument, []string{"explicit version"}},
		{"remove unknown chunk", Update{Kind: UpdateRemove}, errcode.NotFound, []string{"3:0"}},
		{"bad data checksum", Update{Kind: UpdateWrite, Data: []byte("abc"), ChunkSize: MinChunkSize, CheckDataCRC: true, DataCRC: 1}, errcode.ChecksumMismatch, []string{"00000001"}},
	}
	for _, tc := range cases {
		_, err := e.Prepare(id, tc.u)
		if errcode.CodeOf(err) != tc.code {
			t.Fatalf("%s: got %v, want %s", tc.name, err, tc.code)
		}
		for _, m := range tc.msg {
			if !strings.Contains(err.Error(), m) {
				t.Fatalf("%s: error %q does not mention %q", tc.name, err, m)
			}
		}
		if _, ok := e.Stat(id); ok {
			t.Fatalf("%s: refused update left a chunk behind", tc.name)
		}
	}
	// A good data checksum passes.
	mustApply(t, e, id, Update{Kind: UpdateWrite, Data: []byte("abc"), ChunkSize: MinChunkSize, CheckDataCRC: true, DataCRC: crc([]byte("abc"))})
	_, err := e.Prepare(id, Update{Kind: UpdateWrite, Data: []byte("x"), ChunkSize: 2 * MinChunkSize})
	wantCode(t, err, errcode.InvalidArgument)

	_, _, err = e.Read(ChunkID{3, 9}, 0, 10, false)
	wantCode(t, err, errcode.NotFound)
	_, _, err = e.Read(id, MinChunkSize+1, 10, false)
	wantCode(t, err, errcode.OutOfRange)
	_, _, err = e.Read(id, 0, MaxChunkSize+1, false)
	wantCode(t, err, errcode.OutOfRange)
	// Reads past the length are short, not errors.
	if got, _, err := e.Read(id, 2, 100, false); err != nil || string(got) != "c" {
		t.Fatalf("read at the end: %q %v", got, err)
	}
	if got, _, err := e.Read(id, 500, 100, false); err != nil || len(got) != 0 {
		t.Fatalf("read past the end: %q %v", got, err)
	}
	wantCode(t, e.MarkCorrupt(ChunkID{3, 9}, "test"), errcode.NotFound)
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, dir, Options{NoSync: true})
	_, err := Open(dir, Options{NoSync: true})
	wantCode(t, err, errcode.Busy)
	e.Close()
	_, _, err = e.Read(ChunkID{1, 0}, 0, 1, false)
	wantCode(t, err, errcode.Unavailable)
	_, err = e.Apply(ChunkID{1, 0}, Update{Kind: UpdateWrite, Data: []byte("x"), ChunkSize: MinChunkSize})
	wantCode(t, err, errcode.Unavailable)

	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "precious.txt"), []byte("x"), 0o644)
	_, err = Open(other, Options{})
	wantCode(t, err, errcode.InvalidArgument)

	os.WriteFile(filepath.Join(dir, formatName), []byte("emberfs-chunkengine 99\n"), 0o644)
	_, err = Open(dir, Options{})
	wantCode(t, err, errcode.InvalidArgument)
}

func TestQueryLastChunkDumpSpace(t *testing.T) {
	e := openT(t, t.TempDir(), Options{NoSync: true})
	if _, _, found := e.QueryLastChunk(10); found {
		t.Fatal("empty engine found a chunk")
	}
	for _, idx := range []uint32{0, 5, 2} {
		mustApply(t, e, ChunkID{10, idx}, Update{Kind: UpdateWrite, Data: make([]byte, 100+int(idx)), ChunkSize: MinChunkSize, ChainVer: 9})
	}
	mustApply(t, e, ChunkID{11, 7}, Update{Kind: UpdateTruncate, Length: 0, ChunkSize: MinChunkSize})
	id, length, found := e.QueryLastChunk(10)
	if !found || id != (ChunkID{10, 5}) || length != 105 {
		t.Fatalf("QueryLastChunk = %s %d %v", id, length, found)
	}
	if id, length, found := e.QueryLastChunk(11); !found || id.Index != 7 || length != 0 {
		t.Fatalf("empty last chunk: %s %d %v", id, length, found)
	}
	if _, err := e.Prepare(ChunkID{10, 2}, Update{Kind: UpdateWrite, Offset: 102, Data: []byte("zz"), ChainVer: 9}); err != nil {
		t.Fatal(err)
	}
	if err := e.MarkCorrupt(ChunkID{10, 0}, "test"); err != nil {
		t.Fatal(err)
	}
	d := e.Dump()
	want := []ChunkMeta{
		{ID: ChunkID{10, 0}, ChunkSize: MinChunkSize, Version: 1, ChainVer: 9, Length: 100, Checksum: crc(make([]byte, 100)), Corrupt: true},
		{ID: ChunkID{10, 2}, ChunkSize: MinChunkSize, Version: 1, ChainVer: 9, Length: 102, Checksum: crc(make([]byte, 102)),
			PendingVersion: 2, PendingChainVer: 9, PendingLength: 104, PendingChecksum: crc(append(make([]byte, 102), 'z', 'z'))},
		{ID: ChunkID{10, 5}, ChunkSize: MinChunkSize, Version: 1, ChainVer: 9, Length: 105, Checksum: crc(make([]byte, 105))},
		{ID: ChunkID{11, 7}, ChunkSize: MinChunkSize, Version: 1, Length: 0, Checksum: 0},
	}
	if !slices.Equal(d, want) {
		t.Fatalf("Dump:\n got %+v\nwant %+v", d, want)
	}
	si, err := e.SpaceInfo()
	if err != nil {
		t.Fatal(err)
	}
	if si.Chunks != 4 || si.ChunkBytes != 100+102+105 || si.Capacity == 0 || si.Free > si.Capacity || si.Used > si.Capacity {
		t.Fatalf("SpaceInfo: %+v", si)
	}
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, dir, Options{NoSync: true})
	id := ChunkID{20, 0}
	mustApply(t, e, id, Update{Kind: UpdateWrite, Data: []byte("hello"), ChunkSize: MinChunkSize})
	path := e.DataPath(id)
	v, err := e.Prepare(id, Update{Kind: UpdateRemove})
	if err != nil || v != 2 {
		t.Fatalf("prepare remove: %d %v", v, err)
	}
	if m, _ := e.Stat(id); !m.PendingRemove || m.PendingVersion != 2 {
		t.Fatalf("pending remove meta: %+v", m)
	}
	_, _, err = e.Read(id, 0, 5, false)
	wantCode(t, err, errcode.NotCommitted)
	if got, _, err := e.Read(id, 0, 5, true); err != nil || string(got) != "hello" {
		t.Fatalf("relaxed read under pending remove: %q %v", got, err)
	}
	if err := e.Commit(id, 2, 0); err != nil {
		t.Fatal(err)
	}
	_, _, err = e.Read(id, 0, 5, true)
	wantCode(t, err, errcode.NotFound)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("data file of removed chunk still there: %v", err)
	}
	// Recreated, it starts again at version 1.
	if v := mustApply(t, e, id, Update{Kind: UpdateWrite, Data: []byte("again"), ChunkSize: MinChunkSize}); v != 1 {
		t.Fatalf("recreated chunk at version %d", v)
	}
	mustApply(t, e, id, Update{Kind: UpdateRemove})
	if _, ok := e.Stat(id); ok {
		t.Fatal("applied remove left the chunk")
	}

	// Batched inode removal, pending versions included.
	for i := uint32(0); i < 10; i++ {
		mustApply(t, e, ChunkID{21, i}, Update{Kind: UpdateWrite, Data: []byte("x"), ChunkSize: MinChunkSize})
	}
	mustApply(t, e, ChunkID{22, 0}, Update{Kind: UpdateWrite, Data: []byte("keep"), ChunkSize: MinChunkSize})
	if _, err := e.Prepare(ChunkID{21, 3}, Update{Kind: UpdateWrite, Data: []byte("yy")}); err != nil {
		t.Fatal(err)
	}
	n, more, err := e.RemoveInode(21, 4)
	if err != nil || n != 4 || !more {
		t.Fatalf("first batch: %d %v %v", n, more, err)
	}
	if id, _, _ := e.QueryLastChunk(21); id.Index != 5 {
		t.Fatalf("batch did not remove the highest indexes first: last is %s", id)
	}
	n, more, err = e.RemoveInode(21, 0)
	if err != nil || n != 6 || more {
		t.Fatalf("second batch: %d %v %v", n, more, err)
	}
	if _, _, found := e.QueryLastChunk(21); found {
		t.Fatal("inode 21 still has chunks")
	}
	e.Close()
	e = openT(t, dir, Options{NoSync: true})
	if d := e.Dump(); len(d) != 1 || d[0].ID != (ChunkID{22, 0}) {
		t.Fatalf("after reopen: %+v", d)
	}
	files, _ := filepath.Glob(filepath.Join(dir, dataDir, "*", "*"))
	if len(files) != 1 {
		t.Fatalf("data files left: %v", files)
	}
}
