package kvstore_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/kvstore"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// node returns the local-cluster node of a target (ids are node*100+i).
func node(target uint64) int { return int(target / 100) }

// stores returns every running target's KV store with its node.
func (k *kvCluster) stores() map[int]*kvstore.Store {
	out := map[int]*kvstore.Store{}
	for n := 1; n <= k.nodes; n++ {
		if s := k.StorageService(n); s != nil {
			out[n] = s.KVStore(s.TargetIDs()[0])
		}
	}
	return out
}

// onDisk reports on how many running replicas ref's chunk exists.
func (k *kvCluster) onDisk(ref storageclient.KVRef) int {
	c := 0
	for n := 1; n <= k.nodes; n++ {
		if s := k.StorageService(n); s != nil {
			if _, ok := s.Engine(s.TargetIDs()[0]).Stat(ref.Chunk); ok {
				c++
			}
		}
	}
	return c
}

func (n *namespace) stats(t *testing.T) kvformat.Stats {
	t.Helper()
	st, err := n.kvCluster.cl.KVStats(context.Background(), n.desc.ID, n.chains)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Many keys share four slots; concurrent putters and getters (single and
// batched) hammer them. Every get returns exactly its own key's bytes or
// a miss, never another key's.
func TestCollidingSlotsNeverReturnAnotherKey(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "collide", ID: 11, CapacityBytes: 1 << 30, Evict: true, SlotBits: 2})
	var keys []string
	slots := map[storageclient.ChunkID]int{}
	for i := 0; i < 24; i++ {
		key := fmt.Sprintf("block-%02d", i)
		keys = append(keys, key)
		slots[ns.ref(key).Chunk]++
	}
	if len(slots) > 4 {
		t.Fatalf("2 slot bits gave %d slots", len(slots))
	}
	// Each key's value has its own length and bytes.
	val := func(key string) []byte { return value(key, 1000+len(key)*37+int(key[len(key)-1])*101) }
	var wg sync.WaitGroup
	var hits, misses, bad sync.Map
	errs := make(chan error, 16)
	for p := 0; p < 3; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				key := keys[(i*7+p*5)%len(keys)]
				if err := ns.tryPut(key, val(key)); err != nil {
					errs <- fmt.Errorf("put %s: %v", key, err)
					return
				}
			}
		}()
	}
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for i := 0; i < 80; i++ {
				key := keys[(i*3+g*11)%len(keys)]
				h, m, err := k.cl.KVGet(context.Background(), ns.ref(key), buf)
				switch {
				case errcode.Is(err, errcode.NotFound):
					misses.Store(key, true)
				case err != nil:
					errs <- fmt.Errorf("get %s: %v", key, err)
					return
				case string(h.Key) != key || !bytes.Equal(buf[:m], val(key)):
					bad.Store(key, string(h.Key))
				default:
					hits.Store(key, true)
				}
				// A batch of eight keys, some sharing slots.
				if i%8 == 0 {
					refs := make([]storageclient.KVRef, 8)
					bufs := make([][]byte, 8)
					for j := range refs {
						refs[j] = ns.ref(keys[(i+j*5+g)%len(keys)])
						bufs[j] = make([]byte, 64<<10)
					}
					for j, r := range k.cl.KVGetBatch(context.Background(), refs, bufs) {
						key := string(refs[j].Key)
						switch {
						case errcode.Is(r.Err, errcode.NotFound):
						case r.Err != nil:
							errs <- fmt.Errorf("batch get %s: %v", key, r.Err)
							return
						case string(r.Header.Key) != key || !bytes.Equal(bufs[j][:r.N], val(key)):
							bad.Store(key, string(r.Header.Key))
						default:
							hits.Store(key, true)
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	bad.Range(func(k, v any) bool {
		t.Errorf("get of %v returned the bytes of %v", k, v)
		return true
	})
	// The test must have exercised both outcomes, or it proves nothing.
	nh, nm := 0, 0
	hits.Range(func(any, any) bool { nh++; return true })
	misses.Range(func(any, any) bool { nm++; return true })
	if nh == 0 || nm == 0 {
		t.Fatalf("%d keys hit and %d missed: the hammer did not exercise both", nh, nm)
	}
	// Afterwards each slot holds exactly one of its keys, complete.
	for _, key := range keys {
		if got := ns.get(t, key); got != nil && !bytes.Equal(got, val(key)) {
			t.Fatalf("%s: %d bytes that are not its value", key, len(got))
		}
	}
}

// A record corrupted on one replica's disk is never returned: the engine's
// checksum or the client's value CRC catches it and another replica (or a
// miss) answers.
func TestCorruptReplicaNeverReturned(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "corrupt", ID: 12, CapacityBytes: 1 << 30, Evict: true})
	for _, key := range []string{"cold", "warm", "header"} {
		ns.put(t, key, value(key, 100000))
	}
	// "warm" is read on every replica first, so the engines vouch for it
	// (their verification cache) and only the client's CRC stands guard.
	for i := 0; i < 6; i++ {
		ns.get(t, "warm")
	}
	flip := func(key string, off int64) {
		s := k.StorageService(2)
		testutil.FlipByte(t, s.Engine(s.TargetIDs()[0]).DataPath(ns.ref(key).Chunk), off)
	}
	flip("cold", 50000)
	flip("warm", 70000)
	flip("header", 10) // inside the record header
	for _, key := range []string{"cold", "warm", "header"} {
		for i := 0; i < 9; i++ { // every replica is first choice several times
			if got := ns.get(t, key); got != nil && !bytes.Equal(got, value(key, 100000)) {
				t.Fatalf("%s read %d: corrupt bytes returned", key, i)
			}
		}
	}
}

// A record corrupted on every replica is a miss for get and for exists
// (single and batched), never an error that would fail a whole batch of
// other keys and never the corrupt bytes; the other keys still answer.
func TestCorruptEveryReplicaIsAMiss(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "corrupt-all", ID: 14, CapacityBytes: 1 << 30, Evict: true})
	ctx := context.Background()
	ns.put(t, "bad", value("bad", 100000))
	ns.put(t, "good", value("good", 100000))
	flipped := 0
	for node := 1; node <= k.nodes; node++ { // nodes are numbered from 1
		s := k.StorageService(node)
		for _, tid := range s.TargetIDs() {
			path := s.Engine(tid).DataPath(ns.ref("bad").Chunk)
			if path == "" {
				continue
			}
			testutil.FlipByte(t, path, 60000)
			flipped++
		}
	}
	if flipped != 3 {
		t.Fatalf("flipped %d replicas, want 3", flipped)
	}
	refs := []storageclient.KVRef{ns.ref("good"), ns.ref("bad"), ns.ref("good")}
	// Twice: before any read has checked the value (exists reads only the
	// header, so "bad" may still look present), and after gets have found
	// every copy corrupt (then it is absent).
	for round := 0; round < 2; round++ {
		ex, err := k.cl.KVExists(ctx, refs)
		if err != nil || !ex[0] || !ex[2] || (round == 1 && ex[1]) {
			t.Fatalf("round %d: exists %v, %v; want [true %v true]", round, ex, err, round == 0)
		}
		for i := 0; i < 3; i++ {
			if got := ns.get(t, "bad"); got != nil {
				t.Fatalf("round %d: corrupt value returned (%d bytes)", round, len(got))
			}
		}
		if got := ns.get(t, "good"); !bytes.Equal(got, value("good", 100000)) {
			t.Fatalf("round %d: good key: %d bytes", round, len(got))
		}
	}
}

