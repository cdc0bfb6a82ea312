package service

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/wire"
)

// chunkLocks serializes everything that changes one chunk on one target:
// a head's writes, a replica's forward (held until the update committed
// or was handed over), sync and repair replaces. Holding it while an
// update is forwarded is what makes "a pending version with nobody
// driving it" detectable: under the lock no driver runs.
type chunkLocks struct {
	mu sync.Mutex
	m  map[lockKey]*lockEntry
}

type lockKey struct {
	target uint64
	id     chunkengine.ChunkID
}

type lockEntry struct {
	ch   chan struct{} // holds one token while locked
	refs int
}

func (l *chunkLocks) init() { l.m = map[lockKey]*lockEntry{} }

// lock takes the chunk's lock, giving up when ctx ends.
func (l *chunkLocks) lock(ctx context.Context, target uint64, id chunkengine.ChunkID) (func(), error) {
	k := lockKey{target, id}
	l.mu.Lock()
	e := l.m[k]
	if e == nil {
		e = &lockEntry{ch: make(chan struct{}, 1)}
		l.m[k] = e
	}
	e.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.m, k)
		}
		l.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, errcode.New(errcode.CodeOf(ctx.Err()), "waiting for chunk %s on target %d: %v", id, target, ctx.Err())
	}
}

// dedupeTable remembers, per (client, channel), the last write sequence
// number seen and its outcome, so a retried write is applied once. Heads
// consult it; every replica records forwarded writes too, so a retry
// that reaches a new head after a failover is still recognised.
type dedupeTable struct {
	mu  sync.Mutex
	m   map[dedupeKey]*dedupeEntry
	max int // bound on entries; the oldest finished ones go first
}

// defaultDedupeMaxEntries bounds the table (about 100 bytes an entry):
// far more than clients x channels that retry at any one time.
const defaultDedupeMaxEntries = 1 << 18

type dedupeKey struct {
	client  uint64
	channel uint32
}

type dedupeEntry struct {
	seq   uint64
	chunk chunkengine.ChunkID
	done  chan struct{}
	rsp   wire.UpdateRsp
	err   error
	at    time.Time
}

func newDedupeTable(max int) *dedupeTable {
	if max <= 0 {
		max = defaultDedupeMaxEntries
	}
	return &dedupeTable{m: map[dedupeKey]*dedupeEntry{}, max: max}
}

// makeRoom evicts the oldest finished entries once the table is full, down
// to 90% of the bound, so eviction runs once per many inserts. Running
// entries are never evicted (a waiter depends on them). Called with mu
// held. A retry whose entry was evicted is applied again: the bound is
// sized so that only outcomes far older than any client retry go.
func (d *dedupeTable) makeRoom() {
	if len(d.m) < d.max {
		return
	}
	type aged struct {
		k  dedupeKey
		at time.Time
	}
	var done []aged
	for k, e := range d.m {
		select {
		case <-e.done:
			done = append(done, aged{k, e.at})
		default:
		}
	}
	slices.SortFunc(done, func(a, b aged) int { return a.at.Compare(b.at) })
	for _, a := range done[:max(0, min(len(done), len(d.m)-d.max*9/10))] {
		delete(d.m, a.k)
	}
}

// begin looks up a write. It returns (entry, true) when the caller must
// run the write and then call finish; (entry, false) when the same write
// ran or runs already (wait on entry.done, then use rsp/err).
func (d *dedupeTable) begin(u *wire.UpdateReq) (*dedupeEntry, bool, error) {
	k := dedupeKey{u.ClientID, u.Channel}
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.m[k]
	if e != nil {
		switch {
		case e.seq > u.Seq:
			return nil, false, errcode.New(errcode.InvalidArgument, "write seq %d on client %x channel %d is older than seq %d already seen", u.Seq, u.ClientID, u.Channel, e.seq)
		case e.seq == u.Seq && e.chunk != u.Chunk:
			return nil, false, errcode.New(errcode.InvalidArgument, "write seq %d on client %x channel %d reused for chunk %s (was %s)", u.Seq, u.ClientID, u.Channel, u.Chunk, e.chunk)
		case e.seq == u.Seq:
			select {
			case <-e.done:
				if e.err == nil {
					return e, false, nil
				}
				// The earlier attempt failed: this retry runs it again.
			default:
				return e, false, nil
			}
		}
	}
	if d.m[k] == nil {
		d.makeRoom()
	}
	e = &dedupeEntry{seq: u.Seq, chunk: u.Chunk, done: make(chan struct{}), at: time.Now()}
	d.m[k] = e
	return e, true, nil
}

func (d *dedupeTable) finish(e *dedupeEntry, rsp wire.UpdateRsp, err error) {
	d.mu.Lock()
	e.rsp, e.err, e.at = rsp, err, time.Now()
	d.mu.Unlock()
	close(e.done)
}

// gc drops outcomes older than maxAge (clients retry for far less).
func (d *dedupeTable) gc(maxAge time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, e := range d.m {
		select {
		case <-e.done:
			if time.Since(e.at) > maxAge {
				delete(d.m, k)
			}
		default:
		}
	}
}

