package chunkengine

import (
	"os"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
)

// ReadPending returns the content of chunk id's pending version, checked
// against the checksum its prepare recorded, with the chunk's metadata.
// A chain head uses it to re-drive a pending version nobody forwards any
// more: that version may already be committed downstream, so it must be
// completed, never rolled back to the older committed content. A pending
// remove returns no bytes (m.PendingRemove is set).
func (e *Engine) ReadPending(id ChunkID) ([]byte, ChunkMeta, error) {
	c, err := e.lockChunk(id, false)
	if err != nil {
		return nil, ChunkMeta{}, err
	}
	if c == nil {
		return nil, ChunkMeta{}, errcode.New(errcode.NotFound, "chunk %s not found", id)
	}
	defer e.unlockChunk(c)
	e.mu.RLock()
	st, m := c.st, c.meta()
	e.mu.RUnlock()
	if st.Pending.Version == 0 {
		return nil, m, errcode.New(errcode.NotFound, "chunk %s has no pending version", id)
	}
	if st.PendingRemove || st.Pending.Length == 0 {
		return []byte{}, m, nil
	}
	f, err := e.fs.OpenFile(e.dataPath(id, st.Pending.Gen), os.O_RDONLY, 0)
	if err != nil {
		return nil, m, ioErr(id, "open pending data file", err)
	}
	defer f.Close()
	buf := make([]byte, st.Pending.Length)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, m, ioErr(id, "read pending data file", err)
	}
	if got := crc32c.Checksum(buf); got != st.Pending.Checksum {
		return nil, m, errcode.New(errcode.ChecksumMismatch, "chunk %s pending version %d: stored CRC32C %08x, content has %08x", id, st.Pending.Version, st.Pending.Checksum, got)
	}
	return buf, m, nil
}
