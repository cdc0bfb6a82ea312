package chaos

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/emberfs/emberfs/internal/crc32c"
)

// Files are written in self-describing blocks: each names the logical
// file, its own block index and the write that produced it, and carries a
// CRC32C, so any bytes a read returns can be traced to one write (or shown
// never to have been written).
const (
	blockSize = 4 << 10
	// maxBlocks bounds a file: 40 blocks span three 64 KiB chunks.
	maxBlocks = 40
	magic     = "EMBRCHAO"
)

// fillBlock writes block b of logical file fid as written by write seq.
func fillBlock(p []byte, fid uint64, b int, seq uint64) {
	copy(p[0:8], magic)
	binary.LittleEndian.PutUint64(p[8:16], fid)
	binary.LittleEndian.PutUint32(p[16:20], uint32(b))
	binary.LittleEndian.PutUint32(p[20:24], 0)
	binary.LittleEndian.PutUint64(p[24:32], seq)
	r := rand.New(rand.NewPCG(fid^seq, uint64(b)))
	for i := 32; i+8 <= blockSize-4; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], r.Uint64())
	}
	binary.LittleEndian.PutUint32(p[blockSize-4:], crc32c.Checksum(p[:blockSize-4]))
}

// decodeBlock returns the write seq block b of file fid holds: 0 for an
// all-zero block (a hole, or never written), an error for bytes no write
// produced (bad magic or CRC) or produced for another place.
func decodeBlock(p []byte, fid uint64, b int) (uint64, error) {
	if len(p) != blockSize {
		return 0, fmt.Errorf("block of %d bytes", len(p))
	}
	zero := true
	for _, c := range p {
		if c != 0 {
			zero = false
			break
		}
	}
	if zero {
		return 0, nil
	}
	if string(p[0:8]) != magic {
		return 0, fmt.Errorf("no block header (first bytes %x)", p[:16])
	}
	if got, want := binary.LittleEndian.Uint32(p[blockSize-4:]), crc32c.Checksum(p[:blockSize-4]); got != want {
		return 0, fmt.Errorf("block CRC %08x, content has %08x (torn or corrupt)", got, want)
	}
	gotFid, gotB, seq := binary.LittleEndian.Uint64(p[8:16]), int(binary.LittleEndian.Uint32(p[16:20])), binary.LittleEndian.Uint64(p[24:32])
	if gotFid != fid || gotB != b {
		return 0, fmt.Errorf("block of file %d block %d (write %x) found at file %d block %d", gotFid, gotB, seq, fid, b)
	}
	return seq, nil
}

// blockFileID reads the logical file id out of a block-0 header (0 when
// the block is not a valid header).
func blockFileID(p []byte) uint64 {
	if len(p) < blockSize || string(p[0:8]) != magic {
		return 0
	}
	if binary.LittleEndian.Uint32(p[blockSize-4:blockSize]) != crc32c.Checksum(p[:blockSize-4]) {
		return 0
	}
	return binary.LittleEndian.Uint64(p[8:16])
}
