// Package badgerkv is the embedded kv.Engine over Badger (github.com/dgraph-io/badger/v4),
// EmberFS's default metadata and cluster-state store.
//
// Badger runs in managed mode: this package owns the timestamp oracle, which
// lets a transaction open a second, conflict-free reader at exactly its own
// read version (FoundationDB-style snapshot reads) and lets commits be
// group-committed while conflict checks stay strictly ordered.
//
// Conflicts detected (see docs/kv.md): a transaction conflicts when a key it
// read with Get, a key returned to it by GetRange, or a key named in
// AddReadConflictKey was written by a transaction that committed after its
// read version. Inserts into a scanned range that the scan did not return
// (phantoms) are not detected; callers guard such ranges with conflict keys.
package badgerkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/emberfs/emberfs/service/kv"
)

// Options tunes an Engine; the zero value gives the defaults.
type Options struct {
	// MaxRetries bounds how often Transact re-runs a conflicting transaction
	// (default 100).
	MaxRetries int
	// InitialBackoff and MaxBackoff shape the jittered exponential backoff
	// between retries (defaults 1 ms and 100 ms).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// MemTableSize and BlockCacheSize override Badger's memory use (defaults
	// 72 MiB and 64 MiB). Badger caps a transaction at 15% of the memtable,
	// so 72 MiB is the smallest that admits kv.MaxTxnBytes (10 MB).
	MemTableSize   int64
	BlockCacheSize int64
	Logger         *slog.Logger
}