// Values expire at their TTL by the storage clock: reads miss at once, and
// the reclaimer removes them from every replica through the chain.
func TestTTLExpiryAndReclaim(t *testing.T) {
	k := startKV(t, 3, 3, 20*time.Millisecond)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "ttl", ID: 13, CapacityBytes: 1 << 30, Evict: true, TTLNanos: int64(10 * time.Second)})
	var keys []string
	for i := 0; i < 5; i++ {
		keys = append(keys, fmt.Sprintf("k%d", i))
		ns.put(t, keys[i], value(keys[i], 5000))
	}
	k.clock.Advance(9 * time.Second)
	ns.desc.TTLNanos = 0
	ns.put(t, "forever", value("forever", 10)) // no expiry
	for _, key := range keys {
		if ns.get(t, key) == nil {
			t.Fatalf("%s missed before its TTL", key)
		}
		if k.onDisk(ns.ref(key)) != 3 {
			t.Fatalf("%s reclaimed before its TTL", key)
		}
	}
	k.clock.Advance(time.Second) // exactly at expiry
	for _, key := range keys {
		if got := ns.get(t, key); got != nil {
			t.Fatalf("%s returned %d bytes after expiry", key, len(got))
		}
	}
	ex, err := k.cl.KVExists(context.Background(), []storageclient.KVRef{ns.ref(keys[0]), ns.ref("forever")})
	if err != nil || ex[0] || !ex[1] {
		t.Fatalf("exists after expiry: %v %v", ex, err)
	}
	testutil.WaitUntil(t, "expired values removed from every replica", func() bool {
		for _, key := range keys {
			if k.onDisk(ns.ref(key)) != 0 {
				return false
			}
		}
		return true
	})
	if k.onDisk(ns.ref("forever")) != 3 || ns.get(t, "forever") == nil {
		t.Fatal("a value without TTL was reclaimed")
	}
	if st := ns.stats(t); st.Expirations != 5 || st.Values != 1 {
		t.Fatalf("stats after reclaim: %+v", st)
	}
}

