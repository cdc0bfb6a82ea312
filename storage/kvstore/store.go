// Package kvstore is the KV side of one storage target: it serves KVCache
// record reads (header check, key check, expiry, value handed out as a
// file region for sendfile), keeps an in-memory index of the target's KV
// chunks (namespace, size, expiry, last access) with per-namespace usage
// and counters, answers admission for puts into namespaces that do not
// evict, and plans reclamation (expiry and LRU eviction). It does no
// networking and no replication: storage/service calls it from its
// opcode handlers and issues the removals it plans through the chain.
// docs/kvcache.md describes the design.
package kvstore

import (
	"bytes"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvformat"
)

// Options tune a Store. Zero fields take defaults.
type Options struct {
	// Now is the clock that decides expiry and access times (tests inject
	// one); default time.Now.
	Now func() time.Time
	// InlineMax is the largest record (header, key and value) a get reads
	// whole into memory with one pread, to be sent with the response
	// header in one writev; larger values go out from the file by
	// sendfile. 0 means DefaultInlineMax; negative means always sendfile.
	// At most 8 MiB.
	InlineMax int
	// InlineBudget bounds the bytes of records held in memory by gets
	// whose response is not sent yet; past it gets use sendfile. 0 means
	// DefaultInlineBudget.
	InlineBudget int64
	Logger       *slog.Logger
}

// DefaultInlineBudget is Options.InlineBudget's default.
const DefaultInlineBudget = 64 << 20

// DefaultInlineMax is Options.InlineMax's default: values up to the
// default value class of 4 MiB (plus the largest header). On loopback
// (and this kernel) pread into memory plus one writev moves 1.3-2x the
// bytes per second of sendfile, which splices page-cache pages into the
// socket a page at a time; for small values it also saves the sendfile
// and an fstat. Measured in docs/kvcache.md ("Measured").
const DefaultInlineMax = 4<<20 + kvformat.MaxHeaderLen

// entry is what the index knows of one KV chunk. version, size and sum
// identify the committed content the entry was built from: Exists answers
// from the entry only while the engine's committed state still matches
// them, so an index that missed a change cannot vouch for a value that is
// gone or belongs to another key (docs/kvcache.md, "Exists from the index").
type entry struct {
	ns      uint32
	version uint64 // committed version the entry describes
	size    int64  // record bytes (the chunk's committed length)
	sum     uint32 // CRC32C of that committed content (the engine's)
	sumOK   bool   // sum is known (false: Exists reads the header from disk)
	key     []byte // the record's key, from its header (exact, not a hash)
	expires int64  // unix ns; 0 = never
	access  int64  // unix ns of the last read served here (or the put)
	bad     bool   // the header does not decode: reclaim it first
}

// nsState is a namespace's usage and counters on this target.
type nsState struct {
	desc   *kvformat.Descriptor // from the descriptor record; nil = unknown
	bytes  int64                // record bytes of its values here
	values int64
	st     kvformat.Stats // counters (BytesStored/Values filled on read)
}

// Store is the KV side of one target; safe for concurrent use.
type Store struct {
	eng          *chunkengine.Engine
	now          func() time.Time
	log          *slog.Logger
	inlineMax    int
	inlineBudget int64
	inlineHeld   atomic.Int64 // bytes of inline buffers not released yet

	mu      sync.Mutex
	entries map[chunkengine.ChunkID]*entry
	ns      map[uint32]*nsState

	// existsFromDisk counts Exists answers that could not come from the
	// index (no matching entry) and read the record header instead.
	existsFromDisk atomic.Int64
}