func (o *Options) setDefaults() {
	if o.MaxRetries <= 0 {
		o.MaxRetries = 100
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 100 * time.Millisecond
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = 72 << 20
	}
	if o.BlockCacheSize <= 0 {
		o.BlockCacheSize = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Engine is a kv.Engine backed by Badger.
type Engine struct {
	db     *badger.DB
	name   string
	opts   Options
	closed atomic.Bool
	oracle oracle
	wg     sync.WaitGroup // transactions in flight, so Close waits for them
	// gsync makes commits durable, many per fsync (groupsync.go); nil in
	// memory. wal is the fsync it runs.
	gsync *groupSync
	wal   *walSyncer
}

var _ kv.Engine = (*Engine)(nil)

// Open opens (or creates) a durable engine in dir. Every acknowledged commit
// is fsynced; concurrent commits share one fsync (group commit, see
// groupsync.go: Badger's own SyncWrites would fsync once per commit).
func Open(dir string, opts Options) (*Engine, error) {
	if dir == "" {
		return nil, errors.New("badgerkv: empty data directory")
	}
	e, err := open(badger.DefaultOptions(dir).WithSyncWrites(false), "badger", opts)
	if err != nil {
		return nil, err
	}
	e.wal = newWALSyncer(dir)
	e.gsync = newGroupSync(e.wal.sync)
	return e, nil
}

// OpenMemory opens an engine that keeps everything in memory (for tests).
func OpenMemory(opts Options) (*Engine, error) {
	return open(badger.DefaultOptions("").WithInMemory(true), "memory", opts)
}

func open(bopts badger.Options, name string, opts Options) (*Engine, error) {
	opts.setDefaults()
	bopts = bopts.
		WithLogger(badgerLogger{opts.Logger}).
		WithMemTableSize(opts.MemTableSize).
		WithBlockCacheSize(opts.BlockCacheSize).
		WithNumCompactors(2).
		WithDetectConflicts(true)
	if !bopts.InMemory {
		bopts = bopts.WithValueLogFileSize(256 << 20)
	}
	db, err := badger.OpenManaged(bopts)
	if err != nil {
		return nil, fmt.Errorf("badgerkv: open %q: %w", bopts.Dir, err)
	}
	e := &Engine{db: db, name: name, opts: opts}
	e.oracle.init(db, db.MaxVersion())
	return e, nil
}

// Name reports "badger" or "memory".
func (e *Engine) Name() string { return e.name }

// Close waits for running transactions and closes the database.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	e.wg.Wait()
	err := e.db.Close()
	if e.wal != nil {
		e.wal.close()
	}
	return err
}

func (e *Engine) begin() error {
	e.wg.Add(1)
	if e.closed.Load() {
		e.wg.Done()
		return kv.ErrClosed
	}
	return nil
}

// Transact runs fn in a serializable transaction, retrying on conflict.
func (e *Engine) Transact(ctx context.Context, fn func(tx kv.Tx) error) error {
	if err := e.begin(); err != nil {
		return err
	}
	defer e.wg.Done()
	backoff := e.opts.InitialBackoff
	var lastErr error
	for attempt := 0; attempt <= e.opts.MaxRetries; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		commitTs, err := e.attempt(fn)
		if err == nil || !retryable(err) {
			return err
		}
		lastErr = err
		if commitTs > 0 {
			// The commit we lost to has a lower timestamp but may still be
			// writing; reading before it lands would only conflict again.
			e.oracle.waitDone(commitTs - 1)
		}
		if err := e.sleep(ctx, &backoff); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w after %d attempts: %w", kv.ErrTooManyRetries, e.opts.MaxRetries+1, lastErr)
}

// attempt runs fn once and commits; on a conflict it also returns the
// timestamp the commit was given.
func (e *Engine) attempt(fn func(tx kv.Tx) error) (uint64, error) {
	readTs := e.oracle.beginRead()
	defer e.oracle.endRead(readTs)
	t := &tx{
		engine: e,
		readTs: readTs,
		txn:    e.db.NewTransactionAt(readTs, true),
		writes: map[string]*write{},
	}
	defer t.discard()
	if err := fn(t); err != nil {
		return 0, err
	}
	if t.err != nil {
		return 0, t.err
	}
	if len(t.writes) == 0 {
		return 0, nil // read-only: its snapshot is already serializable
	}
	ts, err := e.oracle.commit(t.txn)
	if err == nil && e.gsync != nil {
		if serr := e.gsync.wait(); serr != nil {
			// Written to the log, visible to later transactions, but not
			// known to be on disk: neither outcome can be promised.
			return ts, fmt.Errorf("%w: badgerkv: commit written but its fsync failed: %w", kv.ErrOutcomeUnknown, serr)
		}
	}
	return ts, err
}

// ReadTransact runs fn on a read-only snapshot; there is nothing to retry.
func (e *Engine) ReadTransact(ctx context.Context, fn func(tx kv.ReadTx) error) error {
	if err := e.begin(); err != nil {
		return err
	}
	defer e.wg.Done()
	if err := ctx.Err(); err != nil {
		return err
	}
	backoff := e.opts.InitialBackoff
	var lastErr error
	for attempt := 0; attempt <= e.opts.MaxRetries; attempt++ {
		if attempt > 0 {
			if err := e.sleep(ctx, &backoff); err != nil {
				return err
			}
		}
		err := e.readAttempt(fn)
		if err == nil || !errors.Is(err, kv.ErrTransient) {
			return err
		}
		lastErr = err
	}
	return fmt.Errorf("%w after %d attempts: %w", kv.ErrTooManyRetries, e.opts.MaxRetries+1, lastErr)
}

func (e *Engine) readAttempt(fn func(tx kv.ReadTx) error) error {
	readTs := e.oracle.beginRead()
	defer e.oracle.endRead(readTs)
	r := &readOnlyTx{snap: snapshot{txn: e.db.NewTransactionAt(readTs, false)}, readTs: readTs}
	defer r.snap.txn.Discard()
	return fn(r)
}

// retryable reports whether Transact runs the body again after err: a lost
// conflict check, or a transient read error the body passed on
// (kv.ErrTransient; Badger's own reads never fail that way, but wrappers
// such as kvfault inject them the way FoundationDB returns them).
func retryable(err error) bool {
	return errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrTransient)
}

