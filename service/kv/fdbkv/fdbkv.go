//go:build fdb

package fdbkv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/apple/foundationdb/bindings/go/src/fdb"

	"github.com/emberfs/emberfs/service/kv"
)

// APIVersion is the FoundationDB API version selected; 730 is the newest the
// Go bindings support (FDB 7.3 clients and servers).
const APIVersion = 730

// FDB error codes this package interprets
// (https://apple.github.io/foundationdb/api-error-codes.html).
const (
	codeTransactionTooOld     = 1007
	codeFutureVersion         = 1009
	codeNotCommitted          = 1020 // a read conflict: the optimistic check failed
	codeCommitUnknownResult   = 1021
	codeTransactionCancelled  = 1025
	codeTransactionTimedOut   = 1031
	codeClusterVersionChanged = 1039
	codeProcessBehind         = 1037
	codeTagThrottled          = 1213
	codeKeyTooLarge           = 2102
	codeValueTooLarge         = 2103
	codeTransactionTooLarge   = 2101
)

// Options configure an Engine; zero values are the defaults.
type Options struct {
	// ClusterFile locates the cluster; "" is FDB's default
	// (/etc/foundationdb/fdb.cluster on Linux).
	ClusterFile string
	// MaxRetries bounds how often Transact re-runs a transaction after a
	// retryable error such as a conflict (default 100). FDB's onError
	// provides the backoff (exponential, capped at 1 s).
	MaxRetries int
	Logger     *slog.Logger
}

// Engine is a kv.Engine over one FoundationDB database.
type Engine struct {
	db          fdb.Database
	clusterFile string
	opts        Options
	closed      atomic.Bool
	wg          sync.WaitGroup // transactions in flight, so Close waits for them
}

var _ kv.Engine = (*Engine)(nil)

// The Go bindings cache one Database per cluster file and are not safe for
// concurrent opens; Close must destroy the shared handle only when its last
// Engine closes.
var (
	openMu   sync.Mutex
	openRefs = map[string]int{}
)

// Open connects to the cluster named by opts.ClusterFile. It selects API
// version 730 on first use; a process can hold only one API version.
func Open(opts Options) (*Engine, error) {
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 100
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	openMu.Lock()
	defer openMu.Unlock()
	if err := fdb.APIVersion(APIVersion); err != nil {
		return nil, fmt.Errorf("fdbkv: select FoundationDB API version %d: %w", APIVersion, err)
	}
	db, err := fdb.OpenDatabase(opts.ClusterFile)
	if err != nil {
		return nil, fmt.Errorf("fdbkv: open cluster file %q: %w", opts.ClusterFile, err)
	}
	openRefs[opts.ClusterFile]++
	opts.Logger.Info("opened FoundationDB", "cluster_file", opts.ClusterFile, "api_version", APIVersion)
	return &Engine{db: db, clusterFile: opts.ClusterFile, opts: opts}, nil
}

// Name reports "fdb".
func (e *Engine) Name() string { return "fdb" }

// Close waits for running transactions and releases the database handle.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	e.wg.Wait()
	openMu.Lock()
	defer openMu.Unlock()
	if openRefs[e.clusterFile]--; openRefs[e.clusterFile] <= 0 {
		delete(openRefs, e.clusterFile)
		e.db.Close()
	}
	return nil
}

func (e *Engine) begin() error {
	e.wg.Add(1)
	if e.closed.Load() {
		e.wg.Done()
		return kv.ErrClosed
	}
	return nil
}