// Open builds the index of eng's KV chunks from its metadata and the
// record headers (a small read of each chunk's first bytes).
func Open(eng *chunkengine.Engine, opts Options) *Store {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.InlineMax == 0 {
		opts.InlineMax = DefaultInlineMax
	}
	if opts.InlineBudget <= 0 {
		opts.InlineBudget = DefaultInlineBudget
	}
	s := &Store{eng: eng, now: opts.Now, log: opts.Logger.With("component", "kvstore"),
		inlineMax: min(opts.InlineMax, 1<<inlineMaxShift-1), inlineBudget: opts.InlineBudget,
		entries: map[chunkengine.ChunkID]*entry{}, ns: map[uint32]*nsState{}}
	n := 0
	for _, m := range eng.Dump() {
		if kvformat.IsKVChunk(m.ID) && m.Version != 0 {
			s.observe(m.ID, true)
			n++
		}
	}
	if n > 0 {
		s.log.Info("kv index rebuilt", "dir", eng.Dir(), "chunks", n)
	}
	return s
}

func (s *Store) nsLocked(ns uint32) *nsState {
	st := s.ns[ns]
	if st == nil {
		st = &nsState{}
		s.ns[ns] = st
	}
	return st
}

func (s *Store) dropEntryLocked(id chunkengine.ChunkID) {
	if e := s.entries[id]; e != nil {
		st := s.nsLocked(e.ns)
		st.bytes -= e.size
		st.values--
		delete(s.entries, id)
	}
}

// Observe brings the index up to date with chunk id's committed state on
// the engine: call it after every commit or removal of a KV chunk (the
// service does, under its chunk lock). A chunk whose version is unchanged
// costs one map lookup; a new version costs one header read.
func (s *Store) Observe(id chunkengine.ChunkID) { s.observe(id, false) }

