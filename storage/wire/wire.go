// Package wire defines the storage service's opcodes on the data transport
// and the fixed little-endian layouts of their header extensions. Chunk
// bytes travel as the frame payload (requests) or as file regions sent
// with sendfile (read responses); docs/storage.md lists every message.
package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/transport"
)

// Opcodes of the storage service on the data transport.
const (
	OpWrite       transport.Op = 1 // client -> chain head: a chunk update
	OpForward     transport.Op = 2 // target -> successor: the update at an explicit version
	OpRead        transport.Op = 3 // client -> any serving replica
	OpReadBatch   transport.Op = 4 // batch frame of OpRead entries
	OpQueryLast   transport.Op = 5 // client -> serving tail: last chunk of an inode
	OpRemoveInode transport.Op = 6 // client -> head: remove every chunk of an inode (replicated)
	OpSync        transport.Op = 7 // predecessor -> syncing successor / repairer -> corrupt replica
	// OpSyncDedupe (predecessor -> syncing successor, before SyncDone)
	// hands over the retry records of the chunks synced, so a write still
	// being retried by its client is not applied a second time once the
	// successor becomes head. Ext: InodeReq (target, chain, chain version;
	// inode 0); payload: 48-byte little-endian records (client, channel,
	// seq, chunk, version, length, checksum).
	OpSyncDedupe transport.Op = 8
)

// Update kinds as sent on the wire (same values as chunkengine.UpdateKind).
const (
	KindWrite    = uint8(chunkengine.UpdateWrite)
	KindTruncate = uint8(chunkengine.UpdateTruncate)
	KindRemove   = uint8(chunkengine.UpdateRemove)
	KindReplace  = uint8(chunkengine.UpdateReplace)
)

// Update flags.
const (
	// FlagCheckCRC: DataCRC is the CRC32C of the payload; the receiver
	// verifies it before storing anything.
	FlagCheckCRC uint8 = 1 << iota
	// FlagRepair (OpSync): apply only if the destination's copy is marked
	// corrupt; a healthy copy is left alone.
	FlagRepair
	// FlagFull (OpForward, OpSync): the update carries the chunk's whole
	// new state (a replace, or a remove that applies whatever the local
	// version), sent to a syncing successor or one that missed updates.
	FlagFull
)

// MaxData is the largest payload of one update (the largest chunk).
const MaxData = chunkengine.MaxChunkSize

// UpdateReq is the extension of OpWrite, OpForward and OpSync.
type UpdateReq struct {
	Target    uint64 // target the request is for (a service owns several)
	Chain     uint32
	ChainVer  uint64 // sender's view of the chain version
	Chunk     chunkengine.ChunkID
	Kind      uint8
	Flags     uint8
	Offset    uint32 // write
	Length    uint32 // truncate: new length
	ChunkSize uint32 // required when the update creates the chunk
	Version   uint64 // 0 from clients; the version to produce on forwards
	// Dedupe key: a client retries a write with the same (ClientID,
	// Channel, Seq) and it is applied once. ClientID 0 turns dedupe off.
	ClientID uint64
	Channel  uint32
	Seq      uint64
	DataCRC  uint32
	// From is the sending target of a Forward or Sync (0 from clients):
	// the receiver accepts chain traffic only from its predecessor (or,
	// for a repair, a serving replica of the same chain).
	From uint64
}

// UpdateReqSize is the encoded size of UpdateReq.
const UpdateReqSize = 8 + 4 + 8 + 12 + 1 + 1 + 2 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 4 + 8

