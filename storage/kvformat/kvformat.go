// Package kvformat is the shared vocabulary of the KVCache service: how a
// key maps to a chain and a chunk, and how a value is laid out inside its
// chunk. It does no I/O, so the storage side (storage/kvstore) and the
// client (kvcache/) agree on it by construction. docs/kvcache.md explains
// the design.
package kvformat

import (
	"encoding/binary"
	"fmt"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
)

// Limits of keys and values.
const (
	MaxKeyLen = 256
	// FixedHeaderLen is the record header without the key.
	FixedHeaderLen = 36
	// MaxHeaderLen is the largest header (a MaxKeyLen key).
	MaxHeaderLen = FixedHeaderLen + MaxKeyLen
	// MaxValueLen is the largest value: a record must fit one chunk.
	MaxValueLen = chunkengine.MaxChunkSize - MaxHeaderLen
	// MaxNamespaceID bounds namespace ids (24 bits of the chunk's inode).
	MaxNamespaceID = 1<<24 - 1
)

// inodeTag marks KV chunks: meta hands out inode ids from 1 upwards and
// never reaches 0xFE<<56, so KV chunks and file chunks cannot meet.
const (
	inodeTag     = uint64(0xFE) << 56
	descriptorHi = 0xFFFFFFFF
)

// Magic starts every record.
const Magic = uint32('E') | uint32('K')<<8 | uint32('V')<<16 | uint32('1')<<24

// IsKVChunk reports whether id belongs to the KVCache inode space.
func IsKVChunk(id chunkengine.ChunkID) bool { return id.Inode>>56 == 0xFE }

// NamespaceOf returns the namespace id of a KV chunk.
func NamespaceOf(id chunkengine.ChunkID) uint32 { return uint32(id.Inode>>32) & MaxNamespaceID }

// IsDescriptor reports whether id is a namespace descriptor slot.
func IsDescriptor(id chunkengine.ChunkID) bool {
	return IsKVChunk(id) && uint32(id.Inode) == descriptorHi
}

// KeyHash is the stable 64-bit hash of a key: FNV-1a, then the splitmix64
// finaliser so every output bit depends on every input byte (FNV alone
// mixes its last bytes poorly, and prefix-hash keys often differ only
// there).
func KeyHash(key []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, b := range key {
		h ^= uint64(b)
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// Slot is where a key lives: the index of its chain in the namespace's
// chain list and its chunk.
type Slot struct {
	ChainIndex int
	Chunk      chunkengine.ChunkID
}

// SlotOf maps key to its slot in namespace ns over nChains chains. slotBits
// (1..64; 0 means 64) keeps only that many low bits of the hash: a test
// setting that makes distinct keys share slots on purpose.
func SlotOf(ns uint32, key []byte, nChains int, slotBits uint8) Slot {
	h := KeyHash(key)
	if slotBits > 0 && slotBits < 64 {
		h &= 1<<slotBits - 1
	}
	hi := uint32(h >> 32)
	if hi == descriptorHi {
		hi-- // descriptorHi names descriptor slots only
	}
	idx := 0
	if nChains > 0 {
		idx = int(h % uint64(nChains))
	}
	return Slot{ChainIndex: idx, Chunk: chunkengine.ChunkID{
		Inode: inodeTag | uint64(ns&MaxNamespaceID)<<32 | uint64(hi),
		Index: uint32(h),
	}}
}

// DescriptorChunk is the slot of namespace ns's descriptor on the chain at
// position chainIndex of its chain list (every chain holds one).
func DescriptorChunk(ns uint32, chainIndex int) chunkengine.ChunkID {
	return chunkengine.ChunkID{Inode: inodeTag | uint64(ns&MaxNamespaceID)<<32 | descriptorHi, Index: uint32(chainIndex)}
}

// Header is a decoded record header. The value follows it in the chunk at
// offset Len().
type Header struct {
	Key      []byte
	ValueLen uint32
	ValueCRC uint32
	Created  int64 // unix ns
	Expires  int64 // unix ns; 0 = never
}

// Len is the encoded header length, where the value starts.
func (h *Header) Len() int { return FixedHeaderLen + len(h.Key) }

// Expired reports whether the record is past its expiry at now (unix ns).
func (h *Header) Expired(now int64) bool { return h.Expires != 0 && now >= h.Expires }

// CheckKey validates a key's length.
func CheckKey(key []byte) error {
	if len(key) == 0 {
		return errcode.New(errcode.InvalidArgument, "kvcache key is empty")
	}
	if len(key) > MaxKeyLen {
		return errcode.New(errcode.InvalidArgument, "kvcache key is %d bytes, the limit is %d", len(key), MaxKeyLen)
	}
	return nil
}

// NewHeader describes value stored under key: it computes the value's
// CRC32C. expires is unix ns (0 = never).
func NewHeader(key, value []byte, created, expires int64) Header {
	return Header{Key: key, ValueLen: uint32(len(value)), ValueCRC: crc32c.Checksum(value), Created: created, Expires: expires}
}

// Encode appends the header (with its key) to b.
func (h *Header) Encode(b []byte) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, Magic)
	b = binary.LittleEndian.AppendUint16(b, uint16(h.Len()))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h.Key)))
	b = binary.LittleEndian.AppendUint32(b, h.ValueLen)
	b = binary.LittleEndian.AppendUint32(b, h.ValueCRC)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Created))
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Expires))
	crc := crc32c.Update(crc32c.Checksum(b[start:]), h.Key)
	b = binary.LittleEndian.AppendUint32(b, crc)
	return append(b, h.Key...)
}

