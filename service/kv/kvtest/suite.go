// Package kvtest is the conformance suite every kv.Engine must pass, plus
// shared benchmarks. Engines call it from their own tests:
//
//	func TestConformance(t *testing.T) {
//		kvtest.RunConformance(t, func(t *testing.T) kv.Engine { ... })
//	}
//
// The suite checks the behaviour the rest of EmberFS relies on: ordered point
// and range reads, read-your-writes, snapshot isolation, optimistic conflict
// detection with automatic retry, explicit conflict keys, a serializability
// invariant under concurrent load, size limits, error propagation and
// context cancellation. It asserts only what every engine guarantees; whole
// range (phantom) conflicts are checked separately by
// RunRangeConflictConformance, for engines that detect them.
package kvtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/emberfs/emberfs/service/kv"
)

// Opener returns a new, empty engine. The suite closes it when the subtest
// ends (a second Close must be harmless: it may return nil or kv.ErrClosed).
type Opener func(t *testing.T) kv.Engine

type conformanceCase struct {
	name string
	run  func(t *testing.T, e kv.Engine)
}

// RunConformance runs every conformance subtest against fresh engines from
// open. Subtests run one after another, so an opener may share a backing
// store (an FDB cluster) as long as each engine it returns starts empty.
func RunConformance(t *testing.T, open func(t *testing.T) kv.Engine) {
	t.Helper()
	cases := []conformanceCase{
		{"PointSetGetClear", testPointSetGetClear},
		{"BinaryKeysAndValues", testBinaryKeysAndValues},
		{"BuffersAreCopied", testBuffersAreCopied},
		{"RangeOrderLimitReverse", testRangeOrderLimitReverse},
		{"RangeEmptyAndInverted", testRangeEmptyAndInverted},
		{"RangeLarge", testRangeLarge},
		{"ClearRange", testClearRange},
		{"PrefixEnd", testPrefixEnd},
		{"ReadYourWritesPoint", testReadYourWritesPoint},
		{"ReadYourWritesRange", testReadYourWritesRange},
		{"SnapshotIsolationReadOnly", testSnapshotIsolationReadOnly},
		{"SnapshotIsolationReadWrite", testSnapshotIsolationReadWrite},
		{"ReadVersionAdvances", testReadVersionAdvances},
		{"ConcurrentReadModifyWriteExactlyOneRetries", testConcurrentRMW},
		{"ReadOnlyTransactDoesNotConflict", testReadOnlyTransactDoesNotConflict},
		{"RangeReadConflictsOnReturnedKeys", testRangeReadConflictsOnReturnedKeys},
		{"BlindWritesDoNotConflict", testBlindWritesDoNotConflict},
		{"SnapshotReadsAddNoConflict", testSnapshotReadsAddNoConflict},
		{"SnapshotReadsSeeOwnWrites", testSnapshotReadsSeeOwnWrites},
		{"ReadConflictKey", testReadConflictKey},
		{"WriteConflictKey", testWriteConflictKey},
		{"ConflictKeysAreInvisible", testConflictKeysAreInvisible},
		{"PhantomGuardWithConflictKeys", testPhantomGuardWithConflictKeys},
		{"TransfersPreserveTotal", testTransfersPreserveTotal},
		{"ConcurrentCounter", testConcurrentCounter},
		{"CommittedWritesVisibleAtOnce", testCommittedWritesVisibleAtOnce},
		{"RetryBound", testRetryBound},
		{"SizeLimits", testSizeLimits},
		{"TransactionSizeLimit", testTransactionSizeLimit},
		{"FnErrorAbortsUnchanged", testFnErrorAbortsUnchanged},
		{"ReadTransactRejectsWrites", testReadTransactRejectsWrites},
		{"CancelledBeforeStart", testCancelledBeforeStart},
		{"CancelledDuringRetries", testCancelledDuringRetries},
		{"DeadlineExceeded", testDeadlineExceeded},
		{"Closed", testClosed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.run(t, openFresh(t, open))
		})
	}
}

// RunRangeConflictConformance checks that a range read conflicts with a
// concurrent insert into the range that the read did not return (phantom
// protection). Only engines that track read ranges (FoundationDB) pass it;
// see docs/kv.md.
func RunRangeConflictConformance(t *testing.T, open func(t *testing.T) kv.Engine) {
	t.Helper()
	t.Run("PhantomInsertConflicts", func(t *testing.T) {
		e := openFresh(t, open)
		mustSet(t, e, "r/1", "a", "r/3", "c")
		var seen [][]string
		attempts := victim(t, e,
			func(tx kv.Tx) error {
				kvs, err := tx.GetRange([]byte("r/"), kv.PrefixEnd([]byte("r/")), kv.RangeOptions{})
				seen = append(seen, keysOf(kvs))
				return err
			},
			func(tx kv.Tx) error { return tx.Set([]byte("r/2"), []byte("b")) },
			func(tx kv.Tx) error { return tx.Set([]byte("summary"), []byte("x")) },
		)
		if attempts != 2 {
			t.Fatalf("range read then concurrent insert into the range: %d attempts, want 2 (phantom not detected); scans saw %q", attempts, seen)
		}
		wantKeys(t, seen[1], "r/1", "r/2", "r/3")
	})
}

