package chunkengine

import (
	"testing"
)

func outcomeMap(e *Engine) map[WriteTag]WriteOutcome {
	m := map[WriteTag]WriteOutcome{}
	for _, o := range e.WriteOutcomes() {
		m[o.Tag] = o
	}
	return m
}

// TestWriteOutcomesSurviveReopen (issue 13, hole 6): a tagged update's
// committed outcome is found again after the engine reopens, whether it
// is still in the metadata log or was compacted into the snapshot; an
// uncommitted one is not an outcome but its tag stays on the pending
// version; a later write of the same channel replaces the outcome, a
// later write of another client to the same chunk does not.
func TestWriteOutcomesSurviveReopen(t *testing.T) {
	for _, compact := range []bool{false, true} {
		dir := t.TempDir()
		e := openT(t, dir, Options{NoSync: true})
		x, y, z := ChunkID{Inode: 1}, ChunkID{Inode: 2}, ChunkID{Inode: 3}
		a1 := WriteTag{Client: 10, Channel: 1, Seq: 1}
		b4 := WriteTag{Client: 11, Channel: 7, Seq: 4}
		c1 := WriteTag{Client: 12, Channel: 1, Seq: 1}
		d1 := WriteTag{Client: 13, Channel: 1, Seq: 1}
		a2 := WriteTag{Client: 10, Channel: 1, Seq: 2}
		a9 := WriteTag{Client: 10, Channel: 2, Seq: 9}
		mustApply(t, e, x, Update{Kind: UpdateWrite, Data: []byte("xxxx"), ChunkSize: testChunkSize, Tag: a9})
		// Prepare, then commit: the commit record carries the outcome.
		v, err := e.Prepare(y, Update{Kind: UpdateWrite, Data: []byte("yy"), ChunkSize: testChunkSize, Tag: b4})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Commit(y, v, 0); err != nil {
			t.Fatal(err)
		}
		mustApply(t, e, x, Update{Kind: UpdateWrite, Data: []byte("aa"), Offset: 4, Tag: a1})
		// Another client overwrites x: a9's and a1's outcomes must stay.
		mustApply(t, e, x, Update{Kind: UpdateWrite, Data: []byte("dd"), Offset: 0, Tag: d1})
		// Channel (10,1) moves on to seq 2 on y: it replaces a1.
		mustApply(t, e, y, Update{Kind: UpdateTruncate, Length: 1, Tag: a2})
		// Pending, never committed: not an outcome.
		if _, err := e.Prepare(z, Update{Kind: UpdateWrite, Data: []byte("z"), ChunkSize: testChunkSize, Tag: c1}); err != nil {
			t.Fatal(err)
		}
		// An untagged update keeps the chunk's tag off.
		mustApply(t, e, ChunkID{Inode: 4}, Update{Kind: UpdateWrite, Data: []byte("q"), ChunkSize: testChunkSize})
		want := outcomeMap(e)
		if compact {
			if err := e.compact(); err != nil {
				t.Fatal(err)
			}
		}
		e.Close()
		e = openT(t, dir, Options{NoSync: true})
		got := outcomeMap(e)
		if len(got) != 4 || len(want) != 4 {
			t.Fatalf("compact %v: %d outcomes before reopen, %d after, want 4 (a9, b4, a2, d1): %+v", compact, len(want), len(got), got)
		}
		xm, _ := e.Stat(x)
		ym, _ := e.Stat(y)
		for tag, o := range map[WriteTag]WriteOutcome{
			a9: {Tag: a9, Chunk: x, Version: 1, Length: 4, Checksum: crc([]byte("xxxx"))},
			b4: {Tag: b4, Chunk: y, Version: 1, Length: 2, Checksum: crc([]byte("yy"))},
			a2: {Tag: a2, Chunk: y, Version: ym.Version, Length: 1, Checksum: crc([]byte("y"))},
			d1: {Tag: d1, Chunk: x, Version: xm.Version, Length: 6, Checksum: crc([]byte("ddxxaa"))},
		} {
			if got[tag] != o || want[tag] != o {
				t.Errorf("compact %v: outcome of %+v: %+v before reopen, %+v after; want %+v", compact, tag, want[tag], got[tag], o)
			}
		}
		if _, ok := got[a1]; ok {
			t.Errorf("compact %v: a1 kept although its channel moved on to a2", compact)
		}
		if zm, _ := e.Stat(z); zm.PendingTag != c1 {
			t.Errorf("compact %v: pending tag of z %+v after reopen, want %+v", compact, zm.PendingTag, c1)
		}
	}
}

// TestWriteOutcomesAreBounded: at most MaxWriteOutcomes are kept, the
// most recent ones, across a reopen too; outcomes recorded from a sync
// (RecordOutcomes) survive a reopen.
func TestWriteOutcomesAreBounded(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, dir, Options{NoSync: true, MaxWriteOutcomes: 10})
	id := ChunkID{Inode: 1}
	for c := uint64(1); c <= 100; c++ {
		mustApply(t, e, id, Update{Kind: UpdateWrite, Data: []byte{byte(c)}, ChunkSize: testChunkSize, Tag: WriteTag{Client: c, Channel: 1, Seq: 1}})
	}
	synced := WriteOutcome{Tag: WriteTag{Client: 500, Channel: 2, Seq: 3}, Chunk: ChunkID{Inode: 9}, Version: 7, Length: 5, Checksum: 42}
	if err := e.RecordOutcomes([]WriteOutcome{synced}); err != nil {
		t.Fatal(err)
	}
	check := func(when string, e *Engine) {
		got := outcomeMap(e)
		if len(got) > 10 {
			t.Fatalf("%s: %d outcomes kept, bound 10", when, len(got))
		}
		if o := got[WriteTag{Client: 100, Channel: 1, Seq: 1}]; o.Version != 100 {
			t.Fatalf("%s: newest outcome %+v, want version 100", when, o)
		}
		if got[synced.Tag] != synced {
			t.Fatalf("%s: synced outcome %+v, want %+v", when, got[synced.Tag], synced)
		}
		if _, ok := got[WriteTag{Client: 1, Channel: 1, Seq: 1}]; ok {
			t.Fatalf("%s: the oldest outcome was kept past the bound", when)
		}
	}
	check("before reopen", e)
	e.Close()
	check("after reopen", openT(t, dir, Options{NoSync: true, MaxWriteOutcomes: 10}))
}

// BenchmarkTaggedApply: 4 KiB Apply appends with fsync on, with and
// without a write tag. The tag rides in the commit's own metadata record
// (40 bytes more, no extra fsync), so both should cost the same.
//
//	go test -run '^$' -bench TaggedApply -count 3 ./storage/chunkengine/
func BenchmarkTaggedApply(b *testing.B) {
	data := make([]byte, 4<<10)
	for _, tagged := range []bool{false, true} {
		name := "untagged"
		if tagged {
			name = "tagged"
		}
		b.Run(name, func(b *testing.B) {
			e := openT(b, b.TempDir(), Options{})
			var idx uint32
			var off int
			var seq uint64
			for b.Loop() {
				if off+len(data) > benchChunk {
					idx, off = idx+1, 0
				}
				u := Update{Kind: UpdateWrite, Offset: uint32(off), Data: data, ChunkSize: benchChunk}
				if tagged {
					seq++
					u.Tag = WriteTag{Client: 1, Channel: uint32(seq % 256), Seq: seq}
				}
				if _, err := e.Apply(ChunkID{1, idx}, u); err != nil {
					b.Fatal(err)
				}
				off += len(data)
			}
		})
	}
}
