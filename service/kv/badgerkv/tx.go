package badgerkv

import (
	"bytes"
	"errors"
	"fmt"
	"sort"

	"github.com/dgraph-io/badger/v4"

	"github.com/emberfs/emberfs/service/kv"
)

// write is a buffered mutation, kept beside Badger's own pending writes so
// that snapshot reads (which must not touch the conflict-tracked Badger
// transaction) still see the transaction's own writes.
type write struct {
	value   []byte
	deleted bool
}

type tx struct {
	engine *Engine
	readTs uint64
	txn    *badger.Txn // conflict-tracked reads and the writes
	snap   snapshot    // conflict-free reads at readTs, opened on first use
	writes map[string]*write
	bytes  int
	err    error // first write error; fails the commit even if fn ignored it
}

func (t *tx) discard() {
	t.txn.Discard()
	if t.snap.txn != nil {
		t.snap.txn.Discard()
	}
}

func (t *tx) ReadVersion() uint64 { return t.readTs }

func (t *tx) Get(key []byte) ([]byte, bool, error) {
	if err := kv.CheckKey(key); err != nil {
		return nil, false, err
	}
	return getItem(t.txn, key)
}

func (t *tx) SnapshotGet(key []byte) ([]byte, bool, error) {
	if err := kv.CheckKey(key); err != nil {
		return nil, false, err
	}
	if w, ok := t.writes[string(key)]; ok {
		if w.deleted {
			return nil, false, nil
		}
		return bytes.Clone(w.value), true, nil
	}
	return getItem(t.snapshot(), key)
}

func (t *tx) snapshot() *badger.Txn {
	if t.snap.txn == nil {
		t.snap.txn = t.engine.db.NewTransactionAt(t.readTs, false)
	}
	return t.snap.txn
}

func (t *tx) GetRange(begin, end []byte, opts kv.RangeOptions) ([]kv.KeyValue, error) {
	if err := checkRange(begin, end); err != nil {
		return nil, err
	}
	if !opts.Snapshot {
		// Badger merges the pending writes into the iterator and records
		// every returned key as read.
		return scan(t.txn, begin, end, opts)
	}
	return t.snapshotRange(begin, end, opts)
}

// snapshotRange merges a conflict-free scan at readTs with the buffered writes.
func (t *tx) snapshotRange(begin, end []byte, opts kv.RangeOptions) ([]kv.KeyValue, error) {
	var own []string
	for k := range t.writes {
		if k >= string(begin) && k < string(end) {
			own = append(own, k)
		}
	}
	if len(own) == 0 {
		return scan(t.snapshot(), begin, end, opts)
	}
	sort.Strings(own)
	if opts.Reverse {
		for i, j := 0, len(own)-1; i < j; i, j = i+1, j-1 {
			own[i], own[j] = own[j], own[i]
		}
	}
	// Stored keys shadowed by own writes are skipped, so scan without a limit
	// and cut afterwards; own writes are few, so this stays cheap.
	stored, err := scan(t.snapshot(), begin, end, kv.RangeOptions{Reverse: opts.Reverse})
	if err != nil {
		return nil, err
	}
	before := func(a, b string) bool {
		if opts.Reverse {
			return a > b
		}
		return a < b
	}
	var out []kv.KeyValue
	i, j := 0, 0
	for (i < len(stored) || j < len(own)) && (opts.Limit <= 0 || len(out) < opts.Limit) {
		switch {
		case j >= len(own) || (i < len(stored) && before(string(stored[i].Key), own[j])):
			out = append(out, stored[i])
			i++
		default:
			if i < len(stored) && string(stored[i].Key) == own[j] {
				i++ // shadowed by own write
			}
			if w := t.writes[own[j]]; !w.deleted {
				out = append(out, kv.KeyValue{Key: []byte(own[j]), Value: bytes.Clone(w.value)})
			}
			j++
		}
	}
	return out, nil
}

func (t *tx) Set(key, value []byte) error {
	if err := kv.CheckKey(key); err != nil {
		return t.fail(err)
	}
	if err := kv.CheckValue(value); err != nil {
		return t.fail(err)
	}
	return t.put(key, value, false)
}

func (t *tx) Clear(key []byte) error {
	if err := kv.CheckKey(key); err != nil {
		return t.fail(err)
	}
	return t.put(key, nil, true)
}

