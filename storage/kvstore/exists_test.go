package kvstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// existsEverywhere asks every running replica's store whether key is in
// its slot and fails unless each answers want (true: nil, false:
// NotFound).
func (n *namespace) existsEverywhere(t *testing.T, key string, want bool) {
	t.Helper()
	ref := n.ref(key)
	for node, st := range n.kvCluster.stores() {
		err := st.Exists(ref.Chunk, ref.Key)
		switch {
		case want && err != nil:
			t.Fatalf("node %d: exists %q: %v, want present", node, key, err)
		case !want && !errcode.Is(err, errcode.NotFound):
			t.Fatalf("node %d: exists %q: %v, want NotFound", node, key, err)
		}
	}
}

// fromDisk sums the stores' counts of Exists answers that read a header.
func (k *kvCluster) fromDisk() int64 {
	var n int64
	for _, st := range k.stores() {
		n += st.ExistsFromDisk()
	}
	return n
}

// collidingKeys returns two keys of ns that share a slot.
func collidingKeys(t *testing.T, ns *namespace) (string, string) {
	t.Helper()
	seen := map[chunkengine.ChunkID]string{}
	for i := 0; i < 1000; i++ {
		key := fmt.Sprintf("block-%d", i)
		if other, ok := seen[ns.ref(key).Chunk]; ok {
			return other, key
		}
		seen[ns.ref(key).Chunk] = key
	}
	t.Fatal("no two keys share a slot")
	return "", ""
}

// Exists answers from the index on every replica, exactly, through
// put, overwrite by a colliding key, remove and expiry, without reading a
// record header.
func TestExistsFromIndex(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "exists", ID: 40, CapacityBytes: 1 << 30, Evict: true, SlotBits: 3, TTLNanos: int64(time.Hour)})
	a, b := collidingKeys(t, ns)
	ns.put(t, a, value(a, 5000))
	disk := k.fromDisk()

	ns.existsEverywhere(t, a, true)
	ns.existsEverywhere(t, b, false) // same slot, another key
	ns.existsEverywhere(t, "never-put", false)

	// b overwrites a's slot: a is gone, b is there, on every replica.
	ns.put(t, b, value(b, 7000))
	ns.existsEverywhere(t, a, false)
	ns.existsEverywhere(t, b, true)

	// Overwrite with the same key keeps it present.
	ns.put(t, b, value(b, 100))
	ns.existsEverywhere(t, b, true)

	if err := k.cl.KVRemove(context.Background(), ns.ref(b)); err != nil {
		t.Fatal(err)
	}
	ns.existsEverywhere(t, b, false)

	// Expiry by the storage clock: present just before the TTL, gone at it.
	ns.put(t, a, value(a, 3000))
	k.clock.Advance(time.Hour - time.Nanosecond)
	ns.existsEverywhere(t, a, true)
	k.clock.Advance(time.Nanosecond)
	ns.existsEverywhere(t, a, false)

	if got := k.fromDisk() - disk; got != 0 {
		t.Fatalf("%d exists answers read a record header; the index should have answered all", got)
	}

	// Through the client: one frame per target, answers per key (in a
	// namespace with 64-bit slots, so the 64 keys do not collide).
	wide := k.createNamespace(t, kvformat.Descriptor{Name: "exists-wide", ID: 44, CapacityBytes: 1 << 30, Evict: true})
	var refs []storageclient.KVRef
	var want []bool
	for i := 0; i < 64; i++ {
		key := fmt.Sprintf("chain-%d", i)
		if i != 40 {
			wide.put(t, key, value(key, 64))
		}
		refs = append(refs, wide.ref(key))
		want = append(want, i != 40)
	}
	disk = k.fromDisk()
	got, err := k.cl.KVExists(context.Background(), refs)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("exists over 64 keys: %v, want %v", got, want)
	}
	if d := k.fromDisk() - disk; d != 0 {
		t.Fatalf("%d of 64 exists answers read a record header", d)
	}
}