// Transact runs fn in an FDB transaction with its own retry loop (the
// binding's db.Transact would re-run fn after any retryable error,
// commit_unknown_result included, so a create could find its own file and
// report EEXIST). The loop:
//
//   - sets automatic_idempotency, so the client resolves a commit whose
//     reply was lost by checking whether the transaction's idempotency id
//     committed, instead of failing with commit_unknown_result;
//   - never re-runs fn after a commit that may have been applied
//     (maybeCommitted): it returns kv.ErrOutcomeUnknown instead;
//   - otherwise lets tr.OnError decide: it backs off and resets the
//     transaction for retryable errors (read errors that fn passed on among
//     them) until the retry limit, and returns the error for the rest.
//
// Cancelling ctx cancels the FDB transaction.
func (e *Engine) Transact(ctx context.Context, fn func(tx kv.Tx) error) error {
	if err := e.begin(); err != nil {
		return err
	}
	defer e.wg.Done()
	if err := ctx.Err(); err != nil {
		return err
	}
	tr, err := e.db.CreateTransaction()
	if err != nil {
		return fmt.Errorf("fdbkv: create transaction: %w", err)
	}
	// Options survive OnError from API version 610 on.
	if err := tr.Options().SetRetryLimit(int64(e.opts.MaxRetries)); err != nil {
		return fmt.Errorf("fdbkv: set retry limit: %w", err)
	}
	if err := tr.Options().SetAutomaticIdempotency(); err != nil {
		return fmt.Errorf("fdbkv: set automatic idempotency: %w", err)
	}
	stop := context.AfterFunc(ctx, tr.Cancel)
	defer stop()
	for attempts := 1; ; attempts++ {
		if err := ctx.Err(); err != nil {
			return err // no commit of this attempt was sent
		}
		t := &tx{tr: tr}
		err := fn(t)
		if err == nil {
			err = t.err
		}
		committing := err == nil
		if committing {
			if err = tr.Commit().Get(); err == nil {
				return nil
			}
		}
		var fe fdb.Error
		if !errors.As(err, &fe) {
			return err // fn's own error: abort, returned unchanged
		}
		if committing && maybeCommitted(fe.Code) {
			e.opts.Logger.Warn("FoundationDB commit outcome unknown", "code", fe.Code, "attempt", attempts, "err", err)
			return fmt.Errorf("%w: fdbkv: commit attempt %d: %w", kv.ErrOutcomeUnknown, attempts, err)
		}
		if oerr := tr.OnError(fe).Get(); oerr != nil {
			return e.mapError(ctx, oerr, attempts)
		}
	}
}

// maybeCommitted lists the commit errors after which the transaction may
// have been applied, FDB's own FDB_ERROR_PREDICATE_MAYBE_COMMITTED
// (commit_unknown_result, cluster_version_changed) plus a commit cancelled
// or timed out in flight: the request may already be at the proxies. With
// automatic idempotency commit_unknown_result should not reach us; it is
// kept here so that a client that ignores the option still never retries
// blindly.
func maybeCommitted(code int) bool {
	switch code {
	case codeCommitUnknownResult, codeClusterVersionChanged, codeTransactionCancelled, codeTransactionTimedOut:
		return true
	}
	return false
}

