package kvstore_test

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/service"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// fakeClock is the storage services' KV clock in these tests.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type kvCluster struct {
	*localcluster.Cluster
	chains []uint32
	cl     *storageclient.Client
	clock  *fakeClock
	nodes  int
}

// startKV starts nodes storage services in chains of replicas targets
// with a fake KV clock; reclaim is the reclaimer period (0: an hour, so
// it stays out of the way unless the test drives it).
func startKV(t testing.TB, nodes, replicas int, reclaim time.Duration) *kvCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	if reclaim == 0 {
		reclaim = time.Hour
	}
	clock := newClock()
	o := localcluster.StorageOnly(t.TempDir(), nodes)
	o.NoSync, o.Logger = true, testutil.Logger()
	o.StorageConfig = func(_ int, cfg *service.Config) {
		cfg.KVNow = clock.Now
		cfg.KVReclaimInterval.Duration = reclaim
	}
	c, err := localcluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	chains, err := c.CreateChains(ctx, replicas)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.StorageClient(storageclient.Config{RetryTimeout: testutil.Eventually})
	t.Cleanup(func() { cl.Close() })
	return &kvCluster{Cluster: c, chains: chains, cl: cl, clock: clock, nodes: nodes}
}

// namespace is a test namespace: its descriptor and where keys go.
type namespace struct {
	kvCluster *kvCluster
	desc      kvformat.Descriptor
	chains    []uint32
}

// createNamespace writes d's descriptor record into each chain's
// descriptor slot, as the kvcache client does when it creates one.
func (k *kvCluster) createNamespace(t testing.TB, d kvformat.Descriptor) *namespace {
	t.Helper()
	d.Chains = len(k.chains)
	val := d.Encode()
	h := kvformat.NewHeader(kvformat.DescriptorKey, val, k.clock.Now().UnixNano(), 0)
	for i, ch := range k.chains {
		ref := storageclient.KVRef{Chain: ch, Chunk: kvformat.DescriptorChunk(d.ID, i), Key: kvformat.DescriptorKey}
		if err := k.cl.KVPut(context.Background(), ref, h.Encode(nil), val); err != nil {
			t.Fatalf("descriptor of namespace %q on chain %d: %v", d.Name, ch, err)
		}
	}
	return &namespace{kvCluster: k, desc: d, chains: k.chains}
}

func (n *namespace) ref(key string) storageclient.KVRef {
	s := kvformat.SlotOf(n.desc.ID, []byte(key), len(n.chains), n.desc.SlotBits)
	return storageclient.KVRef{Chain: n.chains[s.ChainIndex], Chunk: s.Chunk, Key: []byte(key)}
}

func (n *namespace) put(t testing.TB, key string, value []byte) {
	t.Helper()
	if err := n.tryPut(key, value); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

func (n *namespace) tryPut(key string, value []byte) error {
	now := n.kvCluster.clock.Now().UnixNano()
	var exp int64
	if n.desc.TTLNanos > 0 {
		exp = now + n.desc.TTLNanos
	}
	h := kvformat.NewHeader([]byte(key), value, now, exp)
	return n.kvCluster.cl.KVPut(context.Background(), n.ref(key), h.Encode(nil), value)
}

// get returns key's value, or nil on a miss; any other error fails.
func (n *namespace) get(t testing.TB, key string) []byte {
	t.Helper()
	buf := make([]byte, 1<<20)
	h, m, err := n.kvCluster.cl.KVGet(context.Background(), n.ref(key), buf)
	if errcode.Is(err, errcode.NotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	if string(h.Key) != key || int(h.ValueLen) != m {
		t.Fatalf("get %q: header %+v, n %d", key, h, m)
	}
	return buf[:m]
}

func value(key string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = key[i%len(key)] ^ byte(i*31)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "rt", ID: 7, CapacityBytes: 1 << 30, Evict: true})
	ctx := context.Background()
	sizes := map[string]int{"empty-ish": 1, "small": 4 << 10, "medium": 256 << 10, "large": 1 << 20}
	for key, n := range sizes {
		ns.put(t, key, value(key, n))
	}
	for key, n := range sizes {
		if got := ns.get(t, key); !bytes.Equal(got, value(key, n)) {
			t.Fatalf("%q: got %d bytes, want %d (contents differ)", key, len(got), n)
		}
	}
	if got := ns.get(t, "never-put"); got != nil {
		t.Fatalf("a key never put returned %d bytes", len(got))
	}
	// Exists over keys on several chains (and a miss) in one call.
	refs := []storageclient.KVRef{ns.ref("small"), ns.ref("never-put"), ns.ref("large"), ns.ref("medium")}
	ex, err := k.cl.KVExists(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, true, true}; fmt.Sprint(ex) != fmt.Sprint(want) {
		t.Fatalf("exists %v, want %v", ex, want)
	}
	// Overwrite: the new value replaces the old on every replica.
	ns.put(t, "small", value("other", 3000))
	if got := ns.get(t, "small"); !bytes.Equal(got, value("other", 3000)) {
		t.Fatalf("after overwrite got %d bytes", len(got))
	}
	for i := 0; i < 3; i++ { // reads rotate over the replicas
		if got := ns.get(t, "small"); !bytes.Equal(got, value("other", 3000)) {
			t.Fatalf("read %d after overwrite got %d bytes", i, len(got))
		}
	}
	if err := k.cl.KVRemove(ctx, ns.ref("small")); err != nil {
		t.Fatal(err)
	}
	if got := ns.get(t, "small"); got != nil {
		t.Fatalf("removed key returned %d bytes", len(got))
	}
	if err := k.cl.KVRemove(ctx, ns.ref("small")); err != nil {
		t.Fatalf("removing an empty slot: %v", err)
	}
	if ex, err := k.cl.KVExists(ctx, refs[:1]); err != nil || ex[0] {
		t.Fatalf("exists after remove: %v %v", ex, err)
	}
}