// DecodeHeader parses the header at the start of b (which may hold more:
// the value, or padding). Anything that is not an intact header — wrong
// magic, inconsistent lengths, a header CRC mismatch, a key cut short —
// is an error, and callers treat the record as absent.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < FixedHeaderLen {
		return Header{}, fmt.Errorf("kv record header: %d bytes, want at least %d", len(b), FixedHeaderLen)
	}
	if m := binary.LittleEndian.Uint32(b); m != Magic {
		return Header{}, fmt.Errorf("kv record header: magic %#08x, want %#08x", m, Magic)
	}
	hdrLen := int(binary.LittleEndian.Uint16(b[4:]))
	keyLen := int(binary.LittleEndian.Uint16(b[6:]))
	if keyLen == 0 || keyLen > MaxKeyLen || hdrLen != FixedHeaderLen+keyLen {
		return Header{}, fmt.Errorf("kv record header: header length %d with key length %d", hdrLen, keyLen)
	}
	if len(b) < hdrLen {
		return Header{}, fmt.Errorf("kv record header: %d bytes, the header needs %d", len(b), hdrLen)
	}
	want := binary.LittleEndian.Uint32(b[32:])
	if got := crc32c.Update(crc32c.Checksum(b[:32]), b[FixedHeaderLen:hdrLen]); got != want {
		return Header{}, fmt.Errorf("kv record header: CRC32C %#08x, stored %#08x", got, want)
	}
	h := Header{
		Key:      b[FixedHeaderLen:hdrLen:hdrLen],
		ValueLen: binary.LittleEndian.Uint32(b[8:]),
		ValueCRC: binary.LittleEndian.Uint32(b[12:]),
		Created:  int64(binary.LittleEndian.Uint64(b[16:])),
		Expires:  int64(binary.LittleEndian.Uint64(b[24:])),
	}
	if uint64(h.ValueLen) > MaxValueLen {
		return Header{}, fmt.Errorf("kv record header: value length %d over the limit %d", h.ValueLen, MaxValueLen)
	}
	return h, nil
}

// VerifyValue checks a value against its header's length and CRC32C.
func (h *Header) VerifyValue(value []byte) error {
	if len(value) != int(h.ValueLen) {
		return errcode.New(errcode.ChecksumMismatch, "kv value for key %q: %d bytes, header says %d", h.Key, len(value), h.ValueLen)
	}
	if got := crc32c.Checksum(value); got != h.ValueCRC {
		return errcode.New(errcode.ChecksumMismatch, "kv value for key %q: CRC32C %#08x, header says %#08x", h.Key, got, h.ValueCRC)
	}
	return nil
}
