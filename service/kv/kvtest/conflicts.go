package kvtest

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/emberfs/emberfs/service/kv"
)

func set(key, val string) func(tx kv.Tx) error {
	return func(tx kv.Tx) error { return tx.Set([]byte(key), []byte(val)) }
}

func get(key string) func(tx kv.Tx) error {
	return func(tx kv.Tx) error { _, _, err := tx.Get([]byte(key)); return err }
}

func all(ops ...func(tx kv.Tx) error) func(tx kv.Tx) error {
	return func(tx kv.Tx) error {
		for _, op := range ops {
			if err := op(tx); err != nil {
				return err
			}
		}
		return nil
	}
}

// testConcurrentRMW runs two transactions in two goroutines that both read
// a counter before either commits, then both write counter+1: exactly one of
// them must retry, and the counter must end at 2.
func testConcurrentRMW(t *testing.T, e kv.Engine) {
	mustSet(t, e, "counter", "0")
	var (
		bothRead sync.WaitGroup
		attempts [2]int
		errs     [2]error
		done     sync.WaitGroup
	)
	bothRead.Add(2)
	for i := range 2 {
		done.Add(1)
		go func() {
			defer done.Done()
			errs[i] = e.Transact(t.Context(), func(tx kv.Tx) error {
				attempts[i]++
				v, found, err := tx.Get([]byte("counter"))
				if err != nil {
					return err
				}
				if !found {
					return fmt.Errorf("counter missing")
				}
				n, err := strconv.Atoi(string(v))
				if err != nil {
					return err
				}
				if attempts[i] == 1 {
					bothRead.Done()
					bothRead.Wait() // neither commits before both have read
				}
				return tx.Set([]byte("counter"), []byte(strconv.Itoa(n+1)))
			})
		}()
	}
	done.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
	}
	got := []int{attempts[0], attempts[1]}
	slices.Sort(got)
	if !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("attempts = %v, want one transaction to commit first time and the other to retry exactly once", attempts)
	}
	wantValue(t, e, "counter", "2")
}

// A transaction that only reads is serializable at its read version, so it
// commits without a conflict check even when its reads were overwritten.
func testReadOnlyTransactDoesNotConflict(t *testing.T, e kv.Engine) {
	mustSet(t, e, "k", "v1")
	attempts := victim(t, e, get("k"), set("k", "v2"), func(kv.Tx) error { return nil })
	if attempts != 1 {
		t.Fatalf("read-only Transact retried: %d attempts, want 1", attempts)
	}
}

func testRangeReadConflictsOnReturnedKeys(t *testing.T, e kv.Engine) {
	mustSet(t, e, "r/1", "a", "r/2", "b")
	scanR := func(tx kv.Tx) error {
		_, err := tx.GetRange([]byte("r/"), []byte("r0"), kv.RangeOptions{})
		return err
	}
	// A key the scan returned is changed by a concurrent commit.
	if n := victim(t, e, scanR, set("r/2", "changed"), set("sum", "x")); n != 2 {
		t.Fatalf("key returned by GetRange overwritten concurrently: %d attempts, want 2", n)
	}
	// ... or deleted.
	del := func(tx kv.Tx) error { return tx.Clear([]byte("r/1")) }
	if n := victim(t, e, scanR, del, set("sum", "y")); n != 2 {
		t.Fatalf("key returned by GetRange cleared concurrently: %d attempts, want 2", n)
	}
	// Reverse scans too.
	scanRev := func(tx kv.Tx) error {
		_, err := tx.GetRange([]byte("r/"), []byte("r0"), kv.RangeOptions{Reverse: true, Limit: 1})
		return err
	}
	if n := victim(t, e, scanRev, set("r/2", "again"), set("sum", "z")); n != 2 {
		t.Fatalf("key returned by a reverse GetRange overwritten concurrently: %d attempts, want 2", n)
	}
}

