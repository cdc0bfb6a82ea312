package chunkengine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
)

// The metadata store is an append-only log of whole-chunk state records
// plus a snapshot that compaction writes to a temporary file and renames
// into place. Every record carries the complete state of one chunk, so
// replay is "last record per chunk wins" and replaying a log over a
// snapshot that already contains it changes nothing.
//
// Record framing (little-endian): u32 payload length, u32 CRC32C of the
// payload, payload. A torn record at the end is what a crash leaves: the
// tail after the last good record is cut off when the engine opens. A
// damaged record with good records after it is media or operator damage,
// not a crash: replay skips it, goes on with the records after it, and
// the engine reports it (scanLog, Engine.MetaDamage).

const (
	logName      = "meta.log"
	snapName     = "meta.snap"
	snapTmpName  = "meta.snap.tmp"
	snapMagic    = "EMBCSNP1"
	recHeaderLen = 8

	recSet    = 1
	recDelete = 2
	recEnd    = 3 // snapshot trailer: u64 record count
	// recTag is a write outcome (outcomes.go): in snapshots, and in the
	// log for outcomes a sync handed over.
	recTag = 4
	// recSetTagged is recSet followed by the committed and the pending
	// version's write tags (outcomes.go); written only when one is set,
	// so targets without client dedupe keys keep plain recSet records.
	recSetTagged = 5

	flagCorrupt       = 1 << 0
	flagPending       = 1 << 1
	flagPendingRemove = 1 << 2
	flagPendingFresh  = 1 << 3

	verStateLen        = 8 + 4 + 4 + 4 + 8
	setRecordLen       = 1 + ChunkIDSize + 4 + verStateLen + 1 + verStateLen
	setTaggedRecordLen = setRecordLen + 2*writeTagLen
)

// verState is one version of a chunk's content.
type verState struct {
	Version  uint64 // 0: no such version
	ChainVer uint32
	Length   uint32
	Checksum uint32 // CRC32C of bytes [0, Length)
	Gen      uint64 // data file generation; 0: no data file (Length is 0)
	// Tag is the client write that produced this version (zero: none or
	// unknown), recorded so a retry of it is recognised after a restart.
	Tag WriteTag
}

// chunkState is everything the engine persists about one chunk.
type chunkState struct {
	Size          uint32 // chunk size, fixed at creation
	Committed     verState
	Pending       verState // Version 0: no pending version
	PendingRemove bool     // the pending update removes the chunk
	PendingFresh  bool     // pending content was written whole or copied under verification
	Corrupt       bool
}

func appendVer(b []byte, v verState) []byte {
	b = binary.LittleEndian.AppendUint64(b, v.Version)
	b = binary.LittleEndian.AppendUint32(b, v.ChainVer)
	b = binary.LittleEndian.AppendUint32(b, v.Length)
	b = binary.LittleEndian.AppendUint32(b, v.Checksum)
	return binary.LittleEndian.AppendUint64(b, v.Gen)
}

func parseVer(b []byte) verState {
	return verState{
		Version:  binary.LittleEndian.Uint64(b),
		ChainVer: binary.LittleEndian.Uint32(b[8:]),
		Length:   binary.LittleEndian.Uint32(b[12:]),
		Checksum: binary.LittleEndian.Uint32(b[16:]),
		Gen:      binary.LittleEndian.Uint64(b[20:]),
	}
}

// frame wraps a payload in the record header.
func frame(b []byte, payload []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = binary.LittleEndian.AppendUint32(b, crc32c.Checksum(payload))
	return append(b, payload...)
}