// sleep waits a jittered exponential backoff step, or until ctx ends.
func (e *Engine) sleep(ctx context.Context, backoff *time.Duration) error {
	// Full jitter keeps colliding retriers from colliding again.
	t := time.NewTimer(time.Duration(rand.Int64N(int64(*backoff)) + 1))
	defer t.Stop()
	*backoff = min(*backoff*2, e.opts.MaxBackoff)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// oracle hands out read and commit timestamps. Commit timestamps are
// assigned and Badger's conflict check runs under one mutex, so the check
// of a later timestamp always sees every earlier commit; the writes
// themselves proceed concurrently (and are group-committed by Badger).
type oracle struct {
	db       *badger.DB
	commitMu sync.Mutex
	nextTs   uint64 // guarded by commitMu

	mu        sync.Mutex
	doneUntil uint64          // every commit <= doneUntil has finished
	finished  map[uint64]bool // finished commits above doneUntil
	advanced  sync.Cond       // signalled when doneUntil moves
	readers   map[uint64]int  // active read timestamps, for Badger's discard point
	commits   int

	discardMu   sync.Mutex
	lastDiscard uint64 // Badger requires its discard point never to go back
}

func (o *oracle) init(db *badger.DB, maxVersion uint64) {
	o.db = db
	o.nextTs = maxVersion + 1
	o.doneUntil = maxVersion
	o.finished = map[uint64]bool{}
	o.readers = map[uint64]int{}
	o.advanced.L = &o.mu
}

func (o *oracle) beginRead() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	ts := o.doneUntil
	o.readers[ts]++
	return ts
}

func (o *oracle) endRead(ts uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.readers[ts]--; o.readers[ts] <= 0 {
		delete(o.readers, ts)
	}
}

func (o *oracle) commit(txn *badger.Txn) (uint64, error) {
	done := make(chan error, 1)
	o.commitMu.Lock()
	ts := o.nextTs
	o.nextTs++
	// With a callback, CommitAt checks conflicts and queues the writes
	// synchronously, then reports the outcome of the write asynchronously.
	err := txn.CommitAt(ts, func(err error) { done <- err })
	o.commitMu.Unlock()
	if err == nil {
		err = <-done
	}
	o.finish(ts)
	if err == nil {
		// Acknowledge only once every earlier commit has landed too, so any
		// transaction begun after Transact returns reads this write.
		o.waitDone(ts)
	}
	switch {
	case errors.Is(err, badger.ErrConflict):
		return ts, kv.ErrConflict
	case errors.Is(err, badger.ErrTxnTooBig):
		return ts, kv.ErrTxnTooLarge
	case err != nil:
		return ts, fmt.Errorf("badgerkv: commit: %w", err)
	}
	return ts, nil
}

// waitDone blocks until every commit at or below ts has finished.
func (o *oracle) waitDone(ts uint64) {
	o.mu.Lock()
	for o.doneUntil < ts {
		o.advanced.Wait()
	}
	o.mu.Unlock()
}

func (o *oracle) finish(ts uint64) {
	o.mu.Lock()
	o.finished[ts] = true
	for o.finished[o.doneUntil+1] {
		delete(o.finished, o.doneUntil+1)
		o.doneUntil++
	}
	o.advanced.Broadcast()
	o.commits++
	var discard uint64
	if o.commits%64 == 0 {
		// Badger may drop versions below the oldest active reader, and
		// forgets committed write sets below it (bounding conflict checks).
		discard = o.doneUntil
		for r := range o.readers {
			discard = min(discard, r)
		}
	}
	o.mu.Unlock()
	if discard > 0 {
		o.discardMu.Lock()
		if discard > o.lastDiscard {
			o.db.SetDiscardTs(discard)
			o.lastDiscard = discard
		}
		o.discardMu.Unlock()
	}
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) { b.l.Error(fmt.Sprintf(f, a...), "engine", "badger") }
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(fmt.Sprintf(f, a...), "engine", "badger")
}
func (b badgerLogger) Infof(string, ...any)  {}
func (b badgerLogger) Debugf(string, ...any) {}