// Over its share, a namespace loses its least recently read values; the
// recently read and the newest stay.
func TestEvictionKeepsRecentlyRead(t *testing.T) {
	k := startKV(t, 3, 3, 20*time.Millisecond)
	const vsize = 64 << 10
	rec := int64(kvformat.FixedHeaderLen + len("cold-0") + vsize)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "lru", ID: 14, CapacityBytes: 10 * rec, Evict: true})
	var cold, hot, fresh []string
	for i := 0; i < 6; i++ {
		cold = append(cold, fmt.Sprintf("cold-%d", i))
	}
	for i := 0; i < 3; i++ {
		hot = append(hot, fmt.Sprintf("hott-%d", i))
		fresh = append(fresh, fmt.Sprintf("new0-%d", i))
	}
	for _, key := range append(append([]string(nil), cold...), hot...) {
		ns.put(t, key, value(key, vsize))
	}
	k.clock.Advance(time.Second)
	for _, key := range hot {
		for i := 0; i < 3; i++ { // reads rotate over the replicas: the head sees one
			if ns.get(t, key) == nil {
				t.Fatalf("%s missed before any eviction", key)
			}
		}
	}
	k.clock.Advance(time.Second)
	for _, key := range fresh {
		ns.put(t, key, value(key, vsize))
	}
	testutil.WaitUntil(t, "usage back within the share", func() bool {
		return int64(ns.stats(t).BytesStored) <= 10*rec
	})
	for _, key := range append(append([]string(nil), hot...), fresh...) {
		if got := ns.get(t, key); !bytes.Equal(got, value(key, vsize)) {
			t.Fatalf("%s was evicted (recently read or newest)", key)
		}
	}
	evicted := 0
	for _, key := range cold {
		if ns.get(t, key) == nil {
			evicted++
			if k.onDisk(ns.ref(key)) != 0 {
				t.Fatalf("%s evicted on the head but still on a replica", key)
			}
		}
	}
	st := ns.stats(t)
	if evicted == 0 || st.Evictions != uint64(evicted) {
		t.Fatalf("%d cold values gone, stats %+v", evicted, st)
	}
}