func encodeSet(b []byte, id ChunkID, s *chunkState) []byte {
	tagged := !s.Committed.Tag.IsZero() || (s.Pending.Version != 0 && !s.Pending.Tag.IsZero())
	p := make([]byte, 0, setTaggedRecordLen)
	if tagged {
		p = append(p, recSetTagged)
	} else {
		p = append(p, recSet)
	}
	p = id.AppendBytes(p)
	p = binary.LittleEndian.AppendUint32(p, s.Size)
	p = appendVer(p, s.Committed)
	var flags byte
	if s.Corrupt {
		flags |= flagCorrupt
	}
	if s.Pending.Version != 0 {
		flags |= flagPending
	}
	if s.PendingRemove {
		flags |= flagPendingRemove
	}
	if s.PendingFresh {
		flags |= flagPendingFresh
	}
	p = append(p, flags)
	p = appendVer(p, s.Pending)
	if tagged {
		p = appendTag(p, s.Committed.Tag)
		p = appendTag(p, s.Pending.Tag)
	}
	return frame(b, p)
}

func encodeDelete(b []byte, id ChunkID) []byte {
	p := make([]byte, 0, 1+ChunkIDSize)
	p = append(p, recDelete)
	return frame(b, id.AppendBytes(p))
}

// record is one decoded log record.
type record struct {
	kind    byte
	id      ChunkID
	state   chunkState
	count   uint64       // recEnd only
	outcome WriteOutcome // recTag only
}

func decodeRecord(p []byte) (record, error) {
	if len(p) == 0 {
		return record{}, errors.New("empty record")
	}
	r := record{kind: p[0]}
	switch r.kind {
	case recSet, recSetTagged:
		want := setRecordLen
		if r.kind == recSetTagged {
			want = setTaggedRecordLen
		}
		if len(p) != want {
			return r, fmt.Errorf("set record has %d bytes, want %d", len(p), want)
		}
		id, _ := ParseChunkID(p[1 : 1+ChunkIDSize])
		r.id = id
		q := p[1+ChunkIDSize:]
		r.state.Size = binary.LittleEndian.Uint32(q)
		r.state.Committed = parseVer(q[4:])
		flags := q[4+verStateLen]
		r.state.Pending = parseVer(q[5+verStateLen:])
		r.state.Corrupt = flags&flagCorrupt != 0
		r.state.PendingRemove = flags&flagPendingRemove != 0
		r.state.PendingFresh = flags&flagPendingFresh != 0
		if r.kind == recSetTagged {
			t := q[5+2*verStateLen:]
			r.state.Committed.Tag = parseTag(t)
			r.state.Pending.Tag = parseTag(t[writeTagLen:])
			r.kind = recSet
		}
		if flags&flagPending == 0 {
			r.state.Pending = verState{}
		}
	case recDelete:
		if len(p) != 1+ChunkIDSize {
			return r, fmt.Errorf("delete record has %d bytes, want %d", len(p), 1+ChunkIDSize)
		}
		r.id, _ = ParseChunkID(p[1:])
	case recTag:
		o, err := decodeTagRecord(p)
		if err != nil {
			return r, err
		}
		r.outcome = o
	case recEnd:
		if len(p) != 9 {
			return r, fmt.Errorf("end record has %d bytes, want 9", len(p))
		}
		r.count = binary.LittleEndian.Uint64(p[1:])
	default:
		return r, fmt.Errorf("unknown record type %d", r.kind)
	}
	return r, nil
}

// scanRecords decodes framed records from b until the first torn or corrupt
// one; it returns the records and the length of the valid prefix.
func scanRecords(b []byte) ([]record, int, error) {
	var recs []record
	off := 0
	for off < len(b) {
		if len(b)-off < recHeaderLen {
			return recs, off, errors.New("torn record header")
		}
		n := int(binary.LittleEndian.Uint32(b[off:]))
		sum := binary.LittleEndian.Uint32(b[off+4:])
		if n > 1<<16 || len(b)-off-recHeaderLen < n {
			return recs, off, fmt.Errorf("torn record at offset %d", off)
		}
		p := b[off+recHeaderLen : off+recHeaderLen+n]
		if crc32c.Checksum(p) != sum {
			return recs, off, fmt.Errorf("record checksum mismatch at offset %d", off)
		}
		r, err := decodeRecord(p)
		if err != nil {
			return recs, off, fmt.Errorf("record at offset %d: %w", off, err)
		}
		recs = append(recs, r)
		off += recHeaderLen + n
	}
	return recs, off, nil
}