// Encode appends the extension to b.
func (r *UpdateReq) Encode(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.Target)
	b = binary.LittleEndian.AppendUint32(b, r.Chain)
	b = binary.LittleEndian.AppendUint64(b, r.ChainVer)
	b = r.Chunk.AppendBytes(b)
	b = append(b, r.Kind, r.Flags, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, r.Offset)
	b = binary.LittleEndian.AppendUint32(b, r.Length)
	b = binary.LittleEndian.AppendUint32(b, r.ChunkSize)
	b = binary.LittleEndian.AppendUint64(b, r.Version)
	b = binary.LittleEndian.AppendUint64(b, r.ClientID)
	b = binary.LittleEndian.AppendUint32(b, r.Channel)
	b = binary.LittleEndian.AppendUint64(b, r.Seq)
	b = binary.LittleEndian.AppendUint32(b, r.DataCRC)
	b = binary.LittleEndian.AppendUint64(b, r.From)
	return b
}

// DecodeUpdateReq parses an update extension.
func DecodeUpdateReq(b []byte) (UpdateReq, error) {
	var r UpdateReq
	if len(b) != UpdateReqSize {
		return r, errcode.New(errcode.InvalidArgument, "update request header is %d bytes, want %d", len(b), UpdateReqSize)
	}
	d := decoder{b: b}
	r.Target = d.u64()
	r.Chain = d.u32()
	r.ChainVer = d.u64()
	r.Chunk = d.chunk()
	r.Kind, r.Flags = d.b[0], d.b[1]
	d.b = d.b[4:]
	r.Offset = d.u32()
	r.Length = d.u32()
	r.ChunkSize = d.u32()
	r.Version = d.u64()
	r.ClientID = d.u64()
	r.Channel = d.u32()
	r.Seq = d.u64()
	r.DataCRC = d.u32()
	r.From = d.u64()
	if r.Kind < KindWrite || r.Kind > KindReplace {
		return r, errcode.New(errcode.InvalidArgument, "update of chunk %s: unknown kind %d", r.Chunk, r.Kind)
	}
	if r.Flags&^(FlagCheckCRC|FlagRepair|FlagFull) != 0 {
		return r, errcode.New(errcode.InvalidArgument, "update of chunk %s: unknown flag bits %#x", r.Chunk, r.Flags)
	}
	return r, nil
}

// UpdateRsp is the extension of a successful update: the chunk's state
// after the update committed.
type UpdateRsp struct {
	Version  uint64
	Length   uint32
	Checksum uint32
}

// UpdateRspSize is the encoded size of UpdateRsp.
const UpdateRspSize = 16

// Encode appends the extension to b.
func (r UpdateRsp) Encode(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.Version)
	b = binary.LittleEndian.AppendUint32(b, r.Length)
	return binary.LittleEndian.AppendUint32(b, r.Checksum)
}

// DecodeUpdateRsp parses an update response extension.
func DecodeUpdateRsp(b []byte) (UpdateRsp, error) {
	if len(b) != UpdateRspSize {
		return UpdateRsp{}, fmt.Errorf("update response header is %d bytes, want %d", len(b), UpdateRspSize)
	}
	d := decoder{b: b}
	return UpdateRsp{Version: d.u64(), Length: d.u32(), Checksum: d.u32()}, nil
}

// ReadReq is the extension of OpRead (and of each OpReadBatch entry).
type ReadReq struct {
	Target   uint64
	Chain    uint32
	ChainVer uint64
	Chunk    chunkengine.ChunkID
	Offset   uint32
	Length   uint32
	Relaxed  bool // return the committed version even if one is pending
}

// ReadReqSize is the encoded size of ReadReq.
const ReadReqSize = 8 + 4 + 8 + 12 + 4 + 4 + 1

// Encode appends the extension to b.
func (r *ReadReq) Encode(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.Target)
	b = binary.LittleEndian.AppendUint32(b, r.Chain)
	b = binary.LittleEndian.AppendUint64(b, r.ChainVer)
	b = r.Chunk.AppendBytes(b)
	b = binary.LittleEndian.AppendUint32(b, r.Offset)
	b = binary.LittleEndian.AppendUint32(b, r.Length)
	if r.Relaxed {
		return append(b, 1)
	}
	return append(b, 0)
}

