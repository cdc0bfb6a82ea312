// Package chunkengine stores the chunks of one storage target in one
// directory: copy-on-write chunk data files, a crash-safe metadata log, a
// committed and at most one pending version per chunk, and CRC32C checksums
// verified on read. The CRAQ layer drives it through Prepare/Commit/Abort;
// docs/chunk-engine.md describes the layout and the crash-safety argument.
package chunkengine

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
)

// Chunk size bounds. Any size in [MinChunkSize, MaxChunkSize] is accepted;
// it need not be a power of two.
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
)

const (
	formatName    = "FORMAT"
	formatTmpName = "FORMAT.tmp"
	formatText    = "emberfs-chunkengine 1\n"
	lockName      = "LOCK"
	dataDir       = "data"
	quarantineDir = "quarantine"
)

// Options tune an engine. The zero value is ready for production use.
type Options struct {
	// NoSync skips every fsync. Data then survives a process crash
	// (SIGKILL) but not a power loss. For tests and benchmarks only.
	NoSync bool
	// VerifyInterval bounds how long a successful full-content checksum
	// check vouches for a committed version: partial reads and file
	// regions of a version verified less than VerifyInterval ago skip
	// re-verification. 0 means DefaultVerifyInterval; negative means
	// verify the whole chunk on every read.
	VerifyInterval time.Duration
	// CompactBytes is the metadata log size that triggers a snapshot.
	// 0 means DefaultCompactBytes.
	CompactBytes int64
	// Logger receives recovery and corruption reports (slog.Default if nil).
	Logger *slog.Logger
	// OpenFiles bounds the data files kept open between reads (0:
	// DefaultOpenFiles, negative: none kept).
	OpenFiles int
	// FS is the file system the target directory lives on (vfs.Default,
	// the operating system's, if nil). Tests inject faults through it.
	// OpenRegion needs files that vfs.OSFile can unwrap to an *os.File.
	FS vfs.FS
	// MaxWriteOutcomes bounds the write outcomes kept (one per client
	// channel; outcomes.go). 0 means DefaultMaxWriteOutcomes.
	MaxWriteOutcomes int
	// BufferedIO writes chunk data through the page cache only. By
	// default (unless NoSync) the aligned part of a write of 64 KiB or
	// more goes to disk with O_DIRECT where the file system allows it
	// (directio.go).
	BufferedIO bool
}

// Defaults for Options.
const (
	DefaultVerifyInterval = time.Minute
	DefaultCompactBytes   = 64 << 20
)

// chunk is the in-memory record of one chunk. upd serializes updates to
// the chunk (and is held across their file I/O); the state fields are
// guarded by Engine.mu and only replaced once the change is durable.
type chunk struct {
	upd  sync.Mutex
	id   ChunkID
	dead bool // removed from the map; whoever holds upd must look it up again

	st chunkState // guarded by Engine.mu

	// Verification cache (guarded by Engine.mu): the committed version
	// whose whole content last matched its checksum, and when.
	verifiedVer uint64
	verifiedGen uint64
	verifiedAt  time.Time
}

func (c *chunk) exists() bool { return c.st.Committed.Version != 0 || c.st.Pending.Version != 0 }

// Engine is the chunk store of one target directory. All methods are safe
// for concurrent use.
type Engine struct {
	dir  string
	opts Options
	log  *slog.Logger
	fs   vfs.FS

	lockFile io.Closer
	dirMu    sync.Mutex
	dataDirs [256]vfs.File // shard directories opened so far, for fsync after creates
	mlog     *metaLog

	// compactMu: updates hold it shared from their log append until their
	// in-memory state is updated; compaction holds it exclusively so the
	// snapshot it writes contains every appended record.
	compactMu  sync.RWMutex
	compacting atomic.Bool
	bg         sync.WaitGroup

	mu     sync.RWMutex
	inodes map[uint64]map[uint32]*chunk
	closed bool

	nextGen atomic.Uint64

	// noDirect is set once the file system refused O_DIRECT (directio.go);
	// directBytes counts the chunk data bytes written with O_DIRECT.
	noDirect    atomic.Bool
	directBytes atomic.Uint64

	// damage describes metadata log records the last open could not read
	// (set once by open; see MetaDamage).
	damage []string

	// outcomes: the latest committed tagged write per client channel
	// (outcomes.go). Noted after the record is durable, before compactMu
	// is released, so a snapshot holds every outcome the log it replaces
	// held.
	outcomes *outcomeTable

	fds *fdCache // read descriptors of committed data files
}

