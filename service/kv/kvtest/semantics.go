package kvtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/emberfs/emberfs/service/kv"
)

func testPointSetGetClear(t *testing.T, e kv.Engine) {
	wantAbsent(t, e, "a")
	mustSet(t, e, "a", "1", "b", "2")
	wantValue(t, e, "a", "1")
	wantValue(t, e, "b", "2")
	mustSet(t, e, "a", "one")
	wantValue(t, e, "a", "one")

	// An empty value is a present key, not an absent one.
	mustSet(t, e, "empty", "")
	if v, found := mustGet(t, e, "empty"); !found || v != "" {
		t.Fatalf("empty value: got %q found=%v, want \"\" found=true", v, found)
	}

	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		if err := tx.Clear([]byte("a")); err != nil {
			return err
		}
		return tx.Clear([]byte("never-existed")) // clearing an absent key is fine
	})
	if err != nil {
		t.Fatalf("clear: %v", err)
	}
	wantAbsent(t, e, "a")
	wantValue(t, e, "b", "2")
	wantKeys(t, scanKeys(t, e, "", "\xff", kv.RangeOptions{}), "b", "empty")
}

func testBinaryKeysAndValues(t *testing.T, e kv.Engine) {
	// Keys order as unsigned bytes: \x00 first, \x80 after \x7f, a prefix
	// before its extensions.
	keys := []string{"\x00", "\x00\x00", "\x01", "a", "a\x00", "a\x7f", "a\x80", "a\xfe\xff", "b", "\x7f", "\x80", "\xfe\xff\xff"}
	var pairs []string
	for i, k := range keys {
		pairs = append(pairs, k, fmt.Sprintf("v\x00\xff%d", i))
	}
	mustSet(t, e, pairs...)
	want := slices.Clone(keys)
	slices.Sort(want)
	wantKeys(t, scanKeys(t, e, "", "\xff", kv.RangeOptions{}), want...)
	for i, k := range keys {
		wantValue(t, e, k, fmt.Sprintf("v\x00\xff%d", i))
	}
}

