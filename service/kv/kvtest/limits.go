package kvtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/emberfs/emberfs/service/kv"
)

// expectTxError runs fn in a transaction and wants err (matched with
// errors.Is) from both fn's operation and Transact, with nothing written.
func expectTxError(t *testing.T, e kv.Engine, what string, want error, op func(tx kv.Tx) error) {
	t.Helper()
	var opErr error
	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		if err := tx.Set([]byte("side-effect"), []byte("x")); err != nil {
			return err
		}
		opErr = op(tx)
		return opErr
	})
	if !errors.Is(opErr, want) {
		t.Fatalf("%s: operation returned %v, want %v", what, opErr, want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("%s: Transact returned %v, want %v", what, err, want)
	}
	wantAbsent(t, e, "side-effect")
}

func testSizeLimits(t *testing.T, e kv.Engine) {
	maxKey := bytes.Repeat([]byte("k"), kv.MaxKeySize)
	bigKey := bytes.Repeat([]byte("k"), kv.MaxKeySize+1)
	maxVal := bytes.Repeat([]byte("v"), kv.MaxValueSize)
	bigVal := bytes.Repeat([]byte("v"), kv.MaxValueSize+1)

	// Exactly at the limits is fine.
	err := e.Transact(t.Context(), func(tx kv.Tx) error { return tx.Set(maxKey, maxVal) })
	if err != nil {
		t.Fatalf("key of %d bytes with value of %d bytes: %v", len(maxKey), len(maxVal), err)
	}
	if v, found := mustGet(t, e, string(maxKey)); !found || v != string(maxVal) {
		t.Fatalf("largest key/value pair did not round-trip (found=%v, %d bytes)", found, len(v))
	}

	cases := []struct {
		what string
		want error
		op   func(tx kv.Tx) error
	}{
		{"Set with a key over the limit", kv.ErrKeyTooLarge, func(tx kv.Tx) error { return tx.Set(bigKey, nil) }},
		{"Set with a value over the limit", kv.ErrValueTooLarge, func(tx kv.Tx) error { return tx.Set([]byte("k"), bigVal) }},
		{"Set with an empty key", kv.ErrEmptyKey, func(tx kv.Tx) error { return tx.Set(nil, []byte("v")) }},
		{"Set of a reserved key", kv.ErrReservedKey, func(tx kv.Tx) error { return tx.Set([]byte("\xffsecret"), []byte("v")) }},
		{"Set of the bare reserved prefix", kv.ErrReservedKey, func(tx kv.Tx) error { return tx.Set([]byte("\xff"), []byte("v")) }},
		{"Clear with an empty key", kv.ErrEmptyKey, func(tx kv.Tx) error { return tx.Clear([]byte{}) }},
		{"Clear with a key over the limit", kv.ErrKeyTooLarge, func(tx kv.Tx) error { return tx.Clear(bigKey) }},
		{"ClearRange into the reserved keyspace", kv.ErrReservedKey, func(tx kv.Tx) error { return tx.ClearRange([]byte("a"), []byte("\xff\xff")) }},
		{"Get of a reserved key", kv.ErrReservedKey, func(tx kv.Tx) error { _, _, err := tx.Get([]byte("\xffx")); return err }},
		{"Get with a key over the limit", kv.ErrKeyTooLarge, func(tx kv.Tx) error { _, _, err := tx.Get(bigKey); return err }},
		{"SnapshotGet with an empty key", kv.ErrEmptyKey, func(tx kv.Tx) error { _, _, err := tx.SnapshotGet(nil); return err }},
		{"GetRange ending inside the reserved keyspace", kv.ErrReservedKey, func(tx kv.Tx) error {
			_, err := tx.GetRange([]byte("a"), []byte("\xff\x00"), kv.RangeOptions{})
			return err
		}},
		{"AddReadConflictKey with an empty key", kv.ErrEmptyKey, func(tx kv.Tx) error { return tx.AddReadConflictKey(nil) }},
		{"AddWriteConflictKey of a reserved key", kv.ErrReservedKey, func(tx kv.Tx) error { return tx.AddWriteConflictKey([]byte("\xffx")) }},
	}
	for _, c := range cases {
		expectTxError(t, e, c.what, c.want, c.op)
	}

	// The error names the limit and the size.
	err = e.Transact(t.Context(), func(tx kv.Tx) error { return tx.Set([]byte("k"), bigVal) })
	if msg := fmt.Sprint(err); !bytes.Contains([]byte(msg), []byte(fmt.Sprint(kv.MaxValueSize+1))) {
		t.Fatalf("value-too-large error %q does not say the size", msg)
	}

	// A failed write fails the commit even if fn ignores its error.
	err = e.Transact(t.Context(), func(tx kv.Tx) error {
		_ = tx.Set(bigKey, []byte("v"))
		return tx.Set([]byte("ignored"), []byte("x"))
	})
	if !errors.Is(err, kv.ErrKeyTooLarge) {
		t.Fatalf("Transact after an ignored oversized Set = %v, want ErrKeyTooLarge", err)
	}
	wantAbsent(t, e, "ignored")
	wantKeys(t, scanKeys(t, e, "", "\xff", kv.RangeOptions{}), string(maxKey))
}

