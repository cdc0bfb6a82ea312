package kvstore

import (
	"bytes"
	"io"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvformat"
)

// Value is a hit: the record header as stored (kvformat encoding, key
// included) and the value, either in memory (Inline, a small record read
// whole) or as a byte range of the chunk's data file, to be sent with
// sendfile. Close releases the buffer or the file once it has been sent.
type Value struct {
	Header   []byte
	Inline   []byte              // the value when read into memory; nil: use Region
	Region   *chunkengine.Region // the whole committed record (nil when Inline)
	ValueOff int64               // value's offset in Region.File
	ValueLen int64

	buf   []byte // Inline's buffer, back to the pool on Close
	held  int64  // inline budget bytes held until Close
	store *Store
}

// Close releases the value's buffer or file.
func (v *Value) Close() {
	if v == nil {
		return
	}
	if v.buf != nil {
		putInline(v.buf)
		v.store.releaseInline(v.held)
		v.buf, v.Inline, v.Header = nil, nil, nil
	}
	if v.Region != nil {
		v.Region.Close()
	}
}

// miss is the error of a get or exists that found no live record of key.
func miss(id chunkengine.ChunkID, key []byte, why string) error {
	return errcode.New(errcode.NotFound, "kv key %q (chunk %s): %s", key, id, why)
}

// openRecord opens chunk id's committed record and checks that it is an
// intact, live record of key. Header and value come from one open file
// (one committed version), so a put committing meanwhile cannot pair one
// version's header with another's value. corrupt reports a miss caused by
// a record failing its own checks.
func (s *Store) openRecord(id chunkengine.ChunkID, key []byte, now int64) (reg *chunkengine.Region, hdr []byte, h kvformat.Header, corrupt bool, err error) {
	reg, err = s.eng.OpenRegion(id, 0, chunkengine.MaxChunkSize, true)
	if err != nil {
		if errcode.Is(err, errcode.NotFound) {
			return nil, nil, h, false, miss(id, key, "no value stored")
		}
		return nil, nil, h, false, err // ChecksumMismatch: read another replica
	}
	fail := func(corrupt bool, why string) (*chunkengine.Region, []byte, kvformat.Header, bool, error) {
		reg.Close()
		return nil, nil, kvformat.Header{}, corrupt, miss(id, key, why)
	}
	if reg.File == nil {
		return fail(true, "empty chunk in a KV slot")
	}
	hb := make([]byte, min(int64(kvformat.MaxHeaderLen), reg.Length))
	if _, err := reg.File.ReadAt(hb, reg.Offset); err != nil && err != io.EOF {
		reg.Close()
		return nil, nil, h, false, errcode.New(errcode.Internal, "kv chunk %s: read header: %v", id, err)
	}
	h, corrupt, err = checkRecord(id, key, hb, reg.Length, now)
	if err != nil {
		reg.Close()
		return nil, nil, kvformat.Header{}, corrupt, err
	}
	return reg, hb[:h.Len()], h, false, nil
}

// checkRecord checks that b, the start of a committed record of length
// bytes, is an intact, live record of key.
func checkRecord(id chunkengine.ChunkID, key, b []byte, length, now int64) (h kvformat.Header, corrupt bool, err error) {
	h, err = kvformat.DecodeHeader(b)
	switch {
	case err != nil:
		return h, true, miss(id, key, err.Error())
	case int64(h.Len())+int64(h.ValueLen) != length:
		return h, true, miss(id, key, "record length does not match its header")
	case !bytes.Equal(h.Key, key):
		return h, false, miss(id, key, "slot holds another key")
	case h.Expired(now):
		return h, false, miss(id, key, "value expired")
	}
	return h, false, nil
}

// readInline reads chunk id's committed record, length bytes by the
// engine's metadata, whole into a pooled buffer: one pread (the engine
// checks the content checksum in the same pass unless a recent check
// vouches for it). ok is false when the inline budget has no room or the
// record grew since its length was looked up: use the region path.
func (s *Store) readInline(id chunkengine.ChunkID, key []byte, length int, now int64) (v *Value, h kvformat.Header, corrupt, ok bool, err error) {
	size := length + 1 // one byte more: a read that fills it tells of growth
	if !s.takeInline(int64(size)) {
		return nil, h, false, false, nil
	}
	buf := getInline(size)
	release := func() {
		putInline(buf)
		s.releaseInline(int64(size))
	}
	n, _, err := s.eng.ReadAt(id, buf, 0, true)
	if err != nil {
		release()
		if errcode.Is(err, errcode.NotFound) {
			return nil, h, false, true, miss(id, key, "no value stored")
		}
		return nil, h, false, true, err // ChecksumMismatch: read another replica
	}
	if n == len(buf) {
		release()
		return nil, h, false, false, nil
	}
	if n == 0 {
		release()
		return nil, h, true, true, miss(id, key, "empty chunk in a KV slot")
	}
	h, corrupt, err = checkRecord(id, key, buf[:n], int64(n), now)
	if err != nil {
		release()
		return nil, h, corrupt, true, err
	}
	return &Value{Header: buf[:h.Len():h.Len()], Inline: buf[h.Len():n:n], ValueLen: int64(h.ValueLen), buf: buf, held: int64(size), store: s}, h, false, true, nil
}

