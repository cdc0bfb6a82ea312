package chunkengine

import (
	"fmt"
	"sort"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
)

// UpdateKind says what an Update does.
type UpdateKind uint8

const (
	// UpdateWrite writes Data at Offset (creating the chunk, zero-filling
	// any gap past the current length).
	UpdateWrite UpdateKind = iota + 1
	// UpdateTruncate sets the chunk length to Length (zero-filling growth).
	UpdateTruncate
	// UpdateRemove removes the chunk when committed.
	UpdateRemove
	// UpdateReplace replaces the whole chunk with Data at exactly Version,
	// whatever the local state: recovery's full-chunk replace.
	UpdateReplace
)

func (k UpdateKind) String() string {
	switch k {
	case UpdateWrite:
		return "write"
	case UpdateTruncate:
		return "truncate"
	case UpdateRemove:
		return "remove"
	case UpdateReplace:
		return "replace"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Update is one change to a chunk, as CRAQ forwards it along a chain.
type Update struct {
	Kind   UpdateKind
	Offset uint32 // UpdateWrite
	Data   []byte // UpdateWrite, UpdateReplace; the engine does not keep it
	Length uint32 // UpdateTruncate: the new length
	// ChunkSize is required when the update creates the chunk; otherwise
	// it must be 0 or equal the chunk's size (UpdateReplace may change it).
	ChunkSize uint32
	// Version is the version this update produces. 0 (the chain head)
	// means "committed version + 1". A non-zero Version must be exactly
	// committed + 1, except for UpdateReplace, which takes any non-zero
	// version unconditionally.
	Version uint64
	// ChainVer is the chain version the update was issued under. An update
	// older than the chain version recorded at the chunk's last commit is
	// refused with StaleVersion (UpdateReplace excepted).
	ChainVer uint32
	// When CheckDataCRC is set, Data must have CRC32C DataCRC (end-to-end
	// check of what the sender meant to write).
	DataCRC      uint32
	CheckDataCRC bool
	// DataCRCChecked says the caller already checked that Data has
	// CRC32C DataCRC (the storage service does as it decodes a request),
	// so the engine takes DataCRC as the data's checksum instead of
	// passing over the data again. A wrong DataCRC is not silent: the
	// stored checksum would not match the content, and the chunk's next
	// verification marks it corrupt.
	DataCRCChecked bool
	// KeepCached writes the data through the page cache rather than with
	// O_DIRECT (directio.go): for data that is read back soon, like
	// KVCache records, where a read from the page cache beats the disk.
	KeepCached bool
	// Tag is the client's dedupe key of this write (zero: none). It is
	// persisted with the version the update produces and, once that
	// version is committed, kept as a write outcome (outcomes.go).
	Tag WriteTag
}

// ChunkMeta is the metadata of one chunk, as Dump and Stat report it.
type ChunkMeta struct {
	ID        ChunkID
	ChunkSize uint32
	Version   uint64 // committed version; 0: none yet (only a pending create)
	ChainVer  uint32 // chain version at the last commit
	Length    uint32 // committed length
	Checksum  uint32 // CRC32C of the committed content
	Corrupt   bool

	PendingVersion  uint64 // 0: no pending version
	PendingChainVer uint32
	PendingLength   uint32
	PendingChecksum uint32
	PendingRemove   bool     // the pending update removes the chunk
	PendingTag      WriteTag // the client write that produced the pending version
}

func (c *chunk) meta() ChunkMeta {
	s := &c.st
	return ChunkMeta{
		ID: c.id, ChunkSize: s.Size,
		Version: s.Committed.Version, ChainVer: s.Committed.ChainVer, Length: s.Committed.Length,
		Checksum: s.Committed.Checksum, Corrupt: s.Corrupt,
		PendingVersion: s.Pending.Version, PendingChainVer: s.Pending.ChainVer,
		PendingLength: s.Pending.Length, PendingChecksum: s.Pending.Checksum, PendingRemove: s.PendingRemove,
		PendingTag: s.Pending.Tag,
	}
}

// VersionError reports an update or commit whose version does not fit the
// chunk's state. errcode.CodeOf sees its Code:
//   - AlreadyExists: the update's version is already committed here (a
//     retried forward: the replica can acknowledge it);
//   - Conflict: the version skips ahead of committed+1 (this replica missed
//     updates and needs a sync), or a commit/abort names a version other
//     than the pending one;
//   - Busy: the head (Version 0) found a pending version it must resolve;
//   - NotFound: a commit with no pending version to commit.
type VersionError struct {
	Code      errcode.Code
	ID        ChunkID
	Version   uint64 // the version the caller asked for
	Committed uint64 // committed version on this target (0: none)
	Pending   uint64 // pending version on this target (0: none)
	Msg       string
}

func (e *VersionError) Error() string { return e.Code.String() + ": " + e.detail() }

func (e *VersionError) detail() string {
	return fmt.Sprintf("chunk %s: %s (requested version %d, committed %d, pending %d)",
		e.ID, e.Msg, e.Version, e.Committed, e.Pending)
}

// Unwrap exposes the errcode so errcode.Is and CodeOf work on it.
func (e *VersionError) Unwrap() error { return errcode.New(e.Code, "%s", e.detail()) }

func (c *chunk) versionErr(code errcode.Code, v uint64, format string, args ...any) error {
	return &VersionError{Code: code, ID: c.id, Version: v, Committed: c.st.Committed.Version,
		Pending: c.st.Pending.Version, Msg: fmt.Sprintf(format, args...)}
}

func validateUpdate(id ChunkID, u *Update) error {
	switch u.Kind {
	case UpdateWrite:
		if len(u.Data) == 0 {
			return errcode.New(errcode.InvalidArgument, "chunk %s: write of 0 bytes at offset %d", id, u.Offset)
		}
	case UpdateTruncate, UpdateRemove:
	case UpdateReplace:
		if u.Version == 0 {
			return errcode.New(errcode.InvalidArgument, "chunk %s: replace needs an explicit version", id)
		}
	default:
		return errcode.New(errcode.InvalidArgument, "chunk %s: unknown update kind %d", id, u.Kind)
	}
	if u.ChunkSize != 0 && (u.ChunkSize < MinChunkSize || u.ChunkSize > MaxChunkSize) {
		return errcode.New(errcode.InvalidArgument, "chunk %s: chunk size %d outside [%d, %d]", id, u.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if u.CheckDataCRC {
		if got := crc32c.Checksum(u.Data); got != u.DataCRC {
			return errcode.New(errcode.ChecksumMismatch, "chunk %s: %s data of %d bytes has CRC32C %08x, sender said %08x", id, u.Kind, len(u.Data), got, u.DataCRC)
		}
	}
	return nil
}

// Prepare stages u as chunk id's pending version: its data is on stable
// storage, and its metadata durable, when Prepare returns. It returns the
// pending version. An existing pending version of the same version (a
// retried forward), or any pending version under UpdateReplace, is
// dropped first.
func (e *Engine) Prepare(id ChunkID, u Update) (uint64, error) {
	st, c, err := e.stage(id, &u)
	if err != nil {
		return 0, err
	}
	defer e.unlockChunk(c)
	if err := e.persist(c, st); err != nil {
		e.discardStaged(c, st, err)
		return 0, err
	}
	return st.Pending.Version, nil
}

// Apply prepares and commits u in one step (one metadata write), for
// single-replica chains and local tools. It returns the new version.
func (e *Engine) Apply(id ChunkID, u Update) (uint64, error) {
	st, c, err := e.stage(id, &u)
	if err != nil {
		return 0, err
	}
	defer e.unlockChunk(c)
	if err := e.commitLocked(c, st, u.ChainVer); err != nil {
		e.discardStaged(c, st, err)
		return 0, err
	}
	return st.Pending.Version, nil
}

// stage validates u against chunk id, resolves an existing pending
// version, and writes the new content. It returns the chunk state with
// the new pending version, and the chunk with its update lock held.
func (e *Engine) stage(id ChunkID, u *Update) (*chunkState, *chunk, error) {
	if err := validateUpdate(id, u); err != nil {
		return nil, nil, err
	}
	c, err := e.lockChunk(id, u.Kind != UpdateRemove)
	if err != nil {
		return nil, nil, err
	}
	if c == nil {
		return nil, nil, errcode.New(errcode.NotFound, "chunk %s not found", id)
	}
	ver, err := e.checkUpdate(c, u)
	if err == nil && c.st.Pending.Version != 0 {
		err = e.dropPending(c)
	}
	var st *chunkState
	if err == nil {
		st, err = e.writeContent(c, u, ver)
	}
	if err != nil {
		e.unlockChunk(c)
		return nil, nil, err
	}
	return st, c, nil
}

// checkUpdate returns the version u will produce, or why it cannot apply.
func (e *Engine) checkUpdate(c *chunk, u *Update) (uint64, error) {
	s := &c.st
	exists := s.Committed.Version != 0 || s.Pending.Version != 0
	if u.Kind == UpdateRemove && !exists {
		return 0, errcode.New(errcode.NotFound, "chunk %s not found", c.id)
	}
	size := s.Size
	switch {
	case u.Kind == UpdateReplace && u.ChunkSize != 0:
		size = u.ChunkSize
	case size == 0 || !exists:
		if u.ChunkSize == 0 {
			return 0, errcode.New(errcode.InvalidArgument, "chunk %s does not exist and the %s gives no chunk size", c.id, u.Kind)
		}
		size = u.ChunkSize
	case u.ChunkSize != 0 && u.ChunkSize != size:
		return 0, errcode.New(errcode.InvalidArgument, "chunk %s has chunk size %d, the %s says %d", c.id, size, u.Kind, u.ChunkSize)
	}
	switch u.Kind {
	case UpdateWrite:
		if end := uint64(u.Offset) + uint64(len(u.Data)); end > uint64(size) {
			return 0, errcode.New(errcode.OutOfRange, "chunk %s: write of %d bytes at offset %d ends at %d, past chunk size %d", c.id, len(u.Data), u.Offset, end, size)
		}
	case UpdateTruncate:
		if u.Length > size {
			return 0, errcode.New(errcode.OutOfRange, "chunk %s: truncate to %d bytes, past chunk size %d", c.id, u.Length, size)
		}
	case UpdateReplace:
		if uint64(len(u.Data)) > uint64(size) {
			return 0, errcode.New(errcode.OutOfRange, "chunk %s: replace with %d bytes, past chunk size %d", c.id, len(u.Data), size)
		}
		return u.Version, nil
	}
	if s.Corrupt && u.Kind != UpdateRemove {
		return 0, errcode.New(errcode.ChecksumMismatch, "chunk %s is marked corrupt: only a full-chunk replace or a remove may change it", c.id)
	}
	if u.ChainVer < s.Committed.ChainVer {
		return 0, errcode.New(errcode.StaleVersion, "chunk %s: update under chain version %d, chunk committed under chain version %d", c.id, u.ChainVer, s.Committed.ChainVer)
	}
	cur := s.Committed.Version
	switch {
	case u.Version == 0:
		if s.Pending.Version != 0 {
			return 0, c.versionErr(errcode.Busy, 0, "pending version must be committed or aborted before a new update")
		}
		return cur + 1, nil
	case u.Version <= cur:
		return 0, c.versionErr(errcode.AlreadyExists, u.Version, "version already committed")
	case u.Version > cur+1:
		return 0, c.versionErr(errcode.Conflict, u.Version, "version skips ahead of committed+1; this replica missed updates")
	}
	return u.Version, nil
}

// writeContent writes the content of the version u produces, without
// touching the committed version's bytes, and returns the resulting state.
func (e *Engine) writeContent(c *chunk, u *Update, ver uint64) (*chunkState, error) {
	st := c.st
	if u.ChunkSize != 0 { // checkUpdate allowed it
		st.Size = u.ChunkSize
	}
	base := st.Committed
	if base.Version == 0 {
		base = verState{} // creating: build on empty content
	}
	p := verState{Version: ver, ChainVer: u.ChainVer, Length: base.Length, Checksum: base.Checksum, Gen: base.Gen}
	// The data's checksum: one pass over it here unless the caller (or
	// validateUpdate) has checked it already.
	dataCRC := func() uint32 {
		if u.CheckDataCRC || u.DataCRCChecked {
			return u.DataCRC
		}
		return crc32c.Checksum(u.Data)
	}
	fresh := false
	var err error
	switch u.Kind {
	case UpdateWrite:
		off, n := u.Offset, uint32(len(u.Data))
		switch {
		case off >= base.Length:
			// Append (maybe after a hole): bytes past the committed length
			// are invisible to every committed reader, so write in place.
			p.Gen, err = e.writeTail(c.id, base, off, u.Data, uint64(off)+uint64(n), u.KeepCached)
			p.Length = off + n
			if base.Length == 0 && off == 0 {
				p.Checksum = dataCRC() // the data is the whole content
			} else {
				p.Checksum = crc32c.Combine(crcZeros(base.Checksum, int64(off-base.Length)), dataCRC(), int64(n))
			}
		case off == 0 && n >= base.Length:
			p.Gen, err = e.writeNewFile(c.id, u.Data, u.KeepCached)
			p.Length, p.Checksum, fresh = n, dataCRC(), true
		default:
			p.Length = max(base.Length, off+n)
			p.Gen, p.Checksum, err = e.copyMerge(c, base, p.Length, off, u.Data, u.KeepCached)
			fresh = true
		}
	case UpdateTruncate:
		switch {
		case u.Length == base.Length:
		case u.Length > base.Length:
			p.Gen, err = e.writeTail(c.id, base, u.Length, nil, uint64(u.Length), u.KeepCached)
			p.Length = u.Length
			p.Checksum = crcZeros(base.Checksum, int64(u.Length-base.Length))
		case u.Length == 0:
			p = verState{Version: ver, ChainVer: u.ChainVer}
			fresh = true
		default:
			p.Length = u.Length
			p.Gen, p.Checksum, err = e.copyMerge(c, base, u.Length, 0, nil, u.KeepCached)
			fresh = true
		}
	case UpdateRemove:
		st.PendingRemove = true
	case UpdateReplace:
		p.Length, p.Checksum, p.Gen, fresh = uint32(len(u.Data)), dataCRC(), 0, true
		if len(u.Data) > 0 {
			p.Gen, err = e.writeNewFile(c.id, u.Data, u.KeepCached)
		}
	}
	if err != nil {
		return nil, err
	}
	p.Tag = u.Tag
	st.Pending, st.PendingFresh = p, fresh
	if u.Kind != UpdateRemove {
		st.PendingRemove = false
	}
	return &st, nil
}

// discardStaged removes the data a staged state wrote when its metadata
// could not be persisted (perr). When the record may still be in the log
// (its fsync failed) the data stays: deleting it would let the next open
// find a committed version without its file. That open removes it if the
// record did not survive.
func (e *Engine) discardStaged(c *chunk, st *chunkState, perr error) {
	if logUncertain(perr) {
		e.log.Warn("keeping data of an update whose metadata fsync failed; the next open decides", "chunk", c.id, "version", st.Pending.Version)
		return
	}
	if g := st.Pending.Gen; g != 0 && g != c.st.Committed.Gen {
		e.fds.drop(fdKey{id: c.id, gen: g})
		e.fs.Remove(e.dataPath(c.id, g))
	}
}

// dropPending durably forgets c's pending version, then frees its data.
// The caller holds c.upd.
func (e *Engine) dropPending(c *chunk) error {
	old := c.st
	st := c.st
	st.Pending, st.PendingRemove, st.PendingFresh = verState{}, false, false
	// A chunk that only had a pending create is left as an empty state:
	// replay and compaction drop it, and the caller (still holding c.upd)
	// may stage a new version on it.
	if err := e.persist(c, &st); err != nil {
		return err
	}
	switch g := old.Pending.Gen; {
	case g == 0:
	case g != old.Committed.Gen:
		e.removeFile(c.id, g)
	default:
		// In-place pending tail: cut it so the file matches the committed
		// length (open would do the same after a crash).
		if err := vfs.Truncate(e.fs, e.dataPath(c.id, g), int64(old.Committed.Length)); err != nil {
			e.log.Warn("trim aborted tail", "chunk", c.id, "err", err)
		}
	}
	return nil
}

// Commit makes pending version `version` of chunk id the committed one,
// recording chainVer as the chain version at commit (0: the update's). A
// commit of the version already committed (a retried acknowledgement)
// succeeds and changes nothing.
func (e *Engine) Commit(id ChunkID, version uint64, chainVer uint32) error {
	c, err := e.lockChunk(id, false)
	if err != nil {
		return err
	}
	if c == nil {
		return &VersionError{Code: errcode.NotFound, ID: id, Version: version, Msg: "no such chunk to commit"}
	}
	defer e.unlockChunk(c)
	p := c.st.Pending
	switch {
	case p.Version == 0 && c.st.Committed.Version == version:
		return nil
	case p.Version == 0:
		return c.versionErr(errcode.NotFound, version, "no pending version to commit")
	case p.Version != version:
		return c.versionErr(errcode.Conflict, version, "commit names a version other than the pending one")
	}
	st := c.st
	return e.commitLocked(c, &st, chainVer)
}

// commitLocked turns st's pending version into the committed one and
// persists it. The caller holds c.upd.
func (e *Engine) commitLocked(c *chunk, st *chunkState, chainVer uint32) error {
	oldGen := c.st.Committed.Gen
	p := st.Pending
	if st.PendingRemove {
		if err := e.persist(c, nil); err != nil {
			return err
		}
		if oldGen != 0 {
			e.removeFile(c.id, oldGen)
		}
		return nil
	}
	next := *st
	next.Committed = p
	if chainVer != 0 {
		next.Committed.ChainVer = chainVer
	}
	next.Corrupt = st.Corrupt && !st.PendingFresh
	next.Pending, next.PendingFresh, next.PendingRemove = verState{}, false, false
	if err := e.persist(c, &next); err != nil {
		return err
	}
	if oldGen != 0 && oldGen != p.Gen {
		e.removeFile(c.id, oldGen)
	}
	return nil
}

// Abort drops pending version `version` of chunk id. Aborting when no
// pending version exists succeeds (a retried abort).
func (e *Engine) Abort(id ChunkID, version uint64) error {
	c, err := e.lockChunk(id, false)
	if err != nil || c == nil {
		return err
	}
	defer e.unlockChunk(c)
	switch p := c.st.Pending.Version; {
	case p == 0:
		return nil
	case p != version:
		return c.versionErr(errcode.Conflict, version, "abort names a version other than the pending one")
	}
	return e.dropPending(c)
}

// MarkCorrupt flags chunk id as corrupt (persistently) so that reads fail
// with ChecksumMismatch until a full-chunk replace repairs it.
func (e *Engine) MarkCorrupt(id ChunkID, reason string) error {
	return e.markCorrupt(id, 0, reason)
}

// markCorrupt flags the chunk if its committed version is still onlyVer
// (0: whatever it is).
func (e *Engine) markCorrupt(id ChunkID, onlyVer uint64, reason string) error {
	c, err := e.lockChunk(id, false)
	if err != nil {
		return err
	}
	if c == nil {
		return errcode.New(errcode.NotFound, "chunk %s not found", id)
	}
	defer e.unlockChunk(c)
	if c.st.Corrupt || (onlyVer != 0 && c.st.Committed.Version != onlyVer) {
		return nil
	}
	e.log.Error("chunk marked corrupt", "chunk", id, "version", c.st.Committed.Version, "reason", reason)
	st := c.st
	st.Corrupt = true
	return e.persist(c, &st)
}

// IsCorrupt reports whether chunk id is marked corrupt.
func (e *Engine) IsCorrupt(id ChunkID) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	c := e.getLocked(id)
	return c != nil && c.st.Corrupt
}

// CorruptChunks lists the chunks marked corrupt, sorted, for repair.
func (e *Engine) CorruptChunks() []ChunkID {
	e.mu.RLock()
	var out []ChunkID
	for _, m := range e.inodes {
		for _, c := range m {
			if c.st.Corrupt {
				out = append(out, c.id)
			}
		}
	}
	e.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// RemoveInode removes up to limit chunks of inode (all when limit <= 0),
// highest index first, pending versions included, with one metadata sync
// for the batch. It is chunk GC after a file is deleted, done by each
// replica on its own; more reports that chunks remain.
func (e *Engine) RemoveInode(inode uint64, limit int) (removed int, more bool, err error) {
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		return 0, false, errcode.New(errcode.Unavailable, "chunk engine %s is closed", e.dir)
	}
	victims := make([]*chunk, 0, len(e.inodes[inode]))
	for _, c := range e.inodes[inode] {
		victims = append(victims, c)
	}
	e.mu.RUnlock()
	sort.Slice(victims, func(i, j int) bool { return victims[i].id.Index > victims[j].id.Index })
	if limit > 0 && len(victims) > limit {
		victims, more = victims[:limit], true
	}
	locked := victims[:0]
	var rec []byte
	for _, c := range victims {
		c.upd.Lock()
		if c.dead {
			c.upd.Unlock()
			continue
		}
		locked = append(locked, c)
		rec = encodeDelete(rec, c.id)
	}
	defer func() {
		for _, c := range locked {
			c.upd.Unlock()
		}
	}()
	if len(locked) == 0 {
		return 0, more, nil
	}
	if err := e.appendDurable(rec); err != nil {
		return 0, more, err
	}
	gens := make([][2]uint64, 0, len(locked))
	e.mu.Lock()
	for _, c := range locked {
		gens = append(gens, [2]uint64{c.st.Committed.Gen, c.st.Pending.Gen})
		e.deleteLocked(c)
	}
	e.mu.Unlock()
	e.compactMu.RUnlock()
	for i, c := range locked {
		for j, g := range gens[i] {
			if g != 0 && (j == 0 || g != gens[i][0]) {
				e.removeFile(c.id, g)
			}
		}
	}
	e.maybeCompact()
	return len(locked), more, nil
}