func (d *dedupeTable) size() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}

func (s *Service) dedupeGCLoop() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.dedupe.gc(10 * time.Minute)
		}
	}
}

// dedupeRecord is a finished, successful write outcome as a sync carries
// it to a successor.
type dedupeRecord struct {
	client  uint64
	channel uint32
	seq     uint64
	chunk   chunkengine.ChunkID
	rsp     wire.UpdateRsp
}

// succeeded lists the finished, successful outcomes whose chunk keep
// accepts.
func (d *dedupeTable) succeeded(keep func(chunkengine.ChunkID) bool) []dedupeRecord {
	d.mu.Lock()
	var out []dedupeRecord
	for k, e := range d.m {
		select {
		case <-e.done:
			if e.err == nil {
				out = append(out, dedupeRecord{client: k.client, channel: k.channel, seq: e.seq, chunk: e.chunk, rsp: e.rsp})
			}
		default:
		}
	}
	d.mu.Unlock()
	// keep may take engine locks; call it outside ours.
	n := 0
	for _, r := range out {
		if keep(r.chunk) {
			out[n] = r
			n++
		}
	}
	return out[:n]
}

// merge installs outcomes learned from a sync source: a newer seq than
// ours (or our failed attempt of the same seq) is replaced by the
// source's success, so a retry of a write this target got through the
// sync is answered instead of applied again.
func (d *dedupeTable) merge(recs []dedupeRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range recs {
		k := dedupeKey{r.client, r.channel}
		if e := d.m[k]; e != nil {
			if e.seq > r.seq {
				continue
			}
			if e.seq == r.seq {
				select {
				case <-e.done:
					if e.err == nil {
						continue
					}
				default:
					continue // running here; it will finish on its own
				}
			}
		}
		if d.m[k] == nil {
			d.makeRoom()
		}
		done := make(chan struct{})
		close(done)
		d.m[k] = &dedupeEntry{seq: r.seq, chunk: r.chunk, done: done, rsp: r.rsp, at: time.Now()}
	}
}

// outcomeRecords turns a chunk engine's persisted write outcomes into
// dedupe records.
func outcomeRecords(os []chunkengine.WriteOutcome) []dedupeRecord {
	out := make([]dedupeRecord, len(os))
	for i, o := range os {
		out[i] = dedupeRecord{client: o.Tag.Client, channel: o.Tag.Channel, seq: o.Tag.Seq, chunk: o.Chunk,
			rsp: wire.UpdateRsp{Version: o.Version, Length: o.Length, Checksum: o.Checksum}}
	}
	return out
}

// engineOutcomes is the reverse of outcomeRecords.
func engineOutcomes(recs []dedupeRecord) []chunkengine.WriteOutcome {
	out := make([]chunkengine.WriteOutcome, 0, len(recs))
	for _, r := range recs {
		if r.client == 0 {
			continue
		}
		out = append(out, chunkengine.WriteOutcome{Tag: chunkengine.WriteTag{Client: r.client, Channel: r.channel, Seq: r.seq},
			Chunk: r.chunk, Version: r.rsp.Version, Length: r.rsp.Length, Checksum: r.rsp.Checksum})
	}
	return out
}

const dedupeRecordSize = 8 + 4 + 8 + 8 + 4 + 8 + 4 + 4

func encodeDedupeRecords(recs []dedupeRecord) []byte {
	b := make([]byte, 0, len(recs)*dedupeRecordSize)
	for _, r := range recs {
		b = binary.LittleEndian.AppendUint64(b, r.client)
		b = binary.LittleEndian.AppendUint32(b, r.channel)
		b = binary.LittleEndian.AppendUint64(b, r.seq)
		b = binary.LittleEndian.AppendUint64(b, r.chunk.Inode)
		b = binary.LittleEndian.AppendUint32(b, r.chunk.Index)
		b = binary.LittleEndian.AppendUint64(b, r.rsp.Version)
		b = binary.LittleEndian.AppendUint32(b, r.rsp.Length)
		b = binary.LittleEndian.AppendUint32(b, r.rsp.Checksum)
	}
	return b
}

func decodeDedupeRecords(b []byte) ([]dedupeRecord, error) {
	if len(b)%dedupeRecordSize != 0 {
		return nil, errcode.New(errcode.InvalidArgument, "dedupe sync payload of %d bytes is not a multiple of %d", len(b), dedupeRecordSize)
	}
	out := make([]dedupeRecord, 0, len(b)/dedupeRecordSize)
	for ; len(b) > 0; b = b[dedupeRecordSize:] {
		le := binary.LittleEndian
		out = append(out, dedupeRecord{
			client: le.Uint64(b), channel: le.Uint32(b[8:]), seq: le.Uint64(b[12:]),
			chunk: chunkengine.ChunkID{Inode: le.Uint64(b[20:]), Index: le.Uint32(b[28:])},
			rsp:   wire.UpdateRsp{Version: le.Uint64(b[32:]), Length: le.Uint32(b[40:]), Checksum: le.Uint32(b[44:])},
		})
	}
	return out, nil
}