func testBlindWritesDoNotConflict(t *testing.T, e kv.Engine) {
	// Writes without reads never conflict, even on the same key.
	if n := victim(t, e, func(kv.Tx) error { return nil }, set("k", "intruder"), set("k", "victim")); n != 1 {
		t.Fatalf("blind write conflicted: %d attempts, want 1", n)
	}
	wantValue(t, e, "k", "victim") // the later commit wins
	// Reading one key does not conflict with a write to another.
	if n := victim(t, e, get("a"), set("b", "1"), set("c", "1")); n != 1 {
		t.Fatalf("read of a conflicted with a write of b: %d attempts, want 1", n)
	}
}

func testSnapshotReadsAddNoConflict(t *testing.T, e kv.Engine) {
	mustSet(t, e, "k", "v1", "r/1", "a")
	var seen []string
	snapGet := func(tx kv.Tx) error {
		v, _, err := tx.SnapshotGet([]byte("k"))
		seen = append(seen, string(v))
		return err
	}
	if n := victim(t, e, snapGet, set("k", "v2"), set("out", "1")); n != 1 {
		t.Fatalf("SnapshotGet then concurrent write of the key: %d attempts, want 1 (snapshot reads add no conflict)", n)
	}
	if !slices.Equal(seen, []string{"v1"}) {
		t.Fatalf("SnapshotGet saw %q, want [v1]", seen)
	}
	snapRange := func(tx kv.Tx) error {
		_, err := tx.GetRange([]byte("r/"), []byte("r0"), kv.RangeOptions{Snapshot: true})
		return err
	}
	if n := victim(t, e, snapRange, set("r/1", "changed"), set("out", "2")); n != 1 {
		t.Fatalf("snapshot GetRange then concurrent write of a returned key: %d attempts, want 1", n)
	}
	// A snapshot read of a key that is also read normally still conflicts.
	both := all(snapGet, get("k"))
	if n := victim(t, e, both, set("k", "v3"), set("out", "3")); n != 2 {
		t.Fatalf("Get (after SnapshotGet) then concurrent write: %d attempts, want 2", n)
	}
}