// observe indexes id; rebuilding (at start) takes a value's put time as
// its last access, a live observation (a commit) takes now.
func (s *Store) observe(id chunkengine.ChunkID, rebuilding bool) {
	if !kvformat.IsKVChunk(id) {
		return
	}
	ns := kvformat.NamespaceOf(id)
	if kvformat.IsDescriptor(id) {
		s.observeDescriptor(id, ns)
		return
	}
	m, ok := s.eng.Stat(id)
	s.mu.Lock()
	old := s.entries[id]
	if ok && m.Version != 0 && old != nil && old.version == m.Version && old.size == int64(m.Length) && old.sumOK && old.sum == m.Checksum {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	var e *entry
	if ok && m.Version != 0 {
		e = &entry{ns: ns, version: m.Version, size: int64(m.Length)}
		var hb [kvformat.MaxHeaderLen]byte
		n, ver, length, err := s.eng.ReadPrefix(id, hb[:])
		switch {
		case errcode.Is(err, errcode.NotFound):
			e = nil // removed meanwhile
		case err != nil:
			e.bad = true
		default:
			e.version, e.size = ver, int64(length)
			// The content checksum of the version the header came from:
			// Stat's, when no commit slipped in between.
			if ver == m.Version && length == m.Length {
				e.sum, e.sumOK = m.Checksum, true
			} else if m2, ok := s.eng.Stat(id); ok && m2.Version == ver && m2.Length == length {
				e.sum, e.sumOK = m2.Checksum, true
			}
			h, herr := kvformat.DecodeHeader(hb[:n])
			if herr != nil || int64(h.Len())+int64(h.ValueLen) != int64(length) {
				e.bad = true
			} else {
				e.key = bytes.Clone(h.Key)
				e.expires = h.Expires
				e.access = s.now().UnixNano()
				if rebuilding {
					e.access = h.Created
				}
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Compare with what is indexed now: a concurrent Observe of a newer
	// version must not be overwritten by this older one.
	if cur := s.entries[id]; cur != nil && e != nil && cur.version > e.version {
		return
	}
	s.dropEntryLocked(id)
	if e != nil {
		s.entries[id] = e
		st := s.nsLocked(ns)
		st.bytes += e.size
		st.values++
	}
}

func (s *Store) observeDescriptor(id chunkengine.ChunkID, ns uint32) {
	var d *kvformat.Descriptor
	if b, _, err := s.eng.Read(id, 0, kvformat.MaxHeaderLen+64<<10, true); err == nil {
		if h, err := kvformat.DecodeHeader(b); err == nil && bytes.Equal(h.Key, kvformat.DescriptorKey) {
			val := b[h.Len():]
			if h.VerifyValue(val) == nil {
				if dd, err := kvformat.DecodeDescriptor(val); err == nil && dd.ID == ns {
					d = &dd
				}
			}
		}
		if d == nil {
			s.log.Warn("kv namespace descriptor does not decode; namespace settings unknown here", "chunk", id)
		}
	}
	s.mu.Lock()
	s.nsLocked(ns).desc = d
	s.mu.Unlock()
}

// Descriptor returns namespace ns's settings as its descriptor record on
// this target says (false when there is none).
func (s *Store) Descriptor(ns uint32) (kvformat.Descriptor, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.ns[ns]; st != nil && st.desc != nil {
		return *st.desc, true
	}
	return kvformat.Descriptor{}, false
}

// Usage returns the record bytes and values of namespace ns on this target.
func (s *Store) Usage(ns uint32) (bytes, values int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.ns[ns]; st != nil {
		return st.bytes, st.values
	}
	return 0, 0
}

// Stats returns namespace ns's counters on this target, with its stored
// bytes and values.
func (s *Store) Stats(ns uint32) kvformat.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.ns[ns]
	if st == nil {
		return kvformat.Stats{}
	}
	out := st.st
	out.BytesStored, out.Values = uint64(max(st.bytes, 0)), uint64(max(st.values, 0))
	return out
}

func (s *Store) count(ns uint32, f func(st *kvformat.Stats)) {
	s.mu.Lock()
	f(&s.nsLocked(ns).st)
	s.mu.Unlock()
}

// touch records a read of id at now.
func (s *Store) touch(id chunkengine.ChunkID, now int64) {
	s.mu.Lock()
	if e := s.entries[id]; e != nil && now > e.access {
		e.access = now
	}
	s.mu.Unlock()
}

// Admit decides whether the chain head takes a put of record (the whole
// payload: header, key, value) into chunk id. It checks that the payload
// is a well-formed record for a KV slot, and for namespaces that do not
// evict, that the chain's share of the capacity has room (NoSpace names
// the namespace, its capacity and usage).
func (s *Store) Admit(id chunkengine.ChunkID, record []byte) error {
	h, err := kvformat.DecodeHeader(record)
	if err != nil {
		return errcode.New(errcode.InvalidArgument, "kv put into chunk %s: payload is not a KV record: %v", id, err)
	}
	if int64(h.Len())+int64(h.ValueLen) != int64(len(record)) {
		return errcode.New(errcode.InvalidArgument, "kv put into chunk %s: header says %d value bytes, payload has %d", id, h.ValueLen, len(record)-h.Len())
	}
	if kvformat.IsDescriptor(id) {
		if !bytes.Equal(h.Key, kvformat.DescriptorKey) {
			return errcode.New(errcode.InvalidArgument, "kv put into descriptor slot %s with key %q", id, h.Key)
		}
		return nil
	}
	ns := kvformat.NamespaceOf(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.ns[ns]
	if st == nil || st.desc == nil {
		return nil // settings unknown here: nothing to enforce
	}
	d := st.desc
	if d.MaxValueBytes > 0 && int64(h.ValueLen) > d.MaxValueBytes {
		return errcode.New(errcode.InvalidArgument, "kv namespace %q: value of %d bytes exceeds its value size class of %d bytes", d.Name, h.ValueLen, d.MaxValueBytes)
	}
	if d.Evict || d.CapacityBytes <= 0 {
		return nil
	}
	used := st.bytes
	if e := s.entries[id]; e != nil {
		used -= e.size // the put replaces this record
	}
	if share := d.ChainShare(); used+int64(len(record)) > share {
		return errcode.New(errcode.NoSpace, "kv namespace %q is full: capacity %d bytes (%d per chain over %d chains), %d bytes used on this chain, put of %d bytes refused (eviction is disabled)",
			d.Name, d.CapacityBytes, share, d.Chains, st.bytes, len(record))
	}
	return nil
}