// testTransactionSizeLimit: every engine accepts transactions up to a little
// under kv.MaxTxnBytes, and rejects larger ones with ErrTxnTooLarge.
func testTransactionSizeLimit(t *testing.T, e kv.Engine) {
	val := bytes.Repeat([]byte("x"), kv.MaxValueSize)
	write := func(tx kv.Tx, prefix string, n int) error {
		for i := range n {
			if err := tx.Set(fmt.Appendf(nil, "%s/%03d", prefix, i), val); err != nil {
				return err
			}
		}
		return nil
	}
	const fits = 8 * kv.MaxTxnBytes / 10 / kv.MaxValueSize // 80% of the bound
	if err := e.Transact(t.Context(), func(tx kv.Tx) error { return write(tx, "fits", fits) }); err != nil {
		t.Fatalf("transaction writing %d bytes (under the %d-byte bound): %v", fits*kv.MaxValueSize, kv.MaxTxnBytes, err)
	}
	if got := len(scanKeys(t, e, "fits/", "fits0", kv.RangeOptions{})); got != fits {
		t.Fatalf("%d keys committed, want %d", got, fits)
	}
	const tooMany = kv.MaxTxnBytes/kv.MaxValueSize + 1
	err := e.Transact(t.Context(), func(tx kv.Tx) error { return write(tx, "big", tooMany) })
	if !errors.Is(err, kv.ErrTxnTooLarge) {
		t.Fatalf("transaction writing %d bytes: err = %v, want ErrTxnTooLarge", tooMany*kv.MaxValueSize, err)
	}
	if got := scanKeys(t, e, "big/", "big0", kv.RangeOptions{Limit: 1}); len(got) != 0 {
		t.Fatalf("rejected transaction left keys behind: %q", got)
	}
}

type customError struct{ detail string }

func (c *customError) Error() string { return "custom: " + c.detail }

func testFnErrorAbortsUnchanged(t *testing.T, e kv.Engine) {
	mustSet(t, e, "keep", "1")
	errBoom := errors.New("boom")
	for _, want := range []error{errBoom, &customError{"x"}, fmt.Errorf("wrapped: %w", errBoom), context.Canceled} {
		attempts := 0
		err := e.Transact(t.Context(), func(tx kv.Tx) error {
			attempts++
			if err := tx.Set([]byte("new"), []byte("x")); err != nil {
				return err
			}
			if err := tx.Clear([]byte("keep")); err != nil {
				return err
			}
			return want
		})
		if err != want { // "returned unchanged" means the same value
			t.Fatalf("Transact returned %v (%T), want fn's error %v (%T) unchanged", err, err, want, want)
		}
		if attempts != 1 {
			t.Fatalf("fn returning %v ran %d times, want once (no retry)", want, attempts)
		}
		wantAbsent(t, e, "new")
		wantValue(t, e, "keep", "1")
	}
	err := e.ReadTransact(t.Context(), func(kv.ReadTx) error { return errBoom })
	if err != errBoom {
		t.Fatalf("ReadTransact returned %v, want fn's error unchanged", err)
	}
}