// ClearRange deletes every key in [begin, end) that exists at the read
// version or was written by this transaction. Keys inserted concurrently by
// transactions that commit after our read version survive; see docs/kv.md.
func (t *tx) ClearRange(begin, end []byte) error {
	if err := checkRange(begin, end); err != nil {
		return t.fail(err)
	}
	kvs, err := t.snapshotRange(begin, end, kv.RangeOptions{})
	if err != nil {
		return err
	}
	for _, e := range kvs {
		if err := t.put(e.Key, nil, true); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) AddReadConflictKey(key []byte) error {
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	// Badger records a read on Get whether or not the key exists.
	_, _, err := getItem(t.txn, key)
	return err
}

// AddWriteConflictKey rewrites key with its current value (or a tombstone
// if absent): Badger tracks write conflicts only through writes, and an
// unchanged rewrite is invisible to readers. Unlike FoundationDB this also
// reads key, so two transactions that both declare a write conflict on one
// key conflict with each other (an extra retry, never a wrong result).
func (t *tx) AddWriteConflictKey(key []byte) error {
	if err := kv.CheckKey(key); err != nil {
		return t.fail(err)
	}
	if _, ok := t.writes[string(key)]; ok {
		return nil // already written, already a write conflict
	}
	// Read through the tracked transaction: if someone else writes key
	// before we commit, we must retry rather than write back a stale value.
	v, found, err := getItem(t.txn, key)
	if err != nil {
		return err
	}
	return t.put(key, v, !found)
}

func (t *tx) put(key, value []byte, deleted bool) error {
	if t.err != nil {
		return t.err
	}
	size := len(key) + len(value)
	if t.bytes+size > kv.MaxTxnBytes {
		return t.fail(fmt.Errorf("%w: over %d bytes written", kv.ErrTxnTooLarge, kv.MaxTxnBytes))
	}
	key = bytes.Clone(key)
	var err error
	if deleted {
		err = t.txn.Delete(key)
	} else {
		value = bytes.Clone(value)
		if value == nil {
			value = []byte{}
		}
		err = t.txn.Set(key, value)
	}
	if errors.Is(err, badger.ErrTxnTooBig) {
		return t.fail(fmt.Errorf("%w: %v", kv.ErrTxnTooLarge, err))
	}
	if err != nil {
		return t.fail(fmt.Errorf("badgerkv: write: %w", err))
	}
	t.bytes += size
	t.writes[string(key)] = &write{value: value, deleted: deleted}
	return nil
}

func (t *tx) fail(err error) error {
	if t.err == nil {
		t.err = err
	}
	return err
}

// readOnlyTx serves ReadTransact.
type readOnlyTx struct {
	snap   snapshot
	readTs uint64
}

type snapshot struct{ txn *badger.Txn }

func (r *readOnlyTx) ReadVersion() uint64 { return r.readTs }

func (r *readOnlyTx) Get(key []byte) ([]byte, bool, error) {
	if err := kv.CheckKey(key); err != nil {
		return nil, false, err
	}
	return getItem(r.snap.txn, key)
}

func (r *readOnlyTx) SnapshotGet(key []byte) ([]byte, bool, error) { return r.Get(key) }

func (r *readOnlyTx) GetRange(begin, end []byte, opts kv.RangeOptions) ([]kv.KeyValue, error) {
	if err := checkRange(begin, end); err != nil {
		return nil, err
	}
	return scan(r.snap.txn, begin, end, opts)
}

// Writes in a read-only transaction are refused; ReadTransact hands out a
// kv.ReadTx, so these exist only for callers that type-assert to kv.Tx.
func (r *readOnlyTx) Set(_, _ []byte) error                { return kv.ErrReadOnly }
func (r *readOnlyTx) Clear([]byte) error                   { return kv.ErrReadOnly }
func (r *readOnlyTx) ClearRange(_, _ []byte) error         { return kv.ErrReadOnly }
func (r *readOnlyTx) AddReadConflictKey([]byte) error      { return kv.ErrReadOnly }
func (r *readOnlyTx) AddWriteConflictKey(key []byte) error { return kv.ErrReadOnly }

func getItem(txn *badger.Txn, key []byte) ([]byte, bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("badgerkv: get: %w", err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, false, fmt.Errorf("badgerkv: read value: %w", err)
	}
	return v, true, nil
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

// scan reads [begin, end) from txn in order (or reverse), up to opts.Limit.
func scan(txn *badger.Txn, begin, end []byte, opts kv.RangeOptions) ([]kv.KeyValue, error) {
	if bytes.Compare(begin, end) >= 0 {
		return nil, nil
	}
	iopts := badger.DefaultIteratorOptions
	iopts.Reverse = opts.Reverse
	if opts.Limit > 0 && opts.Limit < iopts.PrefetchSize {
		iopts.PrefetchSize = opts.Limit
	}
	it := txn.NewIterator(iopts)
	defer it.Close()
	var out []kv.KeyValue
	if opts.Reverse {
		it.Seek(end) // first key <= end
	} else {
		it.Seek(begin)
	}
	for ; it.Valid(); it.Next() {
		if opts.Limit > 0 && len(out) >= opts.Limit {
			break
		}
		k := it.Item().KeyCopy(nil)
		if opts.Reverse {
			if bytes.Equal(k, end) {
				continue
			}
			if bytes.Compare(k, begin) < 0 {
				break
			}
		} else if bytes.Compare(k, end) >= 0 {
			break
		}
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return nil, fmt.Errorf("badgerkv: read value: %w", err)
		}
		out = append(out, kv.KeyValue{Key: k, Value: v})
	}
	return out, nil
}