func TestGetIntoTooSmallBuffer(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "small-buf", ID: 8, CapacityBytes: 1 << 30, Evict: true})
	ns.put(t, "k", value("k", 5000))
	buf := bytes.Repeat([]byte{0xAB}, 4999)
	_, _, err := k.cl.KVGet(context.Background(), ns.ref("k"), buf)
	if !errcode.Is(err, errcode.OutOfRange) {
		t.Fatalf("get into a 4999-byte buffer: %v, want OutOfRange", err)
	}
	msg := err.Error()
	if !bytes.Contains([]byte(msg), []byte("5000")) || !bytes.Contains([]byte(msg), []byte("4999")) {
		t.Fatalf("error %q does not name both sizes", msg)
	}
	if !bytes.Equal(buf, bytes.Repeat([]byte{0xAB}, 4999)) {
		t.Fatal("the buffer was written on OutOfRange")
	}
	// A buffer whose capacity is larger than its length still bounds the read.
	big := make([]byte, 100, 10000)
	if _, _, err := k.cl.KVGet(context.Background(), ns.ref("k"), big); !errcode.Is(err, errcode.OutOfRange) {
		t.Fatalf("len 100 cap 10000: %v", err)
	}
	if n := k.cl; n == nil {
		t.Fatal("no client")
	}
	exact := make([]byte, 5000)
	if _, n, err := k.cl.KVGet(context.Background(), ns.ref("k"), exact); err != nil || n != 5000 || !bytes.Equal(exact, value("k", 5000)) {
		t.Fatalf("exact buffer: n %d err %v", n, err)
	}
}

func TestBadInput(t *testing.T) {
	k := startKV(t, 1, 1, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "bad", ID: 9, CapacityBytes: 1 << 30, Evict: true})
	ctx := context.Background()
	ref := ns.ref("key")
	// Not a record: refused by the head, nothing stored.
	if err := k.cl.KVPut(ctx, ref, bytes.Repeat([]byte{1}, kvformat.FixedHeaderLen), []byte("v")); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("garbage header: %v", err)
	}
	// A header whose length disagrees with the value.
	h := kvformat.NewHeader([]byte("key"), []byte("value"), 1, 0)
	if err := k.cl.KVPut(ctx, ref, h.Encode(nil), []byte("val")); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("short value: %v", err)
	}
	if ex, err := k.cl.KVExists(ctx, []storageclient.KVRef{ref}); err != nil || ex[0] {
		t.Fatalf("a refused put left something: %v %v", ex, err)
	}
	if _, _, err := k.cl.KVGet(ctx, storageclient.KVRef{Chain: ref.Chain, Chunk: ref.Chunk, Key: make([]byte, 257)}, make([]byte, 10)); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("257-byte key: %v", err)
	}
	fileChunk := storageclient.KVRef{Chain: ref.Chain, Chunk: storageclient.ChunkID{Inode: 5, Index: 1}, Key: []byte("k")}
	if _, _, err := k.cl.KVGet(ctx, fileChunk, make([]byte, 10)); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("get from a file chunk: %v", err)
	}
	if err := k.cl.KVPut(ctx, fileChunk, h.Encode(nil), []byte("value")); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("put into a file chunk: %v", err)
	}
}