func testReadTransactRejectsWrites(t *testing.T, e kv.Engine) {
	mustSet(t, e, "k", "v")
	err := e.ReadTransact(t.Context(), func(rtx kv.ReadTx) error {
		w, ok := rtx.(kv.Tx)
		if !ok {
			return nil // writes are impossible by type
		}
		for name, op := range map[string]func() error{
			"Set":                 func() error { return w.Set([]byte("k"), []byte("changed")) },
			"Clear":               func() error { return w.Clear([]byte("k")) },
			"ClearRange":          func() error { return w.ClearRange([]byte("a"), []byte("z")) },
			"AddWriteConflictKey": func() error { return w.AddWriteConflictKey([]byte("k")) },
		} {
			if err := op(); !errors.Is(err, kv.ErrReadOnly) {
				return fmt.Errorf("%s in ReadTransact returned %v, want ErrReadOnly", name, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, e, "k", "v")
}

func testCancelledBeforeStart(t *testing.T, e kv.Engine) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ran := false
	err := e.Transact(ctx, func(tx kv.Tx) error {
		ran = true
		return tx.Set([]byte("k"), []byte("v"))
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Transact with a cancelled context = %v, want context.Canceled", err)
	}
	if ran {
		t.Fatal("Transact ran fn although its context was already cancelled")
	}
	wantAbsent(t, e, "k")
	err = e.ReadTransact(ctx, func(kv.ReadTx) error { ran = true; return nil })
	if !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("ReadTransact with a cancelled context = %v (fn ran: %v), want context.Canceled without running fn", err, ran)
	}
}

// testCancelledDuringRetries cancels the context while a transaction keeps
// conflicting: Transact must stop retrying and report the cancellation.
func testCancelledDuringRetries(t *testing.T, e kv.Engine) {
	mustSet(t, e, "hot", "0")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	attempts := 0
	err := e.Transact(ctx, func(tx kv.Tx) error {
		attempts++
		if _, _, err := tx.Get([]byte("hot")); err != nil {
			return err
		}
		if err := e.Transact(context.Background(), set("hot", fmt.Sprint(attempts))); err != nil {
			return fmt.Errorf("intruder: %w", err)
		}
		if attempts == 3 {
			cancel()
		}
		return tx.Set([]byte("victim"), []byte("written"))
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Transact cancelled during retries = %v, want context.Canceled", err)
	}
	if attempts != 3 {
		t.Fatalf("fn ran %d times, want 3 (no attempt after the cancellation)", attempts)
	}
	wantAbsent(t, e, "victim")
}

func testDeadlineExceeded(t *testing.T, e kv.Engine) {
	ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	err := e.Transact(ctx, func(tx kv.Tx) error { return tx.Set([]byte("k"), []byte("v")) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Transact past its deadline = %v, want context.DeadlineExceeded", err)
	}
	wantAbsent(t, e, "k")
}

func testClosed(t *testing.T, e kv.Engine) {
	mustSet(t, e, "k", "v")
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	err := e.Transact(t.Context(), func(tx kv.Tx) error { return tx.Set([]byte("k2"), []byte("v")) })
	if !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("Transact after Close = %v, want ErrClosed", err)
	}
	err = e.ReadTransact(t.Context(), func(kv.ReadTx) error { return nil })
	if !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("ReadTransact after Close = %v, want ErrClosed", err)
	}
	if err := e.Close(); err != nil && !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("second Close = %v, want nil or ErrClosed", err)
	}
}