// metaLog appends records and makes them durable with group commit: many
// goroutines append, one fsync covers all records written before it.
type metaLog struct {
	noSync bool

	mu      sync.Mutex
	f       vfs.File
	size    int64  // records end here; the next one is written at size
	written uint64 // sequence number of the last record written
	err     error  // sticky: after a failed fsync (or a failed cleanup) the log is unusable

	syncMu sync.Mutex
	synced atomic.Uint64
}

func openLog(fs vfs.FS, path string, validLen int64, noSync bool) (*metaLog, error) {
	f, err := fs.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	// Cut a torn tail so new records follow the last good one.
	if err := f.Truncate(validLen); err != nil {
		f.Close()
		return nil, err
	}
	if !noSync {
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return &metaLog{f: f, size: validLen, noSync: noSync}, nil
}

// append writes framed records (one write call) and returns the sequence
// number to pass to sync. A failed or short write is cut off again, so
// the log stays usable (ENOSPC passes) and nothing of b is left in it; if
// even the cut fails, the log refuses further work.
func (l *metaLog) append(b []byte) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	if err := vfs.WriteFull(l.f, b, l.size); err != nil {
		err = fmt.Errorf("metadata log write: %w", err)
		if terr := l.f.Truncate(l.size); terr != nil {
			l.err = fmt.Errorf("%w; cutting the failed write off: %w", err, terr)
			return 0, l.err
		}
		return 0, err
	}
	l.size += int64(len(b))
	l.written++
	return l.written, nil
}

// sync returns once record seq is on stable storage.
func (l *metaLog) sync(seq uint64) error {
	if l.synced.Load() >= seq {
		return nil
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if l.synced.Load() >= seq {
		return nil
	}
	l.mu.Lock()
	target, err := l.written, l.err
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if !l.noSync {
		if err := l.f.Sync(); err != nil {
			// After a failed fsync the page cache state is unknown
			// (fsyncgate): refuse all further work on this log.
			l.mu.Lock()
			l.err = fmt.Errorf("metadata log fsync: %w", err)
			l.mu.Unlock()
			return l.err
		}
	}
	l.synced.Store(target)
	return nil
}

func (l *metaLog) sizeNow() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

// reset empties the log after a snapshot has made its records redundant.
// The caller guarantees no appends or syncs run concurrently.
func (l *metaLog) reset() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if err := l.f.Truncate(0); err != nil {
		l.err = err
		return err
	}
	if !l.noSync {
		if err := l.f.Sync(); err != nil {
			l.err = err
			return err
		}
	}
	l.size = 0
	return nil
}

func (l *metaLog) close() error { return l.f.Close() }

// writeSnapshot writes all states to dir/meta.snap atomically: temporary
// file, fsync, rename, fsync of the directory.
func writeSnapshot(fs vfs.FS, dir string, states map[ChunkID]*chunkState, outcomes []WriteOutcome, noSync bool) error {
	tmp := filepath.Join(dir, snapTmpName)
	f, err := fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	var off int64
	buf := make([]byte, 0, 1<<20)
	buf = append(buf, snapMagic...)
	var count uint64
	flush := func() error {
		if len(buf) < 1<<20-2*setTaggedRecordLen {
			return nil
		}
		if err := vfs.WriteFull(f, buf, off); err != nil {
			return err
		}
		off += int64(len(buf))
		buf = buf[:0]
		return nil
	}
	// Outcomes first (oldest first), so that replaying the states after
	// them notes each chunk's own committed outcome last.
	for _, o := range outcomes {
		buf = encodeTagRecord(buf, o)
		count++
		if err := flush(); err != nil {
			f.Close()
			return err
		}
	}
	for id, s := range states {
		buf = encodeSet(buf, id, s)
		count++
		if len(buf) >= 1<<20-2*setTaggedRecordLen {
			if err := vfs.WriteFull(f, buf, off); err != nil {
				f.Close()
				return err
			}
			off += int64(len(buf))
			buf = buf[:0]
		}
	}
	end := binary.LittleEndian.AppendUint64([]byte{recEnd}, count)
	buf = frame(buf, end)
	if err := vfs.WriteFull(f, buf, off); err != nil {
		f.Close()
		return err
	}
	if !noSync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fs.Rename(tmp, filepath.Join(dir, snapName)); err != nil {
		return err
	}
	if noSync {
		return nil
	}
	return vfs.SyncDir(fs, dir)
}

