package kvcache

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/localcluster/clustertest"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// One real in-process cluster (mgmtd, meta, 3 storage services, chains of
// 3 replicas) serves every test of the package; each test works in
// namespaces of its own.
var (
	cluster *localcluster.Cluster
	cl      *client.Client
)

func TestMain(m *testing.M) {
	var stop func()
	var err error
	cluster, stop, err = clustertest.StartMain(localcluster.Options{Storage: 3, Replicas: 3, TargetsPerNode: 2,
		HeartbeatInterval: 100 * time.Millisecond, FailureTimeout: 600 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cl, err = clustertest.NewClient(ctx, cluster, client.Config{})
	cancel()
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "connecting to the test cluster:", err)
	} else {
		code = m.Run()
		cl.Close()
	}
	stop()
	os.Exit(code)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newNS creates a namespace named after the test and opens it.
func newNS(t *testing.T, s Settings, o Options) *Cache {
	t.Helper()
	ctx := ctxT(t)
	name := strings.NewReplacer("/", "-", "#", "-").Replace(t.Name())
	if _, err := Create(ctx, cl, name, s); err != nil {
		t.Fatal(err)
	}
	k, err := Open(ctx, cl, name, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := Drop(ctx, cl, name); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	return k
}

// value is a recognisable value for key: its bytes depend on the key and
// a version, so a get returning another key's or another put's bytes is
// caught.
func value(key string, version, size int) []byte {
	b := make([]byte, size)
	seed := kvformat.KeyHash([]byte(fmt.Sprintf("%s/%d", key, version)))
	for i := range b {
		seed = seed*6364136223846793005 + 1442695040888963407
		b[i] = byte(seed >> 56)
	}
	return b
}

func wantCode(t *testing.T, err error, code errcode.Code, mention ...string) {
	t.Helper()
	if !errcode.Is(err, code) {
		t.Fatalf("got %v (code %v), want code %v", err, errcode.CodeOf(err), code)
	}
	for _, m := range mention {
		if !strings.Contains(err.Error(), m) {
			t.Fatalf("error %q does not mention %q", err, m)
		}
	}
}

func TestNamespaceLifecycle(t *testing.T) {
	ctx := ctxT(t)
	s := DefaultSettings(64 << 20)
	s.TTL = time.Hour
	ns, err := Create(ctx, cl, "life-a", s)
	if err != nil {
		t.Fatal(err)
	}
	if ns.ID == 0 || ns.ID > kvformat.MaxNamespaceID || ns.Replicas != 3 || len(ns.ChainIDs) == 0 || ns.Chains != len(ns.ChainIDs) ||
		ns.TTL() != time.Hour || !ns.Evict || ns.CapacityBytes != 64<<20 || ns.MaxValueBytes != DefaultMaxValueBytes {
		t.Fatalf("created %+v", ns)
	}
	if _, err := Create(ctx, cl, "life-b", Settings{CapacityBytes: 1 << 30, MaxValueBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	_, err = Create(ctx, cl, "life-a", s)
	wantCode(t, err, errcode.AlreadyExists, "life-a")

	got, err := Info(ctx, cl, "life-a")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ns.ID || got.Name != "life-a" || !equalU32(got.ChainIDs, ns.ChainIDs) {
		t.Fatalf("info %+v, created %+v", got, ns)
	}
	// Every chain's descriptor slot holds the namespace's settings.
	for i, chain := range ns.ChainIDs {
		buf := make([]byte, 4096)
		_, n, err := cl.Storage().KVGet(ctx, refDescriptor(ns.ID, i, chain), buf)
		if err != nil {
			t.Fatalf("descriptor on chain %d: %v", chain, err)
		}
		d, err := kvformat.DecodeDescriptor(buf[:n])
		if err != nil || d != ns.Descriptor {
			t.Fatalf("descriptor on chain %d: %+v, %v; want %+v", chain, d, err, ns.Descriptor)
		}
	}

	all, err := List(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]uint32{}
	for _, n := range all {
		names[n.Name] = n.ID
	}
	if names["life-a"] != ns.ID || names["life-b"] == 0 || names["life-b"] == ns.ID {
		t.Fatalf("list %v", names)
	}
	for n := range names {
		if strings.HasPrefix(n, ".") {
			t.Fatalf("list shows internal entry %q", n)
		}
	}

	// Values are stored, then drop removes registry and values.
	k, err := Open(ctx, cl, "life-a", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	ref := k.ref([]byte("k"))
	k.Close()
	if err := Drop(ctx, cl, "life-a"); err != nil {
		t.Fatal(err)
	}
	_, err = Info(ctx, cl, "life-a")
	wantCode(t, err, errcode.NotFound, "life-a")
	_, err = Open(ctx, cl, "life-a", Options{})
	wantCode(t, err, errcode.NotFound, "life-a")
	wantCode(t, Drop(ctx, cl, "life-a"), errcode.NotFound, "life-a")
	_, _, err = cl.Storage().KVGet(ctx, ref, make([]byte, 16))
	wantCode(t, err, errcode.NotFound)
	_, _, err = cl.Storage().KVGet(ctx, refDescriptor(ns.ID, 0, ns.ChainIDs[0]), make([]byte, 4096))
	wantCode(t, err, errcode.NotFound)
	if _, err := cl.Stat(ctx, meta.Root, meta.P(idPath(ns.ID))); !errcode.Is(err, errcode.NotFound) {
		t.Fatalf("id reservation after drop: %v", err)
	}
	// The name is free again.
	if _, err := Create(ctx, cl, "life-a", s); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"life-a", "life-b"} {
		if err := Drop(ctx, cl, n); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCreateRace(t *testing.T) {
	// Concurrent creators of one name: exactly one wins, the others get
	// AlreadyExists, and the losers leave no id reservation behind.
	ctx := ctxT(t)
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Create(ctx, cl, "race", DefaultSettings(1<<30))
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errcode.Is(err, errcode.AlreadyExists):
			t.Fatalf("create race: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d creators won", wins)
	}
	ents, err := cl.ReadDir(ctx, meta.Root, meta.P(idsDir), false)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := Info(ctx, cl, "race")
	if err != nil {
		t.Fatal(err)
	}
	ids := 0
	for _, e := range ents {
		if e.Name == fmt.Sprint(ns.ID) {
			ids++
		}
	}
	if ids != 1 {
		t.Fatalf("id %d reserved %d times", ns.ID, ids)
	}
	// Only live namespaces hold ids: no loser's reservation is left.
	all, _ := List(ctx, cl)
	if len(ents) != len(all) {
		t.Fatalf("%d id reservations for %d namespaces", len(ents), len(all))
	}
	if err := Drop(ctx, cl, "race"); err != nil {
		t.Fatal(err)
	}
}

func TestBadNamesAndSettings(t *testing.T) {
	ctx := ctxT(t)
	for _, name := range []string{"", ".hidden", "..", "a/b", "sp ace", "uni\u00e9", strings.Repeat("x", 129)} {
		if _, err := Create(ctx, cl, name, DefaultSettings(1<<30)); err == nil {
			t.Fatalf("name %q accepted", name)
		} else if !errcode.Is(err, errcode.InvalidArgument) && !errcode.Is(err, errcode.NameTooLong) {
			t.Fatalf("name %q: %v", name, err)
		}
		if _, err := Open(ctx, cl, name, Options{}); err == nil {
			t.Fatalf("open of bad name %q worked", name)
		}
	}
	if err := ValidateName(strings.Repeat("x", 128)); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		s       Settings
		code    errcode.Code
		mention string
	}{
		{Settings{}, errcode.InvalidArgument, "capacity"},
		{Settings{CapacityBytes: 1 << 30, MaxValueBytes: kvformat.MaxValueLen + 1}, errcode.InvalidArgument, "max value size"},
		{Settings{CapacityBytes: 1 << 30, TTL: -time.Second}, errcode.InvalidArgument, "TTL"},
		{Settings{CapacityBytes: 1 << 10, MaxValueBytes: 1 << 20}, errcode.InvalidArgument, "capacity"},
		{Settings{CapacityBytes: 1 << 30, Replicas: 2}, errcode.NotFound, "table 1: "},
		{Settings{CapacityBytes: 1 << 30, ChainTable: 77}, errcode.NotFound, "chain table 77"},
		{Settings{CapacityBytes: 1 << 30, ChainTable: localcluster.ChainTable, Replicas: 1}, errcode.InvalidArgument, "3 replicas"},
	}
	for _, b := range bad {
		_, err := Create(ctx, cl, "bad-settings", b.s)
		wantCode(t, err, b.code, b.mention)
	}
	if _, err := Info(ctx, cl, "bad-settings"); !errcode.Is(err, errcode.NotFound) {
		t.Fatalf("a refused create left a namespace: %v", err)
	}
}

func TestOps(t *testing.T) {
	ctx := ctxT(t)
	k := newNS(t, Settings{CapacityBytes: 1 << 30, MaxValueBytes: 1 << 20, Evict: true}, Options{})
	keys := [][]byte{[]byte("a"), []byte("block-1"), bytes.Repeat([]byte{0xff}, kvformat.MaxKeyLen)}
	for i, key := range keys {
		if err := k.Put(ctx, key, value(string(key), 0, 1000*(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	// Get, GetInto: right bytes; a miss is (nil/0, false, nil).
	for i, key := range keys {
		want := value(string(key), 0, 1000*(i+1))
		got, found, err := k.Get(ctx, key)
		if err != nil || !found || !bytes.Equal(got, want) {
			t.Fatalf("get %q: %d bytes, %v, %v", key, len(got), found, err)
		}
		buf := make([]byte, 5000)
		n, found, err := k.GetInto(ctx, key, buf)
		if err != nil || !found || !bytes.Equal(buf[:n], want) {
			t.Fatalf("get_into %q: %d, %v, %v", key, n, found, err)
		}
	}
	if v, found, err := k.Get(ctx, []byte("nope")); err != nil || found || v != nil {
		t.Fatalf("get of a missing key: %v, %v, %v", v, found, err)
	}
	if n, found, err := k.GetInto(ctx, []byte("nope"), make([]byte, 10)); err != nil || found || n != 0 {
		t.Fatalf("get_into of a missing key: %v, %v, %v", n, found, err)
	}
	// Overwrite replaces; a zero-length value is a value.
	if err := k.Put(ctx, keys[0], value("a", 1, 300)); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := k.Get(ctx, keys[0]); !bytes.Equal(got, value("a", 1, 300)) {
		t.Fatal("overwrite not seen")
	}
	if err := k.PutFrom(ctx, []byte("empty"), nil); err != nil {
		t.Fatal(err)
	}
	if got, found, err := k.Get(ctx, []byte("empty")); err != nil || !found || len(got) != 0 {
		t.Fatalf("empty value: %v %v %v", got, found, err)
	}
	// Exists, batched.
	ex, err := k.Exists(ctx, [][]byte{keys[0], []byte("nope"), keys[2], []byte("empty")})
	if err != nil || fmt.Sprint(ex) != "[true false true true]" {
		t.Fatalf("exists: %v, %v", ex, err)
	}
	// Remove; removing a missing key is fine.
	if err := k.Remove(ctx, keys[1]); err != nil {
		t.Fatal(err)
	}
	if err := k.Remove(ctx, keys[1]); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := k.Get(ctx, keys[1]); found {
		t.Fatal("removed key found")
	}
	// Batches: values land in their own buffers, misses are -1.
	var bk, bv [][]byte
	for i := range 40 {
		key := fmt.Sprintf("batch-%d", i)
		bk = append(bk, []byte(key))
		bv = append(bv, value(key, 0, 100+i*97))
	}
	for i, err := range k.BatchPutFrom(ctx, bk, bv) {
		if err != nil {
			t.Fatalf("batch put %d: %v", i, err)
		}
	}
	getKeys := append(append([][]byte{}, bk...), []byte("nope"))
	bufs := make([][]byte, len(getKeys))
	for i := range bufs {
		bufs[i] = make([]byte, 5000)
	}
	ns, err := k.BatchGetInto(ctx, getKeys, bufs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range bk {
		if ns[i] != len(bv[i]) || !bytes.Equal(bufs[i][:ns[i]], bv[i]) {
			t.Fatalf("batch get %d: n=%d, want %d bytes", i, ns[i], len(bv[i]))
		}
	}
	if ns[len(bk)] != -1 {
		t.Fatalf("batch get of a missing key: n=%d", ns[len(bk)])
	}
	// Stats: this client's counters, and the cluster's.
	st, err := k.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Client.Puts != 45 || st.Client.Misses < 3 || st.Client.Hits < 47 {
		t.Fatalf("client stats %+v", st.Client)
	}
	if st.Cluster.Values < 43 || st.Cluster.Values > 43+uint64(len(k.Namespace().ChainIDs)) || st.Cluster.Hits < st.Client.Hits || st.Cluster.Misses < 3 {
		t.Fatalf("cluster stats %+v (client %+v)", st.Cluster, st.Client)
	}
}

func TestBadInput(t *testing.T) {
	ctx := ctxT(t)
	k := newNS(t, Settings{CapacityBytes: 1 << 30, MaxValueBytes: 64 << 10, Evict: true}, Options{})
	long := make([]byte, kvformat.MaxKeyLen+1)
	for _, key := range [][]byte{nil, {}, long} {
		wantCode(t, k.Put(ctx, key, []byte("v")), errcode.InvalidArgument, "key")
		_, _, err := k.Get(ctx, key)
		wantCode(t, err, errcode.InvalidArgument, "key")
		_, _, err = k.GetInto(ctx, key, make([]byte, 1))
		wantCode(t, err, errcode.InvalidArgument, "key")
		_, err = k.Exists(ctx, [][]byte{[]byte("ok"), key})
		wantCode(t, err, errcode.InvalidArgument, "key 1 of 2")
		_, err = k.LongestPrefix(ctx, [][]byte{key})
		wantCode(t, err, errcode.InvalidArgument, "key")
		wantCode(t, k.Remove(ctx, key), errcode.InvalidArgument, "key")
		_, err = k.BatchGetInto(ctx, [][]byte{key}, [][]byte{make([]byte, 1)})
		wantCode(t, err, errcode.InvalidArgument, "key")
	}
	// Oversized value: refused, naming both sizes; the old value stays.
	if err := k.Put(ctx, []byte("big"), value("big", 0, 1000)); err != nil {
		t.Fatal(err)
	}
	err := k.Put(ctx, []byte("big"), make([]byte, 64<<10+1))
	wantCode(t, err, errcode.InvalidArgument, "65537", "65536", t.Name())
	if got, _, _ := k.Get(ctx, []byte("big")); !bytes.Equal(got, value("big", 0, 1000)) {
		t.Fatal("a refused put changed the stored value")
	}
	if err := k.Put(ctx, []byte("max"), make([]byte, 64<<10)); err != nil {
		t.Fatalf("a value of exactly the max size: %v", err)
	}
	// Buffer too small: OutOfRange naming both sizes, buffer untouched.
	buf := bytes.Repeat([]byte{0xAA}, 999)
	_, _, err = k.GetInto(ctx, []byte("big"), buf)
	wantCode(t, err, errcode.OutOfRange, "1000", "999")
	if !bytes.Equal(buf, bytes.Repeat([]byte{0xAA}, 999)) {
		t.Fatal("a too-small buffer was written")
	}
	ns, err := k.BatchGetInto(ctx, [][]byte{[]byte("big"), []byte("max")}, [][]byte{make([]byte, 10), make([]byte, 64<<10)})
	wantCode(t, err, errcode.OutOfRange, "1000")
	if ns[0] != -1 || ns[1] != 64<<10 {
		t.Fatalf("batch with one small buffer: %v", ns)
	}
	// Mismatched batch lengths.
	_, err = k.BatchGetInto(ctx, [][]byte{[]byte("a")}, nil)
	wantCode(t, err, errcode.InvalidArgument, "1 keys but 0 buffers")
	for _, err := range k.BatchPutFrom(ctx, [][]byte{[]byte("a")}, nil) {
		wantCode(t, err, errcode.InvalidArgument, "1 keys but 0 values")
	}
	// A closed cache refuses calls.
	k2, err := Open(ctx, cl, k.Namespace().Name, Options{MemoryTierBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	k2.Close()
	_, _, err = k2.Get(ctx, []byte("big"))
	wantCode(t, err, errcode.BadFile, "closed")
}

func TestMemoryTier(t *testing.T) {
	ctx := ctxT(t)
	k := newNS(t, Settings{CapacityBytes: 1 << 30, MaxValueBytes: 1 << 20, Evict: true}, Options{MemoryTierBytes: 8 << 20})
	other, err := Open(ctx, cl, k.Namespace().Name, Options{}) // no tier: sees the cluster only
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	want := value("hot", 0, 100<<10)
	if err := k.Put(ctx, []byte("hot"), want); err != nil {
		t.Fatal(err)
	}
	k.tier.wait()
	// Remove the value behind the tier's back: k still serves it from
	// memory (so the hit really came from the tier), other misses.
	if err := other.Remove(ctx, []byte("hot")); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := other.Get(ctx, []byte("hot")); found {
		t.Fatal("removed value still in the cluster")
	}
	got, found, err := k.Get(ctx, []byte("hot"))
	if err != nil || !found || !bytes.Equal(got, want) {
		t.Fatalf("tier get: %v, %v", found, err)
	}
	buf := make([]byte, 200<<10)
	if n, found, err := k.GetInto(ctx, []byte("hot"), buf); err != nil || !found || !bytes.Equal(buf[:n], want) {
		t.Fatalf("tier get_into: %v, %v", found, err)
	}
	_, _, err = k.GetInto(ctx, []byte("hot"), make([]byte, 10))
	wantCode(t, err, errcode.OutOfRange, "102400", "10")
	if n, _ := k.LongestPrefix(ctx, [][]byte{[]byte("hot"), []byte("cold")}); n != 1 {
		t.Fatalf("longest prefix through the tier: %d", n)
	}
	if st := k.ClientStats(); st.TierHits != 2 || st.Hits != 2 {
		t.Fatalf("client stats %+v", st)
	}
	// A get from the cluster fills the tier too.
	if err := other.Put(ctx, []byte("warm"), want); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := k.Get(ctx, []byte("warm")); !found {
		t.Fatal("warm miss")
	}
	k.tier.wait()
	if err := other.Remove(ctx, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	if got, found, _ := k.Get(ctx, []byte("warm")); !found || !bytes.Equal(got, want) {
		t.Fatal("a cluster hit did not fill the tier")
	}
	// The caller's buffer is not the tier's: changing it after a put
	// changes nothing cached.
	mine := value("mine", 0, 1000)
	if err := k.PutFrom(ctx, []byte("mine"), mine); err != nil {
		t.Fatal(err)
	}
	k.tier.wait()
	mine[0] ^= 0xff
	if got, _, _ := k.Get(ctx, []byte("mine")); !bytes.Equal(got, value("mine", 0, 1000)) {
		t.Fatal("the tier aliased the caller's buffer")
	}
	// Remove through k drops the tier entry.
	if err := k.Remove(ctx, []byte("mine")); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := k.Get(ctx, []byte("mine")); found {
		t.Fatal("removed key served from the tier")
	}
}

func TestMemoryTierTTL(t *testing.T) {
	ctx := ctxT(t)
	k := newNS(t, Settings{CapacityBytes: 1 << 30, MaxValueBytes: 1 << 20, TTL: 300 * time.Millisecond, Evict: true},
		Options{MemoryTierBytes: 8 << 20})
	if err := k.Put(ctx, []byte("t"), []byte("value")); err != nil {
		t.Fatal(err)
	}
	k.tier.wait()
	if v, ok := k.tier.get([]byte("t"), time.Now().UnixNano()); !ok || string(v) != "value" {
		t.Fatal("not in the tier after a put")
	}
	// Past the expiry the tier does not serve it (checked at a given
	// clock, so no sleep is needed for the tier's part).
	if _, ok := k.tier.get([]byte("t"), time.Now().Add(time.Second).UnixNano()); ok {
		t.Fatal("the tier served an expired value")
	}
}

// Keys form a prefix-hash chain; LongestPrefix counts the leading keys
// present and stops at the first hole.
func TestLongestPrefix(t *testing.T) {
	ctx := ctxT(t)
	k := newNS(t, Settings{CapacityBytes: 1 << 30, MaxValueBytes: 64 << 10, Evict: true}, Options{})
	var keys [][]byte
	prev := uint64(0)
	for i := range 64 {
		prev = kvformat.KeyHash([]byte(fmt.Sprintf("%x/%d", prev, i)))
		keys = append(keys, []byte(fmt.Sprintf("%016x", prev)))
	}
	if n, err := k.LongestPrefix(ctx, keys); err != nil || n != 0 {
		t.Fatalf("empty namespace: %d, %v", n, err)
	}
	if n, err := k.LongestPrefix(ctx, nil); err != nil || n != 0 {
		t.Fatalf("no keys: %d, %v", n, err)
	}
	vals := make([][]byte, len(keys))
	for i := range vals {
		vals[i] = value(string(keys[i]), 0, 512)
	}
	for _, err := range k.BatchPutFrom(ctx, keys, vals) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, err := k.LongestPrefix(ctx, keys); err != nil || n != 64 {
		t.Fatalf("all present: %d, %v", n, err)
	}
	for _, hole := range []int{40, 17, 0} {
		if err := k.Remove(ctx, keys[hole]); err != nil {
			t.Fatal(err)
		}
		if n, err := k.LongestPrefix(ctx, keys); err != nil || n != hole {
			t.Fatalf("hole at %d: %d, %v", hole, n, err)
		}
	}
	// Keys after a hole do not count even though present.
	if ex, _ := k.Exists(ctx, keys[1:3]); !ex[0] || !ex[1] {
		t.Fatal("keys after the hole missing")
	}
}

func TestTTLExpiry(t *testing.T) {
	ctx := ctxT(t)
	k := newNS(t, Settings{CapacityBytes: 1 << 30, MaxValueBytes: 64 << 10, TTL: 500 * time.Millisecond, Evict: true}, Options{})
	if err := k.Put(ctx, []byte("short"), []byte("lived")); err != nil {
		t.Fatal(err)
	}
	// Reading it back right away works on any reasonable machine, but that
	// would be a timing assertion; what must hold is that it goes away.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, found, err := k.Get(ctx, []byte("short"))
		if err != nil {
			t.Fatal(err)
		}
		ex, err := k.Exists(ctx, [][]byte{[]byte("short")})
		if err != nil {
			t.Fatal(err)
		}
		if !found && !ex[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("value still there 30 s after a 500 ms TTL")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The stored header carries the expiry the namespace's TTL gave it.
	if err := k.Put(ctx, []byte("stamped"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	h, _, err := cl.Storage().KVGet(ctx, k.ref([]byte("stamped")), make([]byte, 8))
	if err == nil && h.Expires-h.Created != int64(500*time.Millisecond) {
		t.Fatalf("header created %d expires %d: not the namespace TTL apart", h.Created, h.Expires)
	} else if err != nil && !errcode.Is(err, errcode.NotFound) { // NotFound: already expired
		t.Fatal(err)
	}
}

func TestEvictionWithSmallCapacity(t *testing.T) {
	ctx := ctxT(t)
	const valSize = 64 << 10
	k := newNS(t, Settings{CapacityBytes: 2 << 20, MaxValueBytes: valSize, Evict: true}, Options{})
	capacity := k.Namespace().CapacityBytes
	// Write 4x the capacity: every put succeeds (eviction makes room).
	var keys [][]byte
	for i := range 4 * int(capacity) / valSize {
		key := []byte(fmt.Sprintf("evict-%d", i))
		keys = append(keys, key)
		if err := k.Put(ctx, key, value(string(key), 0, valSize)); err != nil {
			t.Fatalf("put %d with eviction on: %v", i, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := k.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Cluster.Evictions > 0 && int64(st.Cluster.BytesStored) <= capacity {
			t.Logf("stats after eviction: %+v", st.Cluster)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no eviction down to the capacity of %d within 30 s: %+v", capacity, st.Cluster)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// What remains is intact; what was evicted is a miss.
	hits := 0
	for _, key := range keys {
		got, found, err := k.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if found {
			hits++
			if !bytes.Equal(got, value(string(key), 0, valSize)) {
				t.Fatalf("key %s: wrong bytes after eviction", key)
			}
		}
	}
	if hits == 0 || hits == len(keys) {
		t.Fatalf("%d of %d keys left after eviction", hits, len(keys))
	}
}

func TestNoSpaceWithEvictionOff(t *testing.T) {
	ctx := ctxT(t)
	const valSize = 64 << 10
	k := newNS(t, Settings{CapacityBytes: 1 << 20, MaxValueBytes: valSize, Evict: false}, Options{})
	var err error
	stored := 0
	for i := range 200 {
		key := []byte(fmt.Sprintf("full-%d", i))
		if err = k.Put(ctx, key, value(string(key), 0, valSize)); err != nil {
			break
		}
		stored++
	}
	wantCode(t, err, errcode.NoSpace, t.Name())
	if stored == 0 || int64(stored*valSize) > 2*k.Namespace().CapacityBytes {
		t.Fatalf("%d values of %d bytes stored before NoSpace (capacity %d)", stored, valSize, k.Namespace().CapacityBytes)
	}
	// Nothing stored was lost or damaged by the refusals.
	for i := range stored {
		key := []byte(fmt.Sprintf("full-%d", i))
		got, found, err := k.Get(ctx, key)
		if err != nil || !found || !bytes.Equal(got, value(string(key), 0, valSize)) {
			t.Fatalf("key %s after NoSpace: %v %v", key, found, err)
		}
	}
}

// Many putters of one key with different values: afterwards the key holds
// exactly one of them, whole.
func TestConcurrentPutsOneKey(t *testing.T) {
	ctx := ctxT(t)
	k := newNS(t, Settings{CapacityBytes: 1 << 30, MaxValueBytes: 1 << 20, Evict: true}, Options{})
	const putters, rounds = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, putters*rounds)
	for p := range putters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				if err := k.Put(ctx, []byte("contended"), value("contended", p*rounds+r, 256<<10+p)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, found, err := k.Get(ctx, []byte("contended"))
	if err != nil || !found {
		t.Fatalf("after the race: %v %v", found, err)
	}
	for p := range putters {
		for r := range rounds {
			if bytes.Equal(got, value("contended", p*rounds+r, 256<<10+p)) {
				return
			}
		}
	}
	t.Fatalf("the key holds %d bytes that are none of the values put", len(got))
}

// With 2 slot bits every key shares one of 4 slots with many others:
// hammering them from several goroutines, every get returns its own key's
// bytes or a miss, never another key's.
func TestCollidingSlotsNeverReturnOtherKeys(t *testing.T) {
	ctx := ctxT(t)
	k := newNS(t, Settings{CapacityBytes: 1 << 30, MaxValueBytes: 64 << 10, Evict: true, SlotBits: 2}, Options{})
	const workers, ops, nkeys = 6, 60, 24
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var hits, misses sync.Map
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for i := range ops {
				key := fmt.Sprintf("collide-%d", (w*7+i*5)%nkeys)
				if i%3 == 0 {
					if err := k.Put(ctx, []byte(key), value(key, 0, 1000+len(key))); err != nil {
						errs <- err
						return
					}
					continue
				}
				n, found, err := k.GetInto(ctx, []byte(key), buf)
				if err != nil {
					errs <- err
					return
				}
				if !found {
					misses.Store(key, true)
					continue
				}
				if !bytes.Equal(buf[:n], value(key, 0, 1000+len(key))) {
					errs <- fmt.Errorf("get %s returned %d bytes that are not its value", key, n)
					return
				}
				hits.Store(key, true)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	nh := 0
	hits.Range(func(any, any) bool { nh++; return true })
	if nh == 0 {
		t.Fatal("no get ever hit: the test checked nothing")
	}
	// Batches over colliding keys: same rule.
	var keys, bufs [][]byte
	for i := range nkeys {
		keys = append(keys, []byte(fmt.Sprintf("collide-%d", i)))
		bufs = append(bufs, make([]byte, 64<<10))
	}
	ns, err := k.BatchGetInto(ctx, keys, bufs)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range ns {
		if n >= 0 && !bytes.Equal(bufs[i][:n], value(string(keys[i]), 0, 1000+len(keys[i]))) {
			t.Fatalf("batch get %s returned another value", keys[i])
		}
	}
}

func refDescriptor(ns uint32, index int, chain uint32) storageclient.KVRef {
	return storageclient.KVRef{Chain: chain, Chunk: kvformat.DescriptorChunk(ns, index), Key: kvformat.DescriptorKey}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