// testBuffersAreCopied checks that the engine neither keeps the caller's
// buffers (Set) nor hands out buffers that are invalid after the
// transaction ends (Get, GetRange).
func testBuffersAreCopied(t *testing.T, e kv.Engine) {
	key := []byte("k")
	val := []byte("value-1")
	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		if err := tx.Set(key, val); err != nil {
			return err
		}
		key[0], val[0] = 'X', 'X' // caller reuses its buffers before commit
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, e, "k", "value-1")
	wantAbsent(t, e, "X")

	var got []byte
	var kvs []kv.KeyValue
	err = e.ReadTransact(t.Context(), func(tx kv.ReadTx) error {
		var err error
		if got, _, err = tx.Get([]byte("k")); err != nil {
			return err
		}
		kvs, err = tx.GetRange([]byte("k"), []byte("l"), kv.RangeOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Overwrite with much more data so that any reused engine buffer changes.
	for i := range 50 {
		mustSet(t, e, "k", fmt.Sprintf("overwritten-%d-%s", i, bytes.Repeat([]byte("z"), 1000)))
	}
	if string(got) != "value-1" {
		t.Fatalf("value returned by Get changed after the transaction: %q", got)
	}
	wantPairs(t, kvs, "k", "value-1")
}

func testRangeOrderLimitReverse(t *testing.T, e kv.Engine) {
	keys := []string{"k/a", "k/b", "k/c", "k/d", "k/e", "k/f"}
	shuffled := slices.Clone(keys)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, k := range shuffled { // separate commits in random order
		mustSet(t, e, k, "v"+k)
	}
	mustSet(t, e, "j", "before", "l", "after")

	all := scan(t, e, "k/", "k0", kv.RangeOptions{})
	wantPairs(t, all, "k/a", "vk/a", "k/b", "vk/b", "k/c", "vk/c", "k/d", "vk/d", "k/e", "vk/e", "k/f", "vk/f")

	wantKeys(t, scanKeys(t, e, "k/", "k0", kv.RangeOptions{Limit: 2}), "k/a", "k/b")
	wantKeys(t, scanKeys(t, e, "k/", "k0", kv.RangeOptions{Reverse: true}), "k/f", "k/e", "k/d", "k/c", "k/b", "k/a")
	wantKeys(t, scanKeys(t, e, "k/", "k0", kv.RangeOptions{Reverse: true, Limit: 2}), "k/f", "k/e")
	wantKeys(t, scanKeys(t, e, "k/", "k0", kv.RangeOptions{Limit: 100}), keys...)
	// begin is inclusive, end exclusive, in both directions.
	wantKeys(t, scanKeys(t, e, "k/b", "k/e", kv.RangeOptions{}), "k/b", "k/c", "k/d")
	wantKeys(t, scanKeys(t, e, "k/b", "k/e", kv.RangeOptions{Reverse: true}), "k/d", "k/c", "k/b")
	// Bounds that are not keys themselves.
	wantKeys(t, scanKeys(t, e, "k/bb", "k/dd", kv.RangeOptions{}), "k/c", "k/d")
	wantKeys(t, scanKeys(t, e, "k/bb", "k/dd", kv.RangeOptions{Reverse: true}), "k/d", "k/c")
	// The whole user keyspace.
	wantKeys(t, scanKeys(t, e, "", "\xff", kv.RangeOptions{}), append(append([]string{"j"}, keys...), "l")...)
	wantKeys(t, scanKeys(t, e, "", "\xff", kv.RangeOptions{Reverse: true, Limit: 1}), "l")
}

func testRangeEmptyAndInverted(t *testing.T, e kv.Engine) {
	mustSet(t, e, "a", "1", "b", "2", "c", "3")
	for _, opts := range []kv.RangeOptions{{}, {Reverse: true}, {Limit: 1}} {
		if got := scanKeys(t, e, "b", "b", opts); len(got) != 0 {
			t.Fatalf("empty range [b, b) %+v returned %q", opts, got)
		}
		if got := scanKeys(t, e, "c", "a", opts); len(got) != 0 {
			t.Fatalf("inverted range [c, a) %+v returned %q", opts, got)
		}
		if got := scanKeys(t, e, "x", "z", opts); len(got) != 0 {
			t.Fatalf("range [x, z) without keys %+v returned %q", opts, got)
		}
	}
	if got := scanKeys(t, e, "b", "b\x00", kv.RangeOptions{}); len(got) != 1 || got[0] != "b" {
		t.Fatalf("range [b, b\\x00) = %q, want exactly b", got)
	}
}

func testRangeLarge(t *testing.T, e kv.Engine) {
	const n = 2500 // more than any engine's internal page
	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		for i := range n {
			if err := tx.Set(fmt.Appendf(nil, "big/%05d", i), fmt.Appendf(nil, "%d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	kvs := scan(t, e, "big/", "big0", kv.RangeOptions{})
	if len(kvs) != n {
		t.Fatalf("scan returned %d keys, want %d", len(kvs), n)
	}
	for i, p := range kvs {
		if want := fmt.Sprintf("big/%05d", i); string(p.Key) != want || string(p.Value) != fmt.Sprint(i) {
			t.Fatalf("entry %d = %q=%q, want %q=%d", i, p.Key, p.Value, want, i)
		}
	}
	rev := scan(t, e, "big/", "big0", kv.RangeOptions{Reverse: true, Limit: 1500})
	if len(rev) != 1500 || string(rev[0].Key) != "big/02499" || string(rev[1499].Key) != "big/01000" {
		t.Fatalf("reverse scan with limit 1500: %d keys from %q to %q", len(rev), rev[0].Key, rev[len(rev)-1].Key)
	}
}

func testClearRange(t *testing.T, e kv.Engine) {
	mustSet(t, e, "a", "1", "b", "2", "b/1", "3", "b/2", "4", "c", "5")
	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		return tx.ClearRange([]byte("b"), []byte("c")) // b and b/..., not c
	})
	if err != nil {
		t.Fatal(err)
	}
	wantKeys(t, scanKeys(t, e, "", "\xff", kv.RangeOptions{}), "a", "c")

	// An empty or inverted range clears nothing.
	err = e.Transact(t.Context(), func(tx kv.Tx) error {
		if err := tx.ClearRange([]byte("a"), []byte("a")); err != nil {
			return fmt.Errorf("empty ClearRange: %w", err)
		}
		if err := tx.ClearRange([]byte("c"), []byte("a")); err != nil {
			return fmt.Errorf("inverted ClearRange: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantKeys(t, scanKeys(t, e, "", "\xff", kv.RangeOptions{}), "a", "c")

	// Everything a user can write is in ["", \xff).
	err = e.Transact(t.Context(), func(tx kv.Tx) error {
		return tx.ClearRange(nil, []byte(kv.SystemPrefix))
	})
	if err != nil {
		t.Fatal(err)
	}
	wantKeys(t, scanKeys(t, e, "", "\xff", kv.RangeOptions{}))
}

func testPrefixEnd(t *testing.T, e kv.Engine) {
	mustSet(t, e, "a", "0", "a\x00", "1", "a\xff", "2", "a\xff\xff", "3", "ab", "4", "b", "5", "a0", "6")
	prefixScan := func(prefix string) []string {
		return scanKeys(t, e, prefix, string(kv.PrefixEnd([]byte(prefix))), kv.RangeOptions{})
	}
	wantKeys(t, prefixScan("a"), "a", "a\x00", "a0", "ab", "a\xff", "a\xff\xff")
	wantKeys(t, prefixScan("a\xff"), "a\xff", "a\xff\xff")
	wantKeys(t, prefixScan("b"), "b")
	wantKeys(t, prefixScan("c"))

	for _, c := range []struct{ prefix, end string }{
		{"a", "b"}, {"a\xff", "b"}, {"a\xff\xff", "b"}, {"ab", "ac"}, {"\xfe", "\xff"}, {"\xff\xff", "\xff"}, {"", "\xff"},
	} {
		if got := string(kv.PrefixEnd([]byte(c.prefix))); got != c.end {
			t.Errorf("PrefixEnd(%q) = %q, want %q", c.prefix, got, c.end)
		}
	}
	in := []byte("ab")
	kv.PrefixEnd(in)
	if string(in) != "ab" {
		t.Errorf("PrefixEnd modified its argument: %q", in)
	}
}

func testReadYourWritesPoint(t *testing.T, e kv.Engine) {
	mustSet(t, e, "old", "1", "gone", "2")
	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		steps := []struct {
			op, key, val string
		}{
			{"set", "new", "n"}, {"get", "new", "n"},
			{"set", "old", "1b"}, {"get", "old", "1b"},
			{"clear", "gone", ""}, {"absent", "gone", ""},
			{"set", "gone", "back"}, {"get", "gone", "back"},
			{"clear", "new", ""}, {"absent", "new", ""},
		}
		for _, s := range steps {
			var err error
			switch s.op {
			case "set":
				err = tx.Set([]byte(s.key), []byte(s.val))
			case "clear":
				err = tx.Clear([]byte(s.key))
			case "get", "absent":
				v, found, gerr := tx.Get([]byte(s.key))
				switch {
				case gerr != nil:
					err = gerr
				case s.op == "get" && (!found || string(v) != s.val):
					err = fmt.Errorf("own write: Get(%q) = %q found=%v, want %q", s.key, v, found, s.val)
				case s.op == "absent" && found:
					err = fmt.Errorf("own clear: Get(%q) = %q, want absent", s.key, v)
				}
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, e, "old", "1b")
	wantValue(t, e, "gone", "back")
	wantAbsent(t, e, "new")
}

func testReadYourWritesRange(t *testing.T, e kv.Engine) {
	mustSet(t, e, "r/1", "c1", "r/3", "c3", "r/5", "c5", "r/7", "c7", "r/9", "c9")
	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		for _, op := range []func() error{
			func() error { return tx.Set([]byte("r/0"), []byte("w0")) },             // before all committed keys
			func() error { return tx.Set([]byte("r/3"), []byte("w3")) },             // overwrite
			func() error { return tx.Set([]byte("r/4"), []byte("w4")) },             // between
			func() error { return tx.Clear([]byte("r/5")) },                         // committed key cleared
			func() error { return tx.ClearRange([]byte("r/7"), []byte("r/9\x00")) }, // r/7, r/9
			func() error { return tx.Set([]byte("r/8"), []byte("w8")) },             // set inside the cleared range
			func() error { return tx.Set([]byte("r/a"), []byte("wa")) },             // after all committed keys
		} {
			if err := op(); err != nil {
				return err
			}
		}
		check := func(opts kv.RangeOptions, want ...string) error {
			kvs, err := tx.GetRange([]byte("r/"), []byte("r0"), opts)
			if err != nil {
				return err
			}
			var got []string
			for _, p := range kvs {
				got = append(got, string(p.Key)+"="+string(p.Value))
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("read-your-writes range %+v = %q, want %q", opts, got, want)
			}
			return nil
		}
		all := []string{"r/0=w0", "r/1=c1", "r/3=w3", "r/4=w4", "r/8=w8", "r/a=wa"}
		rev := slices.Clone(all)
		slices.Reverse(rev)
		for _, c := range []struct {
			opts kv.RangeOptions
			want []string
		}{
			{kv.RangeOptions{}, all},
			{kv.RangeOptions{Limit: 3}, all[:3]},
			{kv.RangeOptions{Reverse: true}, rev},
			{kv.RangeOptions{Reverse: true, Limit: 2}, rev[:2]},
		} {
			if err := check(c.opts, c.want...); err != nil {
				return err
			}
		}
		// A write after a range read is seen by the next range read.
		if err := tx.Set([]byte("r/2"), []byte("w2")); err != nil {
			return err
		}
		return check(kv.RangeOptions{Limit: 3}, "r/0=w0", "r/1=c1", "r/2=w2")
	})
	if err != nil {
		t.Fatal(err)
	}
	wantPairs(t, scan(t, e, "r/", "r0", kv.RangeOptions{}),
		"r/0", "w0", "r/1", "c1", "r/2", "w2", "r/3", "w3", "r/4", "w4", "r/8", "w8", "r/a", "wa")
}

// testSnapshotIsolationReadOnly checks that a read-only transaction keeps
// reading its snapshot while another transaction commits.
func testSnapshotIsolationReadOnly(t *testing.T, e kv.Engine) {
	mustSet(t, e, "k", "v1", "r/1", "a", "r/3", "c")
	err := e.ReadTransact(t.Context(), func(tx kv.ReadTx) error {
		before, err := readState(tx)
		if err != nil {
			return err
		}
		version := tx.ReadVersion()
		err = e.Transact(context.Background(), func(w kv.Tx) error {
			if err := w.Set([]byte("k"), []byte("v2")); err != nil {
				return err
			}
			if err := w.Set([]byte("r/2"), []byte("b")); err != nil {
				return err
			}
			return w.Clear([]byte("r/3"))
		})
		if err != nil {
			return fmt.Errorf("concurrent commit: %w", err)
		}
		after, err := readState(tx)
		if err != nil {
			return err
		}
		if after != before {
			return fmt.Errorf("snapshot changed inside a transaction: before %s, after a concurrent commit %s", before, after)
		}
		if tx.ReadVersion() != version {
			return fmt.Errorf("ReadVersion changed inside a transaction: %d then %d", version, tx.ReadVersion())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, e, "k", "v2")
	wantKeys(t, scanKeys(t, e, "r/", "r0", kv.RangeOptions{}), "r/1", "r/2")
}

func readState(tx kv.ReadTx) (string, error) {
	v, found, err := tx.Get([]byte("k"))
	if err != nil {
		return "", err
	}
	kvs, err := tx.GetRange([]byte("r/"), []byte("r0"), kv.RangeOptions{})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("k=%q(found=%v) range=%q", v, found, keysOf(kvs)), nil
}

// testSnapshotIsolationReadWrite checks the same for a read-write
// transaction, which must then conflict (it read k) and on its retry see the
// new value.
func testSnapshotIsolationReadWrite(t *testing.T, e kv.Engine) {
	mustSet(t, e, "k", "v1")
	var seen []string
	attempts := victim(t, e,
		func(tx kv.Tx) error {
			v, _, err := tx.Get([]byte("k"))
			seen = append(seen, string(v))
			return err
		},
		func(tx kv.Tx) error { return tx.Set([]byte("k"), []byte("v2")) },
		func(tx kv.Tx) error {
			v, _, err := tx.Get([]byte("k"))
			if err != nil {
				return err
			}
			if string(v) != seen[len(seen)-1] {
				return fmt.Errorf("second read of k in one transaction = %q, first read %q", v, seen[len(seen)-1])
			}
			return tx.Set([]byte("copy"), v)
		},
	)
	if attempts != 2 || !slices.Equal(seen, []string{"v1", "v2"}) {
		t.Fatalf("attempts = %d reading %q, want 2 attempts reading [v1 v2]", attempts, seen)
	}
	wantValue(t, e, "copy", "v2")
}

func testReadVersionAdvances(t *testing.T, e kv.Engine) {
	readVersion := func() uint64 {
		var v uint64
		if err := e.ReadTransact(t.Context(), func(tx kv.ReadTx) error { v = tx.ReadVersion(); return nil }); err != nil {
			t.Fatal(err)
		}
		return v
	}
	v1 := readVersion()
	mustSet(t, e, "k", "v")
	v2 := readVersion()
	if v2 <= v1 {
		t.Fatalf("read version after a commit = %d, before it %d: want it to advance", v2, v1)
	}
	if v3 := readVersion(); v3 < v2 {
		t.Fatalf("read version went back from %d to %d", v2, v3)
	}
}