// With eviction disabled a full namespace refuses puts with NoSpace; a
// replace of an existing key and a put after a remove still fit.
func TestNoSpaceWhenEvictionDisabled(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	const vsize = 10000
	rec := int64(kvformat.FixedHeaderLen + len("key-0") + vsize)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "full", ID: 15, CapacityBytes: 3 * rec, Evict: false})
	for i := 0; i < 3; i++ {
		ns.put(t, fmt.Sprintf("key-%d", i), value("v", vsize))
	}
	err := ns.tryPut("key-3", value("v", vsize))
	if !errcode.Is(err, errcode.NoSpace) {
		t.Fatalf("put into a full namespace: %v, want NoSpace", err)
	}
	for _, part := range []string{`"full"`, fmt.Sprint(3 * rec), fmt.Sprint(3 * rec)} {
		if !strings.Contains(err.Error(), part) {
			t.Fatalf("error %q does not name %s", err, part)
		}
	}
	if ns.get(t, "key-3") != nil {
		t.Fatal("a refused put is readable")
	}
	ns.put(t, "key-1", value("w", vsize)) // replaces: same usage
	if err := k.cl.KVRemove(context.Background(), ns.ref("key-0")); err != nil {
		t.Fatal(err)
	}
	ns.put(t, "key-3", value("v", vsize))
	if got := ns.get(t, "key-3"); !bytes.Equal(got, value("v", vsize)) {
		t.Fatal("put after a remove not readable")
	}
}

// Stats count hits, misses and bytes on the replica that served them, and
// stored bytes and values once per chain.
func TestStats(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "stats", ID: 16, CapacityBytes: 1 << 30, Evict: true})
	other := k.createNamespace(t, kvformat.Descriptor{Name: "other", ID: 17, CapacityBytes: 1 << 30, Evict: true})
	ns.put(t, "a", value("a", 1000))
	ns.put(t, "bb", value("b", 3000))
	other.put(t, "a", value("a", 50))
	for i := 0; i < 4; i++ {
		ns.get(t, "a")
	}
	ns.get(t, "bb")
	ns.get(t, "missing")
	ns.get(t, "missing2")
	want := kvformat.Stats{Hits: 5, Misses: 2, BytesRead: 4*1000 + 3000, Values: 2,
		BytesStored: uint64(2*kvformat.FixedHeaderLen + len("a") + 1000 + len("bb") + 3000)}
	if st := ns.stats(t); st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	if st := other.stats(t); st.Values != 1 || st.Hits != 0 {
		t.Fatalf("other namespace's stats %+v", st)
	}
}

// Drop removes every chunk of one namespace from every replica and leaves
// the others alone.
func TestDrop(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "gone", ID: 18, CapacityBytes: 1 << 30, Evict: true})
	keep := k.createNamespace(t, kvformat.Descriptor{Name: "kept", ID: 19, CapacityBytes: 1 << 30, Evict: true})
	for i := 0; i < 10; i++ {
		key := fmt.Sprintf("k%d", i)
		ns.put(t, key, value(key, 2000))
		keep.put(t, key, value(key, 2000))
	}
	if err := k.cl.KVDrop(context.Background(), ns.desc.ID, ns.chains); err != nil {
		t.Fatal(err)
	}
	for n, st := range k.stores() {
		if b, v := st.Usage(ns.desc.ID); b != 0 || v != 0 {
			t.Fatalf("node %d still indexes %d values", n, v)
		}
		if _, ok := st.Descriptor(ns.desc.ID); ok {
			t.Fatalf("node %d still has the dropped descriptor", n)
		}
		s := k.StorageService(n)
		for _, m := range s.Engine(s.TargetIDs()[0]).Dump() {
			if kvformat.IsKVChunk(m.ID) && kvformat.NamespaceOf(m.ID) == ns.desc.ID {
				t.Fatalf("node %d still holds chunk %s", n, m.ID)
			}
		}
	}
	for i := 0; i < 10; i++ {
		key := fmt.Sprintf("k%d", i)
		if ns.get(t, key) != nil {
			t.Fatalf("%s readable after drop", key)
		}
		if !bytes.Equal(keep.get(t, key), value(key, 2000)) {
			t.Fatalf("%s of the other namespace lost", key)
		}
	}
	if st := ns.stats(t); st.Values != 0 || st.BytesStored != 0 {
		t.Fatalf("stats after drop %+v", st)
	}
}