// openFresh opens an engine, checks it is empty, and closes it at the end.
func openFresh(t *testing.T, open func(t *testing.T) kv.Engine) kv.Engine {
	t.Helper()
	e := open(t)
	if e == nil {
		t.Fatal("opener returned a nil engine")
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil && !errors.Is(err, kv.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	if got := scanKeys(t, e, "", "\xff", kv.RangeOptions{}); len(got) != 0 {
		t.Fatalf("opener returned an engine that is not empty: %q", got)
	}
	return e
}

// victim runs a read-write transaction whose first attempt reads (read),
// then lets intruder commit a whole transaction, then writes (write). It
// returns how many attempts the victim needed: 1 means no conflict was
// detected, 2 means exactly one retry.
func victim(t *testing.T, e kv.Engine, read, intruder, write func(tx kv.Tx) error) int {
	t.Helper()
	attempts := 0
	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		attempts++
		if attempts > 10 {
			return errors.New("victim retried more than 10 times")
		}
		if err := read(tx); err != nil {
			return err
		}
		if attempts == 1 {
			// Commit a whole transaction while this one is open: if the
			// engine detects the conflict, this attempt must fail.
			if err := e.Transact(context.Background(), intruder); err != nil {
				return fmt.Errorf("intruder transaction: %w", err)
			}
		}
		return write(tx)
	})
	if err != nil {
		t.Fatalf("victim transaction: %v", err)
	}
	return attempts
}

func mustSet(t testing.TB, e kv.Engine, pairs ...string) {
	t.Helper()
	if len(pairs)%2 != 0 {
		t.Fatal("mustSet needs key/value pairs")
	}
	err := e.Transact(context.Background(), func(tx kv.Tx) error {
		for i := 0; i < len(pairs); i += 2 {
			if err := tx.Set([]byte(pairs[i]), []byte(pairs[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("set %q: %v", pairs, err)
	}
}

// mustGet reads key in its own read-only transaction.
func mustGet(t testing.TB, e kv.Engine, key string) (string, bool) {
	t.Helper()
	var (
		val   []byte
		found bool
	)
	err := e.ReadTransact(context.Background(), func(tx kv.ReadTx) error {
		var err error
		val, found, err = tx.Get([]byte(key))
		return err
	})
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	if !found && val != nil {
		t.Fatalf("get %q: not found but value %q is not nil", key, val)
	}
	return string(val), found
}

func wantValue(t testing.TB, e kv.Engine, key, want string) {
	t.Helper()
	got, found := mustGet(t, e, key)
	if !found {
		t.Fatalf("key %q: not found, want %q", key, want)
	}
	if got != want {
		t.Fatalf("key %q = %q, want %q", key, got, want)
	}
}

func wantAbsent(t testing.TB, e kv.Engine, key string) {
	t.Helper()
	if got, found := mustGet(t, e, key); found {
		t.Fatalf("key %q = %q, want absent", key, got)
	}
}

func scan(t testing.TB, e kv.Engine, begin, end string, opts kv.RangeOptions) []kv.KeyValue {
	t.Helper()
	var kvs []kv.KeyValue
	err := e.ReadTransact(context.Background(), func(tx kv.ReadTx) error {
		var err error
		kvs, err = tx.GetRange([]byte(begin), []byte(end), opts)
		return err
	})
	if err != nil {
		t.Fatalf("GetRange [%q, %q) %+v: %v", begin, end, opts, err)
	}
	return kvs
}

func scanKeys(t testing.TB, e kv.Engine, begin, end string, opts kv.RangeOptions) []string {
	t.Helper()
	return keysOf(scan(t, e, begin, end, opts))
}

func keysOf(kvs []kv.KeyValue) []string {
	keys := make([]string, len(kvs))
	for i, p := range kvs {
		keys[i] = string(p.Key)
	}
	return keys
}

func wantKeys(t testing.TB, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("keys = %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("keys = %q, want %q", got, want)
		}
	}
}

func wantPairs(t testing.TB, got []kv.KeyValue, pairs ...string) {
	t.Helper()
	if len(got) != len(pairs)/2 {
		t.Fatalf("range = %s, want %q", fmtPairs(got), pairs)
	}
	for i, p := range got {
		if string(p.Key) != pairs[2*i] || !bytes.Equal(p.Value, []byte(pairs[2*i+1])) {
			t.Fatalf("range = %s, want %q", fmtPairs(got), pairs)
		}
	}
}

func fmtPairs(kvs []kv.KeyValue) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, p := range kvs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%q=%q", p.Key, p.Value)
	}
	b.WriteByte(']')
	return b.String()
}