// An index entry that is behind the engine (a change it was not told
// about) never vouches for a value: Exists then reads the header and
// answers by what is stored. The stale entry here has the very version
// number of the new content (a replace at the same version), so only the
// content checksum tells them apart.
func TestExistsStaleIndexReadsHeader(t *testing.T) {
	k := startKV(t, 1, 1, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "stale", ID: 41, CapacityBytes: 1 << 30, Evict: true, SlotBits: 3})
	a, b := collidingKeys(t, ns)
	ns.put(t, a, value(a, 5000))
	svc := k.StorageService(1)
	tid := svc.TargetIDs()[0]
	eng, st := svc.Engine(tid), svc.KVStore(tid)
	ref := ns.ref(a)
	m, ok := eng.Stat(ref.Chunk)
	if !ok {
		t.Fatal("a's chunk is not on the engine")
	}
	// Replace a's record with b's behind the index's back, same version.
	val := value(b, 5000)
	h := kvformat.NewHeader([]byte(b), val, k.clock.Now().UnixNano(), 0)
	rec := append(h.Encode(nil), val...)
	if _, err := eng.Apply(ref.Chunk, chunkengine.Update{Kind: chunkengine.UpdateReplace, Data: rec, Version: m.Version, ChunkSize: chunkengine.MaxChunkSize}); err != nil {
		t.Fatal(err)
	}
	if m2, _ := eng.Stat(ref.Chunk); m2.Version != m.Version {
		t.Fatalf("replace moved the version from %d to %d; the test needs it unchanged", m.Version, m2.Version)
	}
	disk := st.ExistsFromDisk()
	if err := st.Exists(ref.Chunk, []byte(a)); !errcode.Is(err, errcode.NotFound) {
		t.Fatalf("exists of the replaced key: %v, want NotFound", err)
	}
	if err := st.Exists(ref.Chunk, []byte(b)); err != nil {
		t.Fatalf("exists of the key now stored: %v", err)
	}
	if d := st.ExistsFromDisk() - disk; d != 2 {
		t.Fatalf("%d answers read the header, want 2 (the index entry is stale)", d)
	}
	// Once told, the index answers again by itself.
	st.Observe(ref.Chunk)
	disk = st.ExistsFromDisk()
	if err := st.Exists(ref.Chunk, []byte(b)); err != nil {
		t.Fatal(err)
	}
	if err := st.Exists(ref.Chunk, []byte(a)); !errcode.Is(err, errcode.NotFound) {
		t.Fatal(err)
	}
	if d := st.ExistsFromDisk() - disk; d != 0 {
		t.Fatalf("%d answers read the header after Observe", d)
	}
	// Removed behind the index's back: a miss, whatever the index holds.
	if _, err := eng.Apply(ref.Chunk, chunkengine.Update{Kind: chunkengine.UpdateRemove}); err != nil {
		t.Fatal(err)
	}
	if err := st.Exists(ref.Chunk, []byte(b)); !errcode.Is(err, errcode.NotFound) {
		t.Fatalf("exists after a removal the index did not see: %v", err)
	}
}

// A corrupt copy answers ChecksumMismatch on that replica (the client
// asks another), not "present".
func TestExistsCorruptReplica(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "corrupt-exists", ID: 42, CapacityBytes: 1 << 30, Evict: true})
	ns.put(t, "k", value("k", 20000))
	svc := k.StorageService(2)
	tid := svc.TargetIDs()[0]
	ref := ns.ref("k")
	if err := svc.Engine(tid).MarkCorrupt(ref.Chunk, "test"); err != nil {
		t.Fatal(err)
	}
	if err := svc.KVStore(tid).Exists(ref.Chunk, ref.Key); !errcode.Is(err, errcode.ChecksumMismatch) {
		t.Fatalf("exists on the corrupt replica: %v, want ChecksumMismatch", err)
	}
	for i := 0; i < 6; i++ { // every replica is asked first at some point
		ex, err := k.cl.KVExists(context.Background(), []storageclient.KVRef{ref})
		if err != nil || !ex[0] {
			t.Fatalf("client exists with one corrupt replica: %v %v", ex, err)
		}
	}
}

// A replica that was down while keys were put, overwritten and removed
// answers exists right from its index once it has been resynced.
func TestExistsAfterResync(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "resync", ID: 43, CapacityBytes: 1 << 30, Evict: true, SlotBits: 3})
	a, b := collidingKeys(t, ns)
	ns.put(t, a, value(a, 4000))
	ns.put(t, "removed", value("removed", 4000))
	ns.put(t, "kept", value("kept", 4000))
	k.StopStorage(3)
	testutil.WaitUntil(t, "node 3 out of the chains", func() bool {
		return len(k.Current().ServingTargets(ns.ref(a).Chain)) == 2 && len(k.Current().ServingTargets(ns.ref("removed").Chain)) == 2
	})
	ns.put(t, b, value(b, 4000)) // overwrites a's slot
	if err := k.cl.KVRemove(context.Background(), ns.ref("removed")); err != nil {
		t.Fatal(err)
	}
	ns.put(t, "new", value("new", 4000))
	if err := k.StartStorage(3); err != nil {
		t.Fatal(err)
	}
	for _, ch := range k.chains {
		testutil.WaitUntil(t, "node 3 serving again", func() bool { return len(k.Current().ServingTargets(ch)) == 3 })
	}
	svc := k.StorageService(3)
	st := svc.KVStore(svc.TargetIDs()[0])
	disk := st.ExistsFromDisk()
	for key, want := range map[string]bool{a: false, b: true, "removed": false, "kept": true, "new": true} {
		ref := ns.ref(key)
		err := st.Exists(ref.Chunk, ref.Key)
		if want != (err == nil) || (!want && !errcode.Is(err, errcode.NotFound)) {
			t.Fatalf("resynced replica: exists %q: %v, want present=%v", key, err, want)
		}
	}
	if d := st.ExistsFromDisk() - disk; d != 0 {
		t.Fatalf("%d answers on the resynced replica read the header", d)
	}
}