// Open opens (creating if needed) the target directory dir, takes its lock
// and brings it to a consistent state: the metadata log's torn tail is cut,
// data files no metadata points at are removed, pending versions whose data
// is missing are dropped.
func Open(dir string, opts Options) (*Engine, error) {
	if opts.VerifyInterval == 0 {
		opts.VerifyInterval = DefaultVerifyInterval
	}
	if opts.CompactBytes <= 0 {
		opts.CompactBytes = DefaultCompactBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.OpenFiles == 0 {
		opts.OpenFiles = DefaultOpenFiles
	}
	e := &Engine{dir: dir, opts: opts, log: opts.Logger.With("target", dir), fs: opts.FS, inodes: make(map[uint64]map[uint32]*chunk),
		outcomes: newOutcomeTable(opts.MaxWriteOutcomes), fds: newFDCache(max(opts.OpenFiles, 0))}
	if err := e.makeTargetDir(); err != nil {
		return nil, err
	}
	lf, err := e.fs.Lock(filepath.Join(dir, lockName))
	if errors.Is(err, vfs.ErrLocked) {
		return nil, errcode.New(errcode.Busy, "target dir %s is in use by another process: %v", dir, err)
	}
	if err != nil {
		return nil, errcode.New(errcode.Internal, "lock target dir %s: %v", dir, err)
	}
	e.lockFile = lf
	if err := e.open(); err != nil {
		e.closeFiles()
		return nil, err
	}
	return e, nil
}

// makeTargetDir creates the target directory if needed and, when it did,
// makes its entry in the parent durable: every acknowledged update lives
// below it.
func (e *Engine) makeTargetDir() error {
	_, err := e.fs.Stat(e.dir)
	created := errors.Is(err, os.ErrNotExist)
	if err := e.fs.MkdirAll(e.dir, 0o755); err != nil {
		return ioErr0(err, "create target dir %s", e.dir)
	}
	if created && !e.opts.NoSync {
		if err := vfs.SyncDir(e.fs, filepath.Dir(e.dir)); err != nil {
			return ioErr0(err, "sync parent of target dir %s", e.dir)
		}
	}
	return nil
}

func (e *Engine) open() error {
	if err := e.checkFormat(); err != nil {
		return err
	}
	if err := e.fs.MkdirAll(filepath.Join(e.dir, dataDir), 0o755); err != nil {
		return ioErr0(err, "create data dir")
	}
	_ = e.fs.Remove(filepath.Join(e.dir, snapTmpName)) // an interrupted compaction
	states, valid, damage, err := loadMeta(e.fs, e.dir, e.outcomes)
	if err != nil {
		return ioErr0(err, "load chunk metadata of %s", e.dir)
	}
	if len(damage) > 0 {
		if err := e.keepDamagedLog(damage); err != nil {
			return err
		}
	}
	if fi, err := e.fs.Stat(filepath.Join(e.dir, logName)); err == nil && fi.Size() > valid {
		e.log.Warn("cutting torn metadata log tail", "valid_bytes", valid, "dropped_bytes", fi.Size()-valid)
	}
	e.mlog, err = openLog(e.fs, filepath.Join(e.dir, logName), valid, e.opts.NoSync)
	if err != nil {
		return ioErr0(err, "open metadata log")
	}
	// The data directory and the log may have just been created: their
	// entries must be durable before any update is acknowledged.
	if !e.opts.NoSync {
		if err := vfs.SyncDir(e.fs, e.dir); err != nil {
			return ioErr0(err, "sync target dir")
		}
	}
	changed, err := e.reconcile(states)
	if err != nil {
		return err
	}
	changed = changed || len(damage) > 0 // the next open must not meet the damage again
	for id, s := range states {
		c := &chunk{id: id, st: *s}
		e.putLocked(c)
	}
	if changed {
		// Persist the repaired state as a fresh snapshot so the next open
		// starts from it.
		if err := e.compact(); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) checkFormat() error {
	p := filepath.Join(e.dir, formatName)
	b, err := vfs.ReadFile(e.fs, p)
	if errors.Is(err, os.ErrNotExist) {
		return e.writeFormat(p)
	}
	if err != nil {
		return ioErr0(err, "read %s", p)
	}
	if string(b) != formatText {
		return errcode.New(errcode.InvalidArgument, "target dir %s has format %q, this build reads %q", e.dir, strings.TrimSpace(string(b)), strings.TrimSpace(formatText))
	}
	return nil
}

// writeFormat marks a new, empty target directory as ours. FORMAT appears
// whole or not at all (temporary file, fsync, rename, fsync of the
// directory), and before anything else is made here, so a crash during
// the first open leaves a directory the next open takes up again rather
// than one it refuses as foreign or damaged.
func (e *Engine) writeFormat(p string) error {
	entries, err := e.fs.ReadDir(e.dir)
	if err != nil {
		return ioErr0(err, "list target dir %s", e.dir)
	}
	for _, ent := range entries {
		if ent.Name() != lockName && ent.Name() != formatTmpName {
			return errcode.New(errcode.InvalidArgument, "target dir %s is not empty and has no %s file: not a chunk engine directory", e.dir, formatName)
		}
	}
	tmp := filepath.Join(e.dir, formatTmpName)
	if err := vfs.WriteFileSync(e.fs, tmp, []byte(formatText), 0o644, !e.opts.NoSync); err != nil {
		return ioErr0(err, "write %s", tmp)
	}
	if err := e.fs.Rename(tmp, p); err != nil {
		return ioErr0(err, "rename %s", tmp)
	}
	if !e.opts.NoSync {
		if err := vfs.SyncDir(e.fs, e.dir); err != nil {
			return ioErr0(err, "sync target dir")
		}
	}
	return nil
}

// reconcile makes metadata and data files agree after a crash. It reports
// whether it changed any state.
func (e *Engine) reconcile(states map[ChunkID]*chunkState) (bool, error) {
	type fileKey struct {
		id  ChunkID
		gen uint64
	}
	sizes := make(map[fileKey]int64)
	var maxGen uint64
	for i := range e.dataDirs {
		d := filepath.Join(e.dir, dataDir, fmt.Sprintf("%02x", i))
		entries, err := e.fs.ReadDir(d)
		if errors.Is(err, os.ErrNotExist) {
			continue // shard directories are made on first use
		}
		if err != nil {
			return false, ioErr0(err, "list %s", d)
		}
		for _, ent := range entries {
			p := filepath.Join(d, ent.Name())
			id, gen, ok := parseDataName(ent.Name())
			if !ok || dataShard(id) != i {
				e.log.Warn("removing stray file in data dir", "path", p)
				e.fs.RemoveAll(p)
				continue
			}
			maxGen = max(maxGen, gen)
			s := states[id]
			if s == nil || (s.Committed.Gen != gen && s.Pending.Gen != gen) {
				if len(e.damage) > 0 {
					// The metadata lost records: this file may be the only
					// copy of an acknowledged version. Never delete it.
					if err := e.quarantine(p, ent.Name()); err != nil {
						return false, err
					}
					if s != nil && gen > max(s.Committed.Gen, s.Pending.Gen) && !s.Corrupt {
						// A newer version of this chunk existed than the
						// metadata now says: serving the older one would
						// roll it back. Corrupt makes readers go to another
						// replica and the service repair it.
						e.log.Error("chunk has data newer than its surviving metadata; marked corrupt", "chunk", id, "file", p)
						s.Corrupt = true
					}
					continue
				}
				// Written by an update whose metadata never became durable,
				// or left over from a version already replaced.
				if err := e.fs.Remove(p); err != nil {
					return false, ioErr0(err, "remove unreferenced %s", p)
				}
				continue
			}
			fi, err := ent.Info()
			if err != nil {
				return false, ioErr0(err, "stat %s", p)
			}
			sizes[fileKey{id, gen}] = fi.Size()
		}
	}
	changed := false
	for id, s := range states {
		maxGen = max(maxGen, s.Committed.Gen, s.Pending.Gen)
		if s.Pending.Version != 0 && s.Pending.Gen != 0 {
			if sz, ok := sizes[fileKey{id, s.Pending.Gen}]; !ok || sz < int64(s.Pending.Length) {
				e.log.Warn("dropping pending version whose data is missing", "chunk", id, "version", s.Pending.Version)
				if s.Pending.Gen != s.Committed.Gen {
					e.fs.Remove(e.dataPath(id, s.Pending.Gen))
				}
				s.Pending, s.PendingRemove, s.PendingFresh = verState{}, false, false
				changed = true
			}
		}
		if s.Committed.Version != 0 && s.Committed.Gen != 0 {
			sz, ok := sizes[fileKey{id, s.Committed.Gen}]
			if !ok || sz < int64(s.Committed.Length) {
				// fsync ordering makes this impossible short of media or
				// operator damage; keep the metadata so repair finds it.
				e.log.Error("committed chunk data missing or short", "chunk", id, "version", s.Committed.Version, "size", sz, "length", s.Committed.Length)
				if !s.Corrupt {
					s.Corrupt = true
					changed = true
				}
			} else if sz > int64(s.Committed.Length) && s.Pending.Gen != s.Committed.Gen {
				// Tail of an in-place append that was never committed.
				if err := vfs.Truncate(e.fs, e.dataPath(id, s.Committed.Gen), int64(s.Committed.Length)); err != nil {
					return false, ioErr(id, "trim uncommitted tail", err)
				}
			}
		}
		if s.Committed.Version == 0 && s.Pending.Version == 0 {
			delete(states, id)
			changed = true
		}
	}
	e.nextGen.Store(maxGen + 1)
	return changed, nil
}

// MetaDamage describes damaged metadata records this open skipped (nil
// when the metadata was whole). The damaged log was kept aside as
// meta.log.damaged-*, data files the surviving metadata does not name
// were moved to quarantine/ instead of being deleted, and chunks with
// newer data than their metadata were marked corrupt. The storage service
// reports it; the target should be resynced from its chain.
func (e *Engine) MetaDamage() []string { return e.damage }

// keepDamagedLog records the damage, reports it loudly and keeps a copy
// of the damaged log for inspection before anything rewrites it.
func (e *Engine) keepDamagedLog(damage []string) error {
	e.damage = damage
	for _, d := range damage {
		e.log.Error("chunk metadata log is damaged; recovering the records around it", "target", e.dir, "damage", d)
	}
	src := filepath.Join(e.dir, logName)
	b, err := vfs.ReadFile(e.fs, src)
	if err != nil {
		return ioErr0(err, "read damaged %s", src)
	}
	dst := fmt.Sprintf("%s.damaged-%d", src, time.Now().UnixNano())
	if err := vfs.WriteFileSync(e.fs, dst, b, 0o644, !e.opts.NoSync); err != nil {
		return ioErr0(err, "keep damaged log as %s", dst)
	}
	e.log.Error("damaged chunk metadata log kept", "copy", dst)
	return nil
}

// quarantine moves a data file the metadata does not name to
// <dir>/quarantine instead of deleting it.
func (e *Engine) quarantine(p, name string) error {
	q := filepath.Join(e.dir, quarantineDir)
	if err := e.fs.MkdirAll(q, 0o755); err != nil {
		return ioErr0(err, "create %s", q)
	}
	if err := e.fs.Rename(p, filepath.Join(q, name)); err != nil {
		return ioErr0(err, "quarantine %s", p)
	}
	e.log.Error("data file not named by the surviving metadata quarantined", "file", p, "to", q)
	return nil
}

func (e *Engine) putLocked(c *chunk) {
	m := e.inodes[c.id.Inode]
	if m == nil {
		m = make(map[uint32]*chunk)
		e.inodes[c.id.Inode] = m
	}
	m[c.id.Index] = c
}

func (e *Engine) getLocked(id ChunkID) *chunk {
	return e.inodes[id.Inode][id.Index]
}

func (e *Engine) deleteLocked(c *chunk) {
	c.dead = true
	m := e.inodes[c.id.Inode]
	if m[c.id.Index] == c {
		delete(m, c.id.Index)
		if len(m) == 0 {
			delete(e.inodes, c.id.Inode)
		}
	}
}

// Close waits for background compaction and releases the target. Calls
// after Close return Unavailable.
func (e *Engine) Close() error {
	e.compactMu.Lock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.compactMu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.compactMu.Unlock()
	e.bg.Wait()
	return e.closeFiles()
}

func (e *Engine) closeFiles() error {
	e.fds.closeAll()
	var err error
	if e.mlog != nil {
		err = e.mlog.close()
	}
	e.dirMu.Lock()
	for _, d := range e.dataDirs {
		if d != nil {
			d.Close()
		}
	}
	e.dirMu.Unlock()
	if e.lockFile != nil {
		e.lockFile.Close() // releases the flock
	}
	return err
}

// Dir is the target directory.
func (e *Engine) Dir() string { return e.dir }

// data file names: data/<shard>/<inode hex 16>.<index hex 8>.<gen hex 16>

func dataShard(id ChunkID) int {
	h := id.Inode*0x9E3779B97F4A7C15 ^ uint64(id.Index)*0xC2B2AE3D27D4EB4F
	return int(h >> 56)
}

func dataName(id ChunkID, gen uint64) string {
	return fmt.Sprintf("%016x.%08x.%016x", id.Inode, id.Index, gen)
}

func parseDataName(name string) (ChunkID, uint64, bool) {
	parts := strings.Split(name, ".")
	if len(parts) != 3 || len(parts[0]) != 16 || len(parts[1]) != 8 || len(parts[2]) != 16 {
		return ChunkID{}, 0, false
	}
	ino, err1 := strconv.ParseUint(parts[0], 16, 64)
	idx, err2 := strconv.ParseUint(parts[1], 16, 32)
	gen, err3 := strconv.ParseUint(parts[2], 16, 64)
	if err1 != nil || err2 != nil || err3 != nil || gen == 0 {
		return ChunkID{}, 0, false
	}
	return ChunkID{Inode: ino, Index: uint32(idx)}, gen, true
}

// shardDir returns the open shard directory i, creating it on first use
// (making 256 directories up front costs a quarter second on some disks).
func (e *Engine) shardDir(i int) (vfs.File, error) {
	e.dirMu.Lock()
	defer e.dirMu.Unlock()
	if d := e.dataDirs[i]; d != nil {
		return d, nil
	}
	p := filepath.Join(e.dir, dataDir, fmt.Sprintf("%02x", i))
	if err := e.fs.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	if !e.opts.NoSync {
		if err := vfs.SyncDir(e.fs, filepath.Dir(p)); err != nil {
			return nil, err
		}
	}
	d, err := e.fs.OpenDir(p)
	if err != nil {
		return nil, err
	}
	e.dataDirs[i] = d
	return d, nil
}

func (e *Engine) dataPath(id ChunkID, gen uint64) string {
	return filepath.Join(e.dir, dataDir, fmt.Sprintf("%02x", dataShard(id)), dataName(id, gen))
}

// DataPath is the path of the file holding chunk id's committed content,
// or "" when the chunk has none. Tests and repair tools use it.
func (e *Engine) DataPath(id ChunkID) string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	c := e.getLocked(id)
	if c == nil || c.st.Committed.Gen == 0 {
		return ""
	}
	return e.dataPath(id, c.st.Committed.Gen)
}

// persist logs the new state of c (nil: deleted) durably, then installs it
// in memory. The caller holds c.upd.
func (e *Engine) persist(c *chunk, st *chunkState) error {
	var rec []byte
	if st == nil {
		rec = encodeDelete(nil, c.id)
	} else {
		rec = encodeSet(nil, c.id, st)
	}
	if err := e.appendDurable(rec); err != nil {
		return err
	}
	// c.st is stable: the caller holds c.upd, which every change takes.
	if st != nil && (st.Committed.Tag != c.st.Committed.Tag || st.Committed.Version != c.st.Committed.Version) {
		if o, ok := committedOutcome(c.id, st); ok {
			e.outcomes.note(o)
		}
	}
	e.mu.Lock()
	if st == nil {
		e.deleteLocked(c)
	} else {
		c.st = *st
		if e.getLocked(c.id) != c {
			e.putLocked(c)
		}
	}
	e.mu.Unlock()
	e.compactMu.RUnlock()
	e.maybeCompact()
	return nil
}

// appendDurable writes records to the metadata log and waits until they
// are on stable storage. On success it returns holding compactMu shared;
// the caller installs the new state in memory, then releases it.
func (e *Engine) appendDurable(rec []byte) error {
	e.compactMu.RLock()
	e.mu.RLock()
	closed := e.closed
	e.mu.RUnlock()
	if closed {
		e.compactMu.RUnlock()
		return errcode.New(errcode.Unavailable, "chunk engine %s is closed", e.dir)
	}
	seq, err := e.mlog.append(rec)
	if err != nil {
		// Nothing of rec is in the log (append cuts a failed write back).
		e.compactMu.RUnlock()
		return ioErr0(err, "chunk engine %s: metadata log append", e.dir)
	}
	if err := e.mlog.sync(seq); err != nil {
		e.compactMu.RUnlock()
		return &logUncertainError{ioErr0(err, "chunk engine %s: metadata log", e.dir)}
	}
	return nil
}

// logUncertainError is a metadata append whose record reached the log
// file but not, as far as we know, stable storage: the next open may or
// may not see it. The update is not acknowledged, yet the data its record
// names must stay where it is, since the record can still take effect.
type logUncertainError struct{ err error }

func (u *logUncertainError) Error() string { return u.err.Error() }
func (u *logUncertainError) Unwrap() error { return u.err }

func logUncertain(err error) bool {
	var u *logUncertainError
	return errors.As(err, &u)
}

func (e *Engine) maybeCompact() {
	if e.mlog.sizeNow() < e.opts.CompactBytes || !e.compacting.CompareAndSwap(false, true) {
		return
	}
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		defer e.compacting.Store(false)
		if err := e.compact(); err != nil {
			e.log.Error("metadata compaction failed", "err", err)
		}
	}()
}