// loadMeta reads the snapshot and replays the log over it. It returns the
// states and the length of the log's valid prefix.
func loadMeta(fs vfs.FS, dir string, outcomes *outcomeTable) (map[ChunkID]*chunkState, int64, []string, error) {
	states := make(map[ChunkID]*chunkState)
	snap, err := vfs.ReadFile(fs, filepath.Join(dir, snapName))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, 0, nil, err
	default:
		if len(snap) < len(snapMagic) || string(snap[:len(snapMagic)]) != snapMagic {
			return nil, 0, nil, fmt.Errorf("%s: bad magic", snapName)
		}
		recs, _, err := scanRecords(snap[len(snapMagic):])
		if err != nil {
			// The snapshot is renamed into place only after fsync, so
			// damage here is media corruption, not a crash: stop.
			return nil, 0, nil, fmt.Errorf("%s is damaged: %w", snapName, err)
		}
		if len(recs) == 0 || recs[len(recs)-1].kind != recEnd || recs[len(recs)-1].count != uint64(len(recs)-1) {
			return nil, 0, nil, fmt.Errorf("%s is damaged: missing or wrong end record", snapName)
		}
		for _, r := range recs[:len(recs)-1] {
			switch r.kind {
			case recSet:
				s := r.state
				states[r.id] = &s
				if o, ok := committedOutcome(r.id, &s); ok {
					outcomes.note(o)
				}
			case recTag:
				outcomes.note(r.outcome)
			default:
				return nil, 0, nil, fmt.Errorf("%s is damaged: record type %d", snapName, r.kind)
			}
		}
	}
	logData, err := vfs.ReadFile(fs, filepath.Join(dir, logName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil, err
	}
	recs, valid, damage := scanLog(logData) // a torn tail is expected after a crash
	for _, r := range recs {
		switch r.kind {
		case recSet:
			s := r.state
			states[r.id] = &s
			if o, ok := committedOutcome(r.id, &s); ok {
				outcomes.note(o)
			}
		case recTag:
			outcomes.note(r.outcome)
		case recDelete:
			delete(states, r.id)
		}
	}
	return states, int64(valid), damage, nil
}

// scanLog decodes the metadata log. Where a record is damaged and good
// records follow, it skips the damaged bytes, describes them in damage,
// and goes on; it stops only at a damaged tail with nothing good after
// it (a torn append), returning the valid length up to there.
func scanLog(b []byte) (recs []record, valid int, damage []string) {
	off := 0
	for {
		rs, n, err := scanRecords(b[off:])
		recs = append(recs, rs...)
		off += n
		if err == nil {
			return recs, off, damage
		}
		next := nextFrame(b, off+1)
		if next < 0 {
			return recs, off, damage
		}
		damage = append(damage, fmt.Sprintf("%s bytes at offset %d to %d are not a readable record (%v); replay went on after them", logName, off, next, err))
		off = next
	}
}

// nextFrame finds the first offset at or after from where a whole, well
// formed record starts (its CRC32C matches and it decodes), or -1.
func nextFrame(b []byte, from int) int {
	for k := from; k+recHeaderLen <= len(b); k++ {
		n := int(binary.LittleEndian.Uint32(b[k:]))
		if n == 0 || n > 1<<16 || len(b)-k-recHeaderLen < n {
			continue
		}
		p := b[k+recHeaderLen : k+recHeaderLen+n]
		if crc32c.Checksum(p) != binary.LittleEndian.Uint32(b[k+4:]) {
			continue
		}
		if _, err := decodeRecord(p); err == nil {
			return k
		}
	}
	return -1
}