// ReadTransact runs fn on a read-only FDB transaction; FDB read-only
// transactions never conflict, so only transient errors are retried.
func (e *Engine) ReadTransact(ctx context.Context, fn func(tx kv.ReadTx) error) error {
	if err := e.begin(); err != nil {
		return err
	}
	defer e.wg.Done()
	if err := ctx.Err(); err != nil {
		return err
	}
	attempts := 0
	var stop func() bool
	_, err := e.db.ReadTransact(func(rt fdb.ReadTransaction) (any, error) {
		attempts++
		if attempts == 1 {
			if err := rt.Options().SetRetryLimit(int64(e.opts.MaxRetries)); err != nil {
				return nil, err
			}
			stop = context.AfterFunc(ctx, rt.Cancel)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, fn(&readTx{rt: rt})
	})
	if stop != nil {
		stop()
	}
	return e.mapError(ctx, err, attempts)
}

// mapError turns what db.Transact returned into kv's errors. Errors that
// are not FDB errors came from fn (or ctx) and pass through unchanged.
func (e *Engine) mapError(ctx context.Context, err error, attempts int) error {
	if err == nil {
		return nil
	}
	var fe fdb.Error
	if !errors.As(err, &fe) {
		return err
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr // cancellation surfaces as transaction_cancelled
	}
	switch fe.Code {
	case codeNotCommitted:
		return fmt.Errorf("%w after %d attempts: %w (%w)", kv.ErrTooManyRetries, attempts, kv.ErrConflict, err)
	case codeTransactionTooOld, codeFutureVersion, codeProcessBehind, codeTagThrottled:
		return fmt.Errorf("%w after %d attempts: %w (%w)", kv.ErrTooManyRetries, attempts, kv.ErrTransient, err)
	case codeCommitUnknownResult, codeClusterVersionChanged:
		// Only reachable from a read-only ReadTransact, which commits
		// nothing; kept so such a code is never reported as "not committed".
		return fmt.Errorf("%w: %w", kv.ErrOutcomeUnknown, err)
	case codeTransactionTooLarge:
		return fmt.Errorf("%w: %w", kv.ErrTxnTooLarge, err)
	case codeKeyTooLarge:
		return fmt.Errorf("%w: %w", kv.ErrKeyTooLarge, err)
	case codeValueTooLarge:
		return fmt.Errorf("%w: %w", kv.ErrValueTooLarge, err)
	case codeTransactionCancelled:
		return fmt.Errorf("fdbkv: transaction cancelled: %w", err)
	}
	e.opts.Logger.Warn("FoundationDB transaction failed", "code", fe.Code, "err", err)
	return fmt.Errorf("fdbkv: %w", err)
}

// reader holds what tx and readTx share.
type reader interface {
	Get(key fdb.KeyConvertible) fdb.FutureByteSlice
	GetRange(r fdb.Range, options fdb.RangeOptions) fdb.RangeResult
	GetReadVersion() fdb.FutureInt64
}

func get(r reader, key []byte) ([]byte, bool, error) {
	if err := kv.CheckKey(key); err != nil {
		return nil, false, err
	}
	v, err := r.Get(fdb.Key(key)).Get()
	if err != nil {
		return nil, false, readError("get", err)
	}
	return v, v != nil, nil // the bindings return nil only for absent keys
}

func getRange(r reader, begin, end []byte, opts kv.RangeOptions) ([]kv.KeyValue, error) {
	if err := checkRange(begin, end); err != nil {
		return nil, err
	}
	if bytes.Compare(begin, end) >= 0 {
		return nil, nil // FDB rejects inverted ranges; kv returns nothing
	}
	rng := fdb.KeyRange{Begin: fdb.Key(begin), End: fdb.Key(end)}
	ropts := fdb.RangeOptions{Limit: max(opts.Limit, 0), Reverse: opts.Reverse, Mode: fdb.StreamingModeWantAll}
	kvs, err := r.GetRange(rng, ropts).GetSliceWithError()
	if err != nil {
		return nil, readError("get range", err)
	}
	out := make([]kv.KeyValue, len(kvs))
	for i, p := range kvs {
		out[i] = kv.KeyValue{Key: p.Key, Value: p.Value}
	}
	return out, nil
}

// readError wraps a failed read. Retryable FDB errors also wrap
// kv.ErrTransient, so engine-neutral callers can tell them apart; the
// fdb.Error stays in the chain for Transact's OnError. Callers must pass it
// on (see kv.ErrTransient), or the transaction is not retried.
func readError(op string, err error) error {
	var fe fdb.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case codeTransactionTooOld, codeFutureVersion, codeProcessBehind, codeTagThrottled:
			return fmt.Errorf("fdbkv: %s: %w (%w)", op, kv.ErrTransient, err)
		}
	}
	return fmt.Errorf("fdbkv: %s: %w", op, err)
}

func readVersion(r reader) (uint64, error) {
	v, err := r.GetReadVersion().Get()
	if err != nil {
		return 0, fmt.Errorf("fdbkv: read version: %w", err)
	}
	return uint64(v), nil
}

func checkRange(begin, end []byte) error {
	if err := kv.CheckRangeKey(begin); err != nil {
		return fmt.Errorf("range begin: %w", err)
	}
	if err := kv.CheckRangeKey(end); err != nil {
		return fmt.Errorf("range end: %w", err)
	}
	return nil
}

// tx is one attempt of a read-write transaction.
type tx struct {
	tr    fdb.Transaction
	bytes int
	err   error // first failed write or read version: fails the commit even if fn ignored it
}

func (t *tx) fail(err error) error {
	if t.err == nil {
		t.err = err
	}
	return err
}

func (t *tx) ReadVersion() uint64 {
	v, err := readVersion(t.tr)
	if err != nil {
		t.fail(err)
	}
	return v
}