// compact writes every chunk state to a new snapshot and empties the log.
func (e *Engine) compact() error {
	e.compactMu.Lock()
	defer e.compactMu.Unlock()
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		return nil
	}
	states := make(map[ChunkID]*chunkState)
	for _, m := range e.inodes {
		for _, c := range m {
			if c.exists() {
				s := c.st
				states[c.id] = &s
			}
		}
	}
	e.mu.RUnlock()
	if err := writeSnapshot(e.fs, e.dir, states, e.outcomes.list(), e.opts.NoSync); err != nil {
		return ioErr0(err, "write metadata snapshot")
	}
	// A crash here replays the old log over the new snapshot: harmless,
	// because records hold whole states and the snapshot already ends in
	// the state the log leads to.
	if err := e.mlog.reset(); err != nil {
		return ioErr0(err, "reset metadata log")
	}
	return nil
}

// lookup returns the chunk for id, or nil.
func (e *Engine) lookup(id ChunkID) (*chunk, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return nil, errcode.New(errcode.Unavailable, "chunk engine %s is closed", e.dir)
	}
	return e.getLocked(id), nil
}

// lockChunk returns chunk id with its update lock held, creating an empty
// placeholder when create is set and the chunk is unknown (nil otherwise).
func (e *Engine) lockChunk(id ChunkID, create bool) (*chunk, error) {
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return nil, errcode.New(errcode.Unavailable, "chunk engine %s is closed", e.dir)
		}
		c := e.getLocked(id)
		if c == nil {
			if !create {
				e.mu.Unlock()
				return nil, nil
			}
			c = &chunk{id: id}
			e.putLocked(c)
		}
		e.mu.Unlock()
		c.upd.Lock()
		if !c.dead {
			return c, nil
		}
		c.upd.Unlock()
	}
}