// Get serves a read of key from chunk id into a buffer of maxLen bytes: a
// miss (empty slot, another key, expired, corrupt header) is NotFound; a
// value longer than maxLen is OutOfRange naming both sizes. A hit updates
// the value's access time and the counters.
func (s *Store) Get(id chunkengine.ChunkID, key []byte, maxLen uint32) (*Value, error) {
	ns := kvformat.NamespaceOf(id)
	now := s.now().UnixNano()
	var v *Value
	var h kvformat.Header
	var corrupt, done bool
	var err error
	if s.inlineMax > 0 {
		if m, ok := s.eng.Stat(id); ok && int(m.Length) <= s.inlineMax {
			v, h, corrupt, done, err = s.readInline(id, key, int(m.Length), now)
		}
	}
	if !done {
		var reg *chunkengine.Region
		var hdr []byte
		reg, hdr, h, corrupt, err = s.openRecord(id, key, now)
		if err == nil {
			v = &Value{Header: hdr, Region: reg, ValueOff: reg.Offset + int64(h.Len()), ValueLen: int64(h.ValueLen)}
		}
	}
	if err != nil {
		if errcode.Is(err, errcode.NotFound) {
			s.count(ns, func(st *kvformat.Stats) {
				st.Misses++
				if corrupt {
					st.CorruptMisses++
				}
			})
		}
		return nil, err
	}
	if h.ValueLen > maxLen {
		v.Close()
		return nil, errcode.New(errcode.OutOfRange, "kv key %q: value is %d bytes, the buffer holds %d", key, h.ValueLen, maxLen)
	}
	s.touch(id, now)
	s.count(ns, func(st *kvformat.Stats) {
		st.Hits++
		st.BytesRead += uint64(h.ValueLen)
	})
	return v, nil
}

// Exists reports whether chunk id holds a live record of key (nil) or not
// (NotFound); a chunk the engine marked corrupt is ChecksumMismatch (ask
// another replica). It is not an access.
//
// It answers from the index: one engine metadata lookup and one map
// lookup, no disk read. The entry is used only when the engine's committed
// version, length and content checksum are the ones it was built from;
// otherwise (a change the index has not seen yet, a descriptor slot) the
// record header is read from disk as before. Either way the answer is
// exact: the entry holds the key itself, not a hash of it.
func (s *Store) Exists(id chunkengine.ChunkID, key []byte) error {
	m, ok := s.eng.Stat(id)
	switch {
	case !ok || m.Version == 0:
		return miss(id, key, "no value stored")
	case m.Corrupt:
		return errcode.New(errcode.ChecksumMismatch, "kv chunk %s version %d is marked corrupt; ask another replica", id, m.Version)
	}
	if !kvformat.IsDescriptor(id) {
		s.mu.Lock()
		e := s.entries[id]
		if e != nil && e.sumOK && e.version == m.Version && e.size == int64(m.Length) && e.sum == m.Checksum {
			bad, same, expires := e.bad, bytes.Equal(e.key, key), e.expires
			s.mu.Unlock()
			switch {
			case bad:
				return miss(id, key, "record header does not decode")
			case !same:
				return miss(id, key, "slot holds another key")
			case expires != 0 && s.now().UnixNano() >= expires:
				return miss(id, key, "value expired")
			}
			return nil
		}
		s.mu.Unlock()
	}
	s.existsFromDisk.Add(1)
	return s.existsFromHeader(id, key)
}

// ExistsFromDisk returns how many Exists calls read the record header
// because the index had no entry matching the engine's committed state.
func (s *Store) ExistsFromDisk() int64 { return s.existsFromDisk.Load() }

// existsFromHeader answers Exists by reading the record header.
func (s *Store) existsFromHeader(id chunkengine.ChunkID, key []byte) error {
	var hb [kvformat.MaxHeaderLen]byte
	n, _, length, err := s.eng.ReadPrefix(id, hb[:])
	if err != nil {
		if errcode.Is(err, errcode.NotFound) {
			return miss(id, key, "no value stored")
		}
		return err
	}
	h, err := kvformat.DecodeHeader(hb[:n])
	switch {
	case err != nil:
		return miss(id, key, err.Error())
	case int64(h.Len())+int64(h.ValueLen) != int64(length):
		return miss(id, key, "record length does not match its header")
	case !bytes.Equal(h.Key, key):
		return miss(id, key, "slot holds another key")
	case h.Expired(s.now().UnixNano()):
		return miss(id, key, "value expired")
	}
	return nil
}