// A replica stopped while gets run: every get returns the right bytes or
// a miss.
func TestReplicaStoppedMidReads(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "failover", ID: 20, CapacityBytes: 1 << 30, Evict: true})
	var keys []string
	for i := 0; i < 20; i++ {
		keys = append(keys, fmt.Sprintf("k%02d", i))
		ns.put(t, keys[i], value(keys[i], 30000))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	var done sync.WaitGroup
	done.Add(4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for i := 0; i < 120; i++ {
				if i == 20 {
					done.Done()
				}
				key := keys[(i+g*7)%len(keys)]
				_, m, err := k.cl.KVGet(context.Background(), ns.ref(key), buf)
				if errcode.Is(err, errcode.NotFound) {
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("get %s: %v", key, err)
					return
				}
				if !bytes.Equal(buf[:m], value(key, 30000)) {
					errs <- fmt.Errorf("get %s: wrong bytes", key)
					return
				}
			}
		}()
	}
	done.Wait() // every reader is under way
	k.StopStorage(2)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// After the failover every value is still there.
	for _, key := range keys {
		if !bytes.Equal(ns.get(t, key), value(key, 30000)) {
			t.Fatalf("%s lost after a replica stopped", key)
		}
	}
}

// A restarted storage service rebuilds its KV index from disk: usage,
// descriptors and reads are as before.
func TestRestartRebuildsIndex(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "restart", ID: 21, CapacityBytes: 1 << 30, Evict: true, TTLNanos: int64(time.Hour)})
	for i := 0; i < 8; i++ {
		key := fmt.Sprintf("k%d", i)
		ns.put(t, key, value(key, 4000+i))
	}
	before := map[int][2]int64{}
	for n, st := range k.stores() {
		b, v := st.Usage(ns.desc.ID)
		if v != 8 {
			t.Fatalf("node %d indexes %d values, want 8", n, v)
		}
		before[n] = [2]int64{b, v}
	}
	for n := 1; n <= 3; n++ {
		k.StopStorage(n)
	}
	for n := 1; n <= 3; n++ {
		if err := k.StartStorage(n); err != nil {
			t.Fatal(err)
		}
	}
	for n, st := range k.stores() {
		b, v := st.Usage(ns.desc.ID)
		if [2]int64{b, v} != before[n] {
			t.Fatalf("node %d after restart: %d bytes %d values, before %v", n, b, v, before[n])
		}
		d, ok := st.Descriptor(ns.desc.ID)
		if !ok || d.Name != "restart" || d.TTLNanos != int64(time.Hour) {
			t.Fatalf("node %d after restart: descriptor %+v %v", n, d, ok)
		}
	}
	testutil.WaitUntil(t, "chain serving again", func() bool { return len(k.Current().ServingTargets(ns.chains[0])) == 3 })
	for i := 0; i < 8; i++ {
		key := fmt.Sprintf("k%d", i)
		if !bytes.Equal(ns.get(t, key), value(key, 4000+i)) {
			t.Fatalf("%s unreadable after restart", key)
		}
	}
	// The rebuilt index keeps expiry: past the TTL the reclaimer of the
	// restarted head does not matter, reads miss by the header.
	k.clock.Advance(time.Hour)
	if ns.get(t, "k0") != nil {
		t.Fatal("expired value readable after restart")
	}
}
