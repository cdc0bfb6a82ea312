package chunkengine

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
)

// Write outcomes: what a retried client write needs to be applied once
// even after the process restarted (issue 13, hole 6). The storage
// service's dedupe table is in memory; the engine keeps the durable part
// of it, at no extra fsync: an update may carry a WriteTag (the client's
// dedupe key), the tag rides in the metadata record that commits the
// update (the same record, the same group-committed fsync), and replay
// and compaction keep, per (client, channel), the highest seq with the
// chunk state it committed. The service reloads them at start
// (Engine.WriteOutcomes). The engine does not interpret tags beyond that.

// WriteTag is a client's dedupe key for one write: (client, channel) and
// the write's sequence number on that channel. Client 0 means none.
type WriteTag struct {
	Client  uint64
	Channel uint32
	Seq     uint64
}

// IsZero reports whether t is "no tag".
func (t WriteTag) IsZero() bool { return t.Client == 0 }

const writeTagLen = 8 + 4 + 8

func appendTag(b []byte, t WriteTag) []byte {
	b = binary.LittleEndian.AppendUint64(b, t.Client)
	b = binary.LittleEndian.AppendUint32(b, t.Channel)
	return binary.LittleEndian.AppendUint64(b, t.Seq)
}

func parseTag(b []byte) WriteTag {
	return WriteTag{Client: binary.LittleEndian.Uint64(b), Channel: binary.LittleEndian.Uint32(b[8:]), Seq: binary.LittleEndian.Uint64(b[12:])}
}

// WriteOutcome is a committed tagged write: the chunk and its committed
// version, length and checksum right after that write.
type WriteOutcome struct {
	Tag      WriteTag
	Chunk    ChunkID
	Version  uint64
	Length   uint32
	Checksum uint32
}

// tagRecordLen is a recTag record (snapshots and RecordOutcomes): kind,
// tag, chunk, version, length, checksum.
const tagRecordLen = 1 + writeTagLen + ChunkIDSize + 8 + 4 + 4

func encodeTagRecord(b []byte, o WriteOutcome) []byte {
	p := make([]byte, 0, tagRecordLen)
	p = append(p, recTag)
	p = appendTag(p, o.Tag)
	p = o.Chunk.AppendBytes(p)
	p = binary.LittleEndian.AppendUint64(p, o.Version)
	p = binary.LittleEndian.AppendUint32(p, o.Length)
	p = binary.LittleEndian.AppendUint32(p, o.Checksum)
	return frame(b, p)
}

func decodeTagRecord(p []byte) (WriteOutcome, error) {
	if len(p) != tagRecordLen {
		return WriteOutcome{}, fmt.Errorf("write outcome record has %d bytes, want %d", len(p), tagRecordLen)
	}
	o := WriteOutcome{Tag: parseTag(p[1:])}
	q := p[1+writeTagLen:]
	o.Chunk, _ = ParseChunkID(q[:ChunkIDSize])
	q = q[ChunkIDSize:]
	o.Version = binary.LittleEndian.Uint64(q)
	o.Length = binary.LittleEndian.Uint32(q[8:])
	o.Checksum = binary.LittleEndian.Uint32(q[12:])
	if o.Tag.IsZero() {
		return o, fmt.Errorf("write outcome record without a client")
	}
	return o, nil
}

// committedOutcome is the outcome a state's committed version records,
// if its update was tagged.
func committedOutcome(id ChunkID, s *chunkState) (WriteOutcome, bool) {
	v := s.Committed
	if v.Tag.IsZero() || v.Version == 0 {
		return WriteOutcome{}, false
	}
	return WriteOutcome{Tag: v.Tag, Chunk: id, Version: v.Version, Length: v.Length, Checksum: v.Checksum}, true
}

// DefaultMaxWriteOutcomes is Options.MaxWriteOutcomes' default (the
// storage service's dedupe table bound).
const DefaultMaxWriteOutcomes = 1 << 18

type outcomeKey struct {
	client  uint64
	channel uint32
}

type outcomeEntry struct {
	o   WriteOutcome
	age uint64 // when it was last noted; the smallest go first
}

// outcomeTable keeps the latest outcome per (client, channel), at most max
// of them (the oldest noted go first, down to 90%, so eviction runs once
// per many notes).
type outcomeTable struct {
	mu  sync.Mutex
	m   map[outcomeKey]outcomeEntry
	max int
	now uint64
}

func newOutcomeTable(max int) *outcomeTable {
	if max <= 0 {
		max = DefaultMaxWriteOutcomes
	}
	return &outcomeTable{m: map[outcomeKey]outcomeEntry{}, max: max}
}

// note records o unless the table holds a newer seq of its channel.
func (t *outcomeTable) note(o WriteOutcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := outcomeKey{o.Tag.Client, o.Tag.Channel}
	if e, ok := t.m[k]; ok && e.o.Tag.Seq > o.Tag.Seq {
		return
	}
	t.now++
	t.m[k] = outcomeEntry{o: o, age: t.now}
	if len(t.m) > t.max {
		t.evictLocked()
	}
}

func (t *outcomeTable) evictLocked() {
	ages := make([]uint64, 0, len(t.m))
	for _, e := range t.m {
		ages = append(ages, e.age)
	}
	slices.Sort(ages)
	cut := ages[len(ages)-t.max*9/10] // keep entries at least this recent
	for k, e := range t.m {
		if e.age < cut {
			delete(t.m, k)
		}
	}
}

// list returns the outcomes, oldest noted first.
func (t *outcomeTable) list() []WriteOutcome {
	t.mu.Lock()
	es := make([]outcomeEntry, 0, len(t.m))
	for _, e := range t.m {
		es = append(es, e)
	}
	t.mu.Unlock()
	slices.SortFunc(es, func(a, b outcomeEntry) int { return compareU64(a.age, b.age) })
	out := make([]WriteOutcome, len(es))
	for i, e := range es {
		out[i] = e.o
	}
	return out
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// WriteOutcomes returns the committed tagged writes this target knows of,
// the latest per (client, channel), oldest first: the service's dedupe
// table reloads them at start.
func (e *Engine) WriteOutcomes() []WriteOutcome { return e.outcomes.list() }

// RecordOutcomes durably records outcomes learned elsewhere (a sync
// source's dedupe table), with one metadata fsync for the lot.
func (e *Engine) RecordOutcomes(os []WriteOutcome) error {
	var rec []byte
	for _, o := range os {
		if o.Tag.IsZero() {
			continue
		}
		rec = encodeTagRecord(rec, o)
	}
	if len(rec) == 0 {
		return nil
	}
	if err := e.appendDurable(rec); err != nil {
		return err
	}
	for _, o := range os {
		if !o.Tag.IsZero() {
			e.outcomes.note(o)
		}
	}
	e.compactMu.RUnlock()
	e.maybeCompact()
	return nil
}