func (t *tx) Get(key []byte) ([]byte, bool, error) { return get(t.tr, key) }

func (t *tx) SnapshotGet(key []byte) ([]byte, bool, error) { return get(t.tr.Snapshot(), key) }

func (t *tx) GetRange(begin, end []byte, opts kv.RangeOptions) ([]kv.KeyValue, error) {
	if opts.Snapshot {
		return getRange(t.tr.Snapshot(), begin, end, opts)
	}
	return getRange(t.tr, begin, end, opts)
}

// count tracks the bytes written so that an oversized transaction fails with
// kv.ErrTxnTooLarge at the write that crosses the bound, as on Badger.
func (t *tx) count(n int) error {
	if t.err != nil {
		return t.err
	}
	if t.bytes+n > kv.MaxTxnBytes {
		return t.fail(fmt.Errorf("%w: over %d bytes written", kv.ErrTxnTooLarge, kv.MaxTxnBytes))
	}
	t.bytes += n
	return nil
}

func (t *tx) Set(key, value []byte) error {
	if err := kv.CheckKey(key); err != nil {
		return t.fail(err)
	}
	if err := kv.CheckValue(value); err != nil {
		return t.fail(err)
	}
	if err := t.count(len(key) + len(value)); err != nil {
		return err
	}
	t.tr.Set(fdb.Key(key), value) // the C client copies key and value
	return nil
}

func (t *tx) Clear(key []byte) error {
	if err := kv.CheckKey(key); err != nil {
		return t.fail(err)
	}
	if err := t.count(len(key)); err != nil {
		return err
	}
	t.tr.Clear(fdb.Key(key))
	return nil
}

func (t *tx) ClearRange(begin, end []byte) error {
	if err := checkRange(begin, end); err != nil {
		return t.fail(err)
	}
	if bytes.Compare(begin, end) >= 0 {
		return nil // FDB would fail the commit with inverted_range
	}
	if err := t.count(len(begin) + len(end)); err != nil {
		return err
	}
	t.tr.ClearRange(fdb.KeyRange{Begin: fdb.Key(begin), End: fdb.Key(end)})
	return nil
}

func (t *tx) AddReadConflictKey(key []byte) error {
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	if err := t.tr.AddReadConflictKey(fdb.Key(key)); err != nil {
		return fmt.Errorf("fdbkv: add read conflict: %w", err)
	}
	return nil
}

func (t *tx) AddWriteConflictKey(key []byte) error {
	if err := kv.CheckKey(key); err != nil {
		return t.fail(err)
	}
	if err := t.tr.AddWriteConflictKey(fdb.Key(key)); err != nil {
		return t.fail(fmt.Errorf("fdbkv: add write conflict: %w", err))
	}
	return nil
}

// readTx serves ReadTransact. It has kv.Tx's write methods only to refuse
// them, for callers that type-assert.
type readTx struct{ rt fdb.ReadTransaction }

func (r *readTx) ReadVersion() uint64 {
	v, _ := readVersion(r.rt) // 0 on error; the next read reports the error
	return v
}

func (r *readTx) Get(key []byte) ([]byte, bool, error) { return get(r.rt, key) }

func (r *readTx) SnapshotGet(key []byte) ([]byte, bool, error) { return get(r.rt.Snapshot(), key) }

func (r *readTx) GetRange(begin, end []byte, opts kv.RangeOptions) ([]kv.KeyValue, error) {
	if opts.Snapshot {
		return getRange(r.rt.Snapshot(), begin, end, opts)
	}
	return getRange(r.rt, begin, end, opts)
}

func (r *readTx) Set(_, _ []byte) error            { return kv.ErrReadOnly }
func (r *readTx) Clear([]byte) error               { return kv.ErrReadOnly }
func (r *readTx) ClearRange(_, _ []byte) error     { return kv.ErrReadOnly }
func (r *readTx) AddReadConflictKey([]byte) error  { return kv.ErrReadOnly }
func (r *readTx) AddWriteConflictKey([]byte) error { return kv.ErrReadOnly }

var _ kv.Tx = (*readTx)(nil)
