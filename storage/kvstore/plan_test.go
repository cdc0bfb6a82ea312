package kvstore

import (
	"fmt"
	"sort"
	"testing"

	"github.com/emberfs/emberfs/storage/chunkengine"
)

func item(ns uint32, idx uint32, size, expires, access int64) Item {
	return Item{ID: chunkengine.ChunkID{Inode: 0xFE<<56 | uint64(ns)<<32, Index: idx}, NS: ns, Version: 1, Size: size, Expires: expires, Access: access}
}

func victims(vs []Victim) string {
	var s []string
	for _, v := range vs {
		s = append(s, fmt.Sprintf("%d/%d:%d", v.NS, v.ID.Index, v.Reason))
	}
	sort.Strings(s)
	return fmt.Sprint(s)
}

func TestPlanExpiry(t *testing.T) {
	items := []Item{
		item(1, 1, 10, 100, 0), // expires exactly now
		item(1, 2, 10, 101, 0), // one ns later
		item(1, 3, 10, 0, 0),   // never
		item(2, 4, 10, 50, 0),  // namespace without a policy still expires
	}
	bad := item(1, 5, 10, 0, 0)
	bad.Bad = true
	items = append(items, bad)
	got := Plan(items, map[uint32]Policy{1: {Share: 1000, Evict: true}}, 100)
	if want := fmt.Sprint([]string{"1/1:1", "1/5:3", "2/4:1"}); victims(got) != want {
		t.Fatalf("victims %s, want %s", victims(got), want)
	}
	if got := Plan(items[:3], nil, 99); len(got) != 0 {
		t.Fatalf("nothing is expired at 99, got %s", victims(got))
	}
}

func TestPlanEviction(t *testing.T) {
	// Ten 100-byte values, read at times 10*i; share 800: over by 200,
	// evict least recently read down to 720 (90%): three values.
	var items []Item
	for i := uint32(0); i < 10; i++ {
		items = append(items, item(1, i, 100, 0, int64(i)*10))
	}
	// Value 0 was read most recently of all.
	items[0].Access = 1000
	got := Plan(items, map[uint32]Policy{1: {Share: 800, Evict: true}}, 0)
	if want := fmt.Sprint([]string{"1/1:2", "1/2:2", "1/3:2"}); victims(got) != want {
		t.Fatalf("victims %s, want %s", victims(got), want)
	}
	// Exactly at the share: nothing.
	if got := Plan(items[:8], map[uint32]Policy{1: {Share: 800, Evict: true}}, 0); len(got) != 0 {
		t.Fatalf("at the share, got %s", victims(got))
	}
	// Eviction disabled, or no policy: nothing, whatever the usage.
	if got := Plan(items, map[uint32]Policy{1: {Share: 100, Evict: false}}, 0); len(got) != 0 {
		t.Fatalf("eviction disabled, got %s", victims(got))
	}
	if got := Plan(items, map[uint32]Policy{2: {Share: 100, Evict: true}}, 0); len(got) != 0 {
		t.Fatalf("no policy, got %s", victims(got))
	}
	// Expired values count as freed before eviction is decided.
	exp := append([]Item(nil), items...)
	exp[5].Expires, exp[6].Expires = 1, 1
	got = Plan(exp, map[uint32]Policy{1: {Share: 800, Evict: true}}, 1)
	if want := fmt.Sprint([]string{"1/5:1", "1/6:1"}); victims(got) != want {
		t.Fatalf("victims %s, want %s", victims(got), want)
	}
	// 800 live over a share of 700: down to 630, two values.
	got = Plan(exp, map[uint32]Policy{1: {Share: 700, Evict: true}}, 1)
	if want := fmt.Sprint([]string{"1/1:2", "1/2:2", "1/5:1", "1/6:1"}); victims(got) != want {
		t.Fatalf("victims %s, want %s", victims(got), want)
	}
	// Ties in access time break by chunk id, so every run agrees.
	tied := []Item{item(1, 9, 100, 0, 5), item(1, 3, 100, 0, 5), item(1, 7, 100, 0, 5)}
	got = Plan(tied, map[uint32]Policy{1: {Share: 250, Evict: true}}, 0)
	if want := fmt.Sprint([]string{"1/3:2"}); victims(got) != want {
		t.Fatalf("tie victims %s, want %s", victims(got), want)
	}
	// Namespaces are judged separately.
	two := []Item{item(1, 1, 500, 0, 1), item(2, 2, 500, 0, 0), item(2, 3, 500, 0, 2)}
	got = Plan(two, map[uint32]Policy{1: {Share: 600, Evict: true}, 2: {Share: 600, Evict: true}}, 0)
	if want := fmt.Sprint([]string{"2/2:2"}); victims(got) != want {
		t.Fatalf("per-namespace victims %s, want %s", victims(got), want)
	}
}
