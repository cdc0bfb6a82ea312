package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/transport"
)

// KVCache opcodes (docs/kvcache.md). A KV put is an OpWrite of kind
// Replace with the record (header, key, value) as payload; a KV remove is
// an OpWrite of kind Remove. The opcodes below read and manage records.
const (
	// OpKVGet (client -> any serving replica): ext KVGetReq; response ext
	// is the record header as stored (kvformat encoding, key included),
	// payload the value, sent from the chunk's data file with sendfile.
	OpKVGet transport.Op = 9
	// OpKVGetBatch: a batch frame of OpKVGet entries, one status each.
	OpKVGetBatch transport.Op = 10
	// OpKVExists: a batch frame of KVGetReq entries (MaxLen ignored); each
	// entry answers OK with the record header as ext, or NotFound.
	OpKVExists transport.Op = 11
	// OpKVStats (client -> any target): ext KVNamespaceReq; response ext
	// KVStatsRsp, the target's counters for the namespace.
	OpKVStats transport.Op = 12
	// OpKVDrop (client -> every target of the namespace's chains): ext
	// KVNamespaceReq; removes every local chunk of the namespace on that
	// target (descriptors included). Response ext: u64 chunks removed.
	OpKVDrop transport.Op = 13
)

// MaxKVKeyLen bounds the key in a KV request (kvformat.MaxKeyLen; wire
// does not import kvformat, which sits above the engine too).
const MaxKVKeyLen = 256

// KVGetReq is the extension of OpKVGet and of each OpKVGetBatch and
// OpKVExists entry: fixed fields, then the key.
type KVGetReq struct {
	Target   uint64
	Chain    uint32
	ChainVer uint64
	Chunk    chunkengine.ChunkID
	// MaxLen is the caller's buffer size: a longer value fails with
	// OutOfRange and nothing is sent.
	MaxLen uint32
	Key    []byte
}

// KVGetReqFixedSize is the encoded size of KVGetReq without the key:
// target 8, chain 4, chain version 8, chunk 12, max length 4, key length 2.
const KVGetReqFixedSize = 8 + 4 + 8 + chunkengine.ChunkIDSize + 4 + 2

// Encode appends the extension to b.
func (r *KVGetReq) Encode(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.Target)
	b = binary.LittleEndian.AppendUint32(b, r.Chain)
	b = binary.LittleEndian.AppendUint64(b, r.ChainVer)
	b = r.Chunk.AppendBytes(b)
	b = binary.LittleEndian.AppendUint32(b, r.MaxLen)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(r.Key)))
	return append(b, r.Key...)
}

// DecodeKVGetReq parses a KV get extension; Key aliases b.
func DecodeKVGetReq(b []byte) (KVGetReq, error) {
	var r KVGetReq
	if len(b) < KVGetReqFixedSize {
		return r, errcode.New(errcode.InvalidArgument, "kv get request header is %d bytes, want at least %d", len(b), KVGetReqFixedSize)
	}
	d := decoder{b: b}
	r.Target = d.u64()
	r.Chain = d.u32()
	r.ChainVer = d.u64()
	r.Chunk = d.chunk()
	r.MaxLen = d.u32()
	kl := int(binary.LittleEndian.Uint16(d.b))
	d.b = d.b[2:]
	if kl == 0 || kl > MaxKVKeyLen {
		return r, errcode.New(errcode.InvalidArgument, "kv get of chunk %s: key length %d (want 1 to %d)", r.Chunk, kl, MaxKVKeyLen)
	}
	if len(d.b) != kl {
		return r, errcode.New(errcode.InvalidArgument, "kv get of chunk %s: key length %d but %d key bytes follow", r.Chunk, kl, len(d.b))
	}
	r.Key = d.b[:kl:kl]
	return r, nil
}

// KVNamespaceReq is the extension of OpKVStats and OpKVDrop.
type KVNamespaceReq struct {
	Target    uint64
	Namespace uint32
}

// KVNamespaceReqSize is the encoded size of KVNamespaceReq.
const KVNamespaceReqSize = 8 + 4

// Encode appends the extension to b.
func (r *KVNamespaceReq) Encode(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.Target)
	return binary.LittleEndian.AppendUint32(b, r.Namespace)
}

// DecodeKVNamespaceReq parses a namespace request extension.
func DecodeKVNamespaceReq(b []byte) (KVNamespaceReq, error) {
	if len(b) != KVNamespaceReqSize {
		return KVNamespaceReq{}, errcode.New(errcode.InvalidArgument, "kv namespace request header is %d bytes, want %d", len(b), KVNamespaceReqSize)
	}
	d := decoder{b: b}
	return KVNamespaceReq{Target: d.u64(), Namespace: d.u32()}, nil
}

// KVStatsRsp is the extension answering OpKVStats: the target's counters
// for one namespace, in this order.
type KVStatsRsp struct {
	Hits, Misses, BytesRead, BytesStored, Values, Evictions, Expirations, CorruptMisses uint64
}

// KVStatsRspSize is the encoded size of KVStatsRsp.
const KVStatsRspSize = 8 * 8

// Encode appends the extension to b.
func (r *KVStatsRsp) Encode(b []byte) []byte {
	for _, v := range []uint64{r.Hits, r.Misses, r.BytesRead, r.BytesStored, r.Values, r.Evictions, r.Expirations, r.CorruptMisses} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// DecodeKVStatsRsp parses an OpKVStats response extension.
func DecodeKVStatsRsp(b []byte) (KVStatsRsp, error) {
	if len(b) != KVStatsRspSize {
		return KVStatsRsp{}, fmt.Errorf("kv stats response header is %d bytes, want %d", len(b), KVStatsRspSize)
	}
	d := decoder{b: b}
	return KVStatsRsp{Hits: d.u64(), Misses: d.u64(), BytesRead: d.u64(), BytesStored: d.u64(),
		Values: d.u64(), Evictions: d.u64(), Expirations: d.u64(), CorruptMisses: d.u64()}, nil
}

// EncodeKVDropRsp is the extension answering OpKVDrop: chunks removed.
func EncodeKVDropRsp(removed uint64) []byte { return binary.LittleEndian.AppendUint64(nil, removed) }

// DecodeKVDropRsp parses an OpKVDrop response extension.
func DecodeKVDropRsp(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("kv drop response header is %d bytes, want 8", len(b))
	}
	return binary.LittleEndian.Uint64(b), nil
}