// unlockChunk releases c, dropping it from the map if it is an empty
// placeholder that a failed update left behind.
func (e *Engine) unlockChunk(c *chunk) {
	e.mu.Lock()
	if !c.exists() && !c.dead {
		e.deleteLocked(c)
	}
	e.mu.Unlock()
	c.upd.Unlock()
}

// Stat returns the metadata of chunk id.
func (e *Engine) Stat(id ChunkID) (ChunkMeta, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	c := e.getLocked(id)
	if c == nil || !c.exists() {
		return ChunkMeta{}, false
	}
	return c.meta(), true
}

// Dump returns the metadata of every chunk, sorted by id, for recovery.
func (e *Engine) Dump() []ChunkMeta {
	e.mu.RLock()
	out := make([]ChunkMeta, 0, 64)
	for _, m := range e.inodes {
		for _, c := range m {
			if c.exists() {
				out = append(out, c.meta())
			}
		}
	}
	e.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID.Less(out[j].ID) })
	return out
}

// QueryLastChunk returns the committed chunk of inode with the highest
// index and its committed length (the file length is index*chunkSize +
// length); found is false when the inode has no committed chunk here.
func (e *Engine) QueryLastChunk(inode uint64) (id ChunkID, length uint32, found bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for idx, c := range e.inodes[inode] {
		if c.st.Committed.Version == 0 {
			continue
		}
		if !found || idx > id.Index {
			id, length, found = c.id, c.st.Committed.Length, true
		}
	}
	return id, length, found
}

// SpaceInfo describes the space of a target.
type SpaceInfo struct {
	Capacity   uint64 // bytes of the file system holding the target
	Free       uint64 // bytes available to the engine
	Used       uint64 // bytes used on the file system (by anything)
	ChunkBytes uint64 // sum of committed chunk lengths
	Chunks     uint64 // number of chunks with a committed version
}

// SpaceInfo reports file system and chunk space of the target.
func (e *Engine) SpaceInfo() (SpaceInfo, error) {
	du, err := e.fs.DiskUsage(e.dir)
	if err != nil {
		return SpaceInfo{}, ioErr0(err, "disk usage of %s", e.dir)
	}
	si := SpaceInfo{Capacity: du.Capacity, Free: du.Free, Used: du.Used}
	e.mu.RLock()
	for _, m := range e.inodes {
		for _, c := range m {
			if c.st.Committed.Version != 0 {
				si.Chunks++
				si.ChunkBytes += uint64(c.st.Committed.Length)
			}
		}
	}
	e.mu.RUnlock()
	return si, nil
}
