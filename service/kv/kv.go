// Package kv is EmberFS's transactional key-value layer, modelled on
// FoundationDB: ordered byte keys, serializable optimistic transactions that
// are retried automatically on conflict, snapshot reads and explicit conflict
// keys. Metadata (service/meta) and cluster state (service/mgmtd) live here.
//
// Engines implement Engine; see docs/architecture.md ("Transactional KV") for
// exactly which conflicts each engine detects.
package kv

import (
	"context"
	"errors"
	"fmt"
)

// Portable size bounds: FoundationDB's limits, enforced by every engine so
// that code tested on the embedded engine also runs on FDB.
const (
	MaxKeySize   = 10_000
	MaxValueSize = 100_000
	// MaxTxnBytes bounds the bytes written by one transaction (FDB: 10 MB).
	MaxTxnBytes = 10_000_000
)

// SystemPrefix starts keys reserved for the engine itself (conflict markers);
// user keys may not begin with it, as in FoundationDB's \xff keyspace.
const SystemPrefix = "\xff"

var (
	// ErrConflict means a transaction lost an optimistic-concurrency race.
	// Transact retries it; it reaches callers only through ErrTooManyRetries.
	ErrConflict = errors.New("kv: transaction conflict")
	// ErrTooManyRetries wraps the last conflict once the retry bound is spent.
	ErrTooManyRetries = errors.New("kv: transaction retry limit reached")
	// ErrReadOnly is returned by writes inside ReadTransact.
	ErrReadOnly = errors.New("kv: write in a read-only transaction")
	// ErrKeyTooLarge, ErrValueTooLarge, ErrTxnTooLarge report size-limit violations.
	ErrKeyTooLarge   = errors.New("kv: key too large")
	ErrValueTooLarge = errors.New("kv: value too large")
	ErrTxnTooLarge   = errors.New("kv: transaction too large")
	// ErrEmptyKey and ErrReservedKey report keys that cannot be stored.
	ErrEmptyKey    = errors.New("kv: empty key")
	ErrReservedKey = errors.New("kv: key in the reserved system keyspace (starts with 0xff)")
	// ErrClosed is returned once the engine has been closed.
	ErrClosed = errors.New("kv: engine closed")
	// ErrTransient marks an engine error after which the transaction can
	// simply be run again (FDB: transaction_too_old, future_version,
	// process_behind...). Reads may return it; a transaction body must
	// return such an error to Transact unchanged or wrapped with %w, never
	// replace it, because Transact retries only what it recognises.
	// After the retry bound it reaches callers inside ErrTooManyRetries.
	ErrTransient = errors.New("kv: transient engine error")
	// ErrOutcomeUnknown means the commit was sent but the engine cannot
	// tell whether it was applied (FDB: commit_unknown_result without
	// idempotency, cluster_version_changed, a commit cancelled in flight).
	// Transact never re-runs the body after it: a blind retry would act
	// on the transaction's own effects (a create would find its own file).
	// Callers must not assume either outcome.
	ErrOutcomeUnknown = errors.New("kv: commit outcome unknown")
)

// KeyValue is one entry returned by a range read.
type KeyValue struct {
	Key   []byte
	Value []byte
}

// RangeOptions controls GetRange.
type RangeOptions struct {
	// Limit caps the number of entries returned; 0 means no limit.
	Limit int
	// Reverse returns entries from the end of the range backwards.
	Reverse bool
	// Snapshot reads add no read conflicts (FDB snapshot reads).
	Snapshot bool
}

// ReadTx is the read side of a transaction. All reads in one transaction see
// one consistent snapshot plus the transaction's own writes.
type ReadTx interface {
	// Get returns the value of key, or (nil, false, nil) if absent.
	Get(key []byte) (value []byte, found bool, err error)
	// SnapshotGet is Get without a read conflict.
	SnapshotGet(key []byte) (value []byte, found bool, err error)
	// GetRange returns keys in [begin, end) in key order (or reverse), up to
	// opts.Limit entries. An empty or inverted range returns nothing.
	GetRange(begin, end []byte, opts RangeOptions) ([]KeyValue, error)
	// ReadVersion is the snapshot version this transaction reads at.
	ReadVersion() uint64
}

// Tx is a read-write transaction.
type Tx interface {
	ReadTx
	Set(key, value []byte) error
	Clear(key []byte) error
	// ClearRange removes every key in [begin, end).
	ClearRange(begin, end []byte) error
	// AddReadConflictKey makes the transaction conflict with any concurrent
	// transaction that writes key (or declares a write conflict on it), as
	// if key had been read. Callers use it as a guard for ranges on engines
	// that do not detect phantoms.
	AddReadConflictKey(key []byte) error
	// AddWriteConflictKey makes concurrent transactions that read key (or
	// declared a read conflict on it) conflict with this one, without
	// changing key's value.
	AddWriteConflictKey(key []byte) error
}

// Engine is a transactional ordered key-value store.
type Engine interface {
	// Transact runs fn in a serializable transaction and commits it. On a
	// conflict, or when fn returns an error wrapping ErrTransient, fn is run
	// again (with backoff) up to the engine's retry bound; fn must therefore
	// have no side effects outside tx. Any other error returned by fn aborts
	// the transaction and is returned unchanged. ErrOutcomeUnknown means the
	// commit may or may not have been applied.
	Transact(ctx context.Context, fn func(tx Tx) error) error
	// ReadTransact runs fn on a read-only snapshot; fn is run again when it
	// returns an error wrapping ErrTransient.
	ReadTransact(ctx context.Context, fn func(tx ReadTx) error) error
	// Name identifies the engine in logs and docs ("badger", "memory", "fdb").
	Name() string
	Close() error
}

// CheckKey validates a user key against the portable limits.
func CheckKey(key []byte) error {
	switch {
	case len(key) == 0:
		return ErrEmptyKey
	case len(key) > MaxKeySize:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), MaxKeySize)
	case key[0] == SystemPrefix[0]:
		return fmt.Errorf("%w: key %q", ErrReservedKey, truncateForError(key))
	}
	return nil
}

// CheckValue validates a value against the portable limits.
func CheckValue(value []byte) error {
	if len(value) > MaxValueSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(value), MaxValueSize)
	}
	return nil
}

// CheckRangeKey validates a range bound: like CheckKey, but an end bound may
// be the first system key, so that "everything" is [\x00, \xff).
func CheckRangeKey(key []byte) error {
	if len(key) > MaxKeySize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), MaxKeySize)
	}
	if len(key) > 0 && key[0] == SystemPrefix[0] && len(key) > 1 {
		return fmt.Errorf("%w: range bound %q", ErrReservedKey, truncateForError(key))
	}
	return nil
}

func truncateForError(key []byte) []byte {
	if len(key) > 32 {
		return key[:32]
	}
	return key
}

// PrefixEnd returns the first key after every key that starts with prefix,
// for use as the end of a prefix range.
func PrefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte(SystemPrefix)
}