// DecodeReadReq parses a read extension.
func DecodeReadReq(b []byte) (ReadReq, error) {
	var r ReadReq
	if len(b) != ReadReqSize {
		return r, errcode.New(errcode.InvalidArgument, "read request header is %d bytes, want %d", len(b), ReadReqSize)
	}
	d := decoder{b: b}
	r.Target = d.u64()
	r.Chain = d.u32()
	r.ChainVer = d.u64()
	r.Chunk = d.chunk()
	r.Offset = d.u32()
	r.Length = d.u32()
	switch d.b[0] {
	case 0:
	case 1:
		r.Relaxed = true
	default:
		return r, errcode.New(errcode.InvalidArgument, "read of chunk %s: bad relaxed flag %d", r.Chunk, d.b[0])
	}
	if r.Length > chunkengine.MaxChunkSize {
		return r, errcode.New(errcode.OutOfRange, "read of chunk %s: length %d exceeds the largest chunk size %d", r.Chunk, r.Length, chunkengine.MaxChunkSize)
	}
	return r, nil
}

// ReadRsp is the extension of a successful read; the payload is the data.
type ReadRsp struct {
	Version  uint64 // committed version read
	Length   uint32 // committed length of the whole chunk
	Checksum uint32 // CRC32C of the whole committed chunk
}

// Encode appends the extension to b.
func (r ReadRsp) Encode(b []byte) []byte { return UpdateRsp(r).Encode(b) }

// DecodeReadRsp parses a read response extension.
func DecodeReadRsp(b []byte) (ReadRsp, error) {
	u, err := DecodeUpdateRsp(b)
	return ReadRsp(u), err
}

// InodeReq is the extension of OpQueryLast and OpRemoveInode.
type InodeReq struct {
	Target   uint64
	Chain    uint32
	ChainVer uint64
	Inode    uint64
}

// InodeReqSize is the encoded size of InodeReq.
const InodeReqSize = 8 + 4 + 8 + 8

// Encode appends the extension to b.
func (r *InodeReq) Encode(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.Target)
	b = binary.LittleEndian.AppendUint32(b, r.Chain)
	b = binary.LittleEndian.AppendUint64(b, r.ChainVer)
	return binary.LittleEndian.AppendUint64(b, r.Inode)
}

// DecodeInodeReq parses an inode request extension.
func DecodeInodeReq(b []byte) (InodeReq, error) {
	if len(b) != InodeReqSize {
		return InodeReq{}, errcode.New(errcode.InvalidArgument, "inode request header is %d bytes, want %d", len(b), InodeReqSize)
	}
	d := decoder{b: b}
	return InodeReq{Target: d.u64(), Chain: d.u32(), ChainVer: d.u64(), Inode: d.u64()}, nil
}

// LastChunkRsp answers OpQueryLast (and, with Index = chunks removed, OpRemoveInode).
type LastChunkRsp struct {
	Found  bool
	Index  uint32
	Length uint32
}

// Encode appends the extension to b.
func (r LastChunkRsp) Encode(b []byte) []byte {
	f := byte(0)
	if r.Found {
		f = 1
	}
	b = append(b, f)
	b = binary.LittleEndian.AppendUint32(b, r.Index)
	return binary.LittleEndian.AppendUint32(b, r.Length)
}

// DecodeLastChunkRsp parses an OpQueryLast response extension.
func DecodeLastChunkRsp(b []byte) (LastChunkRsp, error) {
	if len(b) != 9 {
		return LastChunkRsp{}, fmt.Errorf("last-chunk response header is %d bytes, want 9", len(b))
	}
	d := decoder{b: b[1:]}
	return LastChunkRsp{Found: b[0] == 1, Index: d.u32(), Length: d.u32()}, nil
}

type decoder struct{ b []byte }

func (d *decoder) u64() uint64 {
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) u32() uint32 {
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) chunk() chunkengine.ChunkID {
	id, _ := chunkengine.ParseChunkID(d.b[:chunkengine.ChunkIDSize])
	d.b = d.b[chunkengine.ChunkIDSize:]
	return id
}
