package chunkengine

import (
	"encoding/binary"
	"fmt"

	"github.com/emberfs/emberfs/internal/errcode"
)

// ChunkID names a chunk: the inode of the file it belongs to and its index
// in that file (byte offset / chunk size).
type ChunkID struct {
	Inode uint64
	Index uint32
}

// ChunkIDSize is the length of a ChunkID's byte encoding.
const ChunkIDSize = 12

// String renders the id as "inode:index" in decimal.
func (id ChunkID) String() string { return fmt.Sprintf("%d:%d", id.Inode, id.Index) }

// AppendBytes appends the stable 12-byte encoding of id: the inode then the
// index, both big-endian, so encoded ids sort like (inode, index).
func (id ChunkID) AppendBytes(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, id.Inode)
	return binary.BigEndian.AppendUint32(b, id.Index)
}

// Bytes returns the stable 12-byte encoding of id.
func (id ChunkID) Bytes() []byte { return id.AppendBytes(make([]byte, 0, ChunkIDSize)) }

// ParseChunkID decodes an encoding made by Bytes.
func ParseChunkID(b []byte) (ChunkID, error) {
	if len(b) != ChunkIDSize {
		return ChunkID{}, errcode.New(errcode.InvalidArgument, "chunk id encoding has %d bytes, want %d", len(b), ChunkIDSize)
	}
	return ChunkID{Inode: binary.BigEndian.Uint64(b), Index: binary.BigEndian.Uint32(b[8:])}, nil
}

// Less orders ids by inode, then index.
func (id ChunkID) Less(o ChunkID) bool {
	if id.Inode != o.Inode {
		return id.Inode < o.Inode
	}
	return id.Index < o.Index
}