// Snapshot reads see the transaction's own writes, as FoundationDB's do by
// default (snapshot read-your-writes).
func testSnapshotReadsSeeOwnWrites(t *testing.T, e kv.Engine) {
	mustSet(t, e, "a", "old", "b", "old")
	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		if err := tx.Set([]byte("a"), []byte("new")); err != nil {
			return err
		}
		if err := tx.Clear([]byte("b")); err != nil {
			return err
		}
		if err := tx.Set([]byte("c"), []byte("new")); err != nil {
			return err
		}
		v, found, err := tx.SnapshotGet([]byte("a"))
		if err != nil || !found || string(v) != "new" {
			return fmt.Errorf("SnapshotGet of own write: %q found=%v err=%v, want \"new\"", v, found, err)
		}
		if v, found, err := tx.SnapshotGet([]byte("b")); err != nil || found {
			return fmt.Errorf("SnapshotGet of own clear: %q found=%v err=%v, want absent", v, found, err)
		}
		kvs, err := tx.GetRange([]byte("a"), []byte("z"), kv.RangeOptions{Snapshot: true})
		if err != nil {
			return err
		}
		if got := fmtPairs(kvs); got != `["a"="new" "c"="new"]` {
			return fmt.Errorf("snapshot GetRange over own writes = %s, want [a=new c=new]", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testReadConflictKey(t *testing.T, e kv.Engine) {
	readGuard := func(tx kv.Tx) error { return tx.AddReadConflictKey([]byte("guard")) }
	// A declared read conflicts with a concurrent write of the key...
	if n := victim(t, e, readGuard, set("guard", "x"), set("a", "1")); n != 2 {
		t.Fatalf("AddReadConflictKey then concurrent Set of the key: %d attempts, want 2", n)
	}
	// ... and with a concurrent declared write conflict on it.
	writeGuard := func(tx kv.Tx) error {
		if err := tx.AddWriteConflictKey([]byte("guard")); err != nil {
			return err
		}
		return tx.Set([]byte("other"), []byte("1"))
	}
	if n := victim(t, e, readGuard, writeGuard, set("a", "2")); n != 2 {
		t.Fatalf("AddReadConflictKey then concurrent AddWriteConflictKey: %d attempts, want 2", n)
	}
	// ... but not with a write to another key.
	if n := victim(t, e, readGuard, set("guard2", "x"), set("a", "3")); n != 1 {
		t.Fatalf("AddReadConflictKey(guard) then concurrent Set(guard2): %d attempts, want 1", n)
	}
	wantValue(t, e, "guard", "x") // declaring a read conflict does not touch the key
}

func testWriteConflictKey(t *testing.T, e kv.Engine) {
	mustSet(t, e, "x", "orig")
	// A concurrent declared write conflicts with a real read.
	onlyWriteConflict := func(tx kv.Tx) error { return tx.AddWriteConflictKey([]byte("x")) }
	if n := victim(t, e, get("x"), onlyWriteConflict, set("a", "1")); n != 2 {
		t.Fatalf("Get(x) then a concurrent transaction whose only effect is AddWriteConflictKey(x): %d attempts, want 2", n)
	}
	withWrite := all(onlyWriteConflict, set("y", "1"))
	if n := victim(t, e, get("x"), withWrite, set("a", "2")); n != 2 {
		t.Fatalf("Get(x) then concurrent AddWriteConflictKey(x) plus Set(y): %d attempts, want 2", n)
	}
	// Declaring a write conflict changes no value.
	wantValue(t, e, "x", "orig")
	// A write conflict on one key leaves readers of others alone.
	if n := victim(t, e, get("z"), withWrite, set("a", "3")); n != 1 {
		t.Fatalf("Get(z) then concurrent AddWriteConflictKey(x): %d attempts, want 1", n)
	}
	// A declared write conflict must not write back a stale value: a value
	// committed concurrently (after this transaction's read version) stays.
	declare := func(tx kv.Tx) error { return tx.AddWriteConflictKey([]byte("x")) }
	victim(t, e, declare, set("x", "concurrent"), set("a", "4"))
	wantValue(t, e, "x", "concurrent")
	victim(t, e, declare, set("fresh", "concurrent"), set("a", "5"))
	wantValue(t, e, "fresh", "concurrent")
}

func testConflictKeysAreInvisible(t *testing.T, e kv.Engine) {
	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		if err := tx.AddReadConflictKey([]byte("g1")); err != nil {
			return err
		}
		if err := tx.AddWriteConflictKey([]byte("g2")); err != nil {
			return err
		}
		if _, found, err := tx.Get([]byte("g2")); err != nil || found {
			return fmt.Errorf("Get of a key with only a write conflict in the same transaction: found=%v err=%v", found, err)
		}
		return tx.Set([]byte("real"), []byte("1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	wantAbsent(t, e, "g1")
	wantAbsent(t, e, "g2")
	wantKeys(t, scanKeys(t, e, "", "\xff", kv.RangeOptions{}), "real")
	wantKeys(t, scanKeys(t, e, "", "\xff", kv.RangeOptions{Reverse: true}), "real")
}

// testPhantomGuardWithConflictKeys is the documented pattern for phantom
// protection on engines that do not track read ranges: readers of a range
// declare a read conflict on a guard key, inserters declare a write
// conflict on it.
func testPhantomGuardWithConflictKeys(t *testing.T, e kv.Engine) {
	mustSet(t, e, "dir/a", "1")
	var seen [][]string
	scanGuarded := func(tx kv.Tx) error {
		if err := tx.AddReadConflictKey([]byte("dir")); err != nil {
			return err
		}
		kvs, err := tx.GetRange([]byte("dir/"), kv.PrefixEnd([]byte("dir/")), kv.RangeOptions{})
		seen = append(seen, keysOf(kvs))
		return err
	}
	insert := func(tx kv.Tx) error {
		if err := tx.AddWriteConflictKey([]byte("dir")); err != nil {
			return err
		}
		return tx.Set([]byte("dir/b"), []byte("2"))
	}
	if n := victim(t, e, scanGuarded, insert, set("dir.count", "?")); n != 2 {
		t.Fatalf("guarded scan then concurrent guarded insert: %d attempts, want 2", n)
	}
	if len(seen) != 2 || !slices.Equal(seen[0], []string{"dir/a"}) || !slices.Equal(seen[1], []string{"dir/a", "dir/b"}) {
		t.Fatalf("scans saw %q, want [[dir/a] [dir/a dir/b]]", seen)
	}
}
