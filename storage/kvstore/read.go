package kvstore

import (
	"bytes"
	"io"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvformat"
)

// Value is a hit: the record header as stored (kvformat encoding, key
// included) and the value as a byte range of the chunk's data file, to be
// sent with sendfile. Close releases the file once it has been sent.
type Value struct {
	Header   []byte
	Region   *chunkengine.Region // the whole committed record
	ValueOff int64               // value's offset in Region.File
	ValueLen int64
}

// Close releases the value's file.
func (v *Value) Close() {
	if v != nil && v.Region != nil {
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
	h, err = kvformat.DecodeHeader(hb)
	if err != nil {
		return fail(true, err.Error())
	}
	if int64(h.Len())+int64(h.ValueLen) != reg.Length {
		return fail(true, "record length does not match its header")
	}
	if !bytes.Equal(h.Key, key) {
		return fail(false, "slot holds another key")
	}
	if h.Expired(now) {
		return fail(false, "value expired")
	}
	return reg, hb[:h.Len()], h, false, nil
}

// Get serves a read of key from chunk id into a buffer of maxLen bytes: a
// miss (empty slot, another key, expired, corrupt header) is NotFound; a
// value longer than maxLen is OutOfRange naming both sizes. A hit updates
// the value's access time and the counters.
func (s *Store) Get(id chunkengine.ChunkID, key []byte, maxLen uint32) (*Value, error) {
	ns := kvformat.NamespaceOf(id)
	now := s.now().UnixNano()
	reg, hdr, h, corrupt, err := s.openRecord(id, key, now)
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
		reg.Close()
		return nil, errcode.New(errcode.OutOfRange, "kv key %q: value is %d bytes, the buffer holds %d", key, h.ValueLen, maxLen)
	}
	s.touch(id, now)
	s.count(ns, func(st *kvformat.Stats) {
		st.Hits++
		st.BytesRead += uint64(h.ValueLen)
	})
	return &Value{Header: hdr, Region: reg, ValueOff: reg.Offset + int64(h.Len()), ValueLen: int64(h.ValueLen)}, nil
}

// Exists reports whether chunk id holds a live record of key: its header
// (as stored) when it does, NotFound when not. It reads only the header
// and does not count as an access.
func (s *Store) Exists(id chunkengine.ChunkID, key []byte) ([]byte, error) {
	var hb [kvformat.MaxHeaderLen]byte
	n, _, length, err := s.eng.ReadPrefix(id, hb[:])
	if err != nil {
		if errcode.Is(err, errcode.NotFound) {
			return nil, miss(id, key, "no value stored")
		}
		return nil, err
	}
	h, err := kvformat.DecodeHeader(hb[:n])
	switch {
	case err != nil:
		return nil, miss(id, key, err.Error())
	case int64(h.Len())+int64(h.ValueLen) != int64(length):
		return nil, miss(id, key, "record length does not match its header")
	case !bytes.Equal(h.Key, key):
		return nil, miss(id, key, "slot holds another key")
	case h.Expired(s.now().UnixNano()):
		return nil, miss(id, key, "value expired")
	}
	return append([]byte(nil), hb[:h.Len()]...), nil
}
