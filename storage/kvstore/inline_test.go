package kvstore_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/kvstore"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// Records just under, at and just over the inline limit (read whole into
// memory up to it, sent by sendfile past it) come back exactly, singly
// and batched, and a buffer one byte short is OutOfRange on either path.
func TestGetInlineBoundary(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "inline", ID: 45, CapacityBytes: 1 << 30, Evict: true})
	key := func(n int) string { return fmt.Sprintf("v%07d", n) } // 8-byte keys
	hdr := kvformat.FixedHeaderLen + 8
	var sizes []int
	for _, n := range []int{kvstore.DefaultInlineMax - 1, kvstore.DefaultInlineMax, kvstore.DefaultInlineMax + 1, 5 << 20} {
		sizes = append(sizes, n-hdr) // record of n bytes
	}
	sizes = append(sizes, 1)
	for _, n := range sizes {
		ns.put(t, key(n), value(key(n), n))
	}
	ctx := context.Background()
	for round := 0; round < 2; round++ { // reads rotate over the replicas
		for _, n := range sizes {
			buf := make([]byte, n+100)
			if _, m, err := k.cl.KVGet(ctx, ns.ref(key(n)), buf); err != nil || !bytes.Equal(buf[:m], value(key(n), n)) {
				t.Fatalf("value of %d bytes: got %d bytes or different contents (%v)", n, m, err)
			}
			short := make([]byte, n-1)
			if _, _, err := k.cl.KVGet(ctx, ns.ref(key(n)), short); !errcode.Is(err, errcode.OutOfRange) || !bytes.Equal(short, make([]byte, n-1)) {
				t.Fatalf("value of %d bytes into %d: %v, want OutOfRange", n, n-1, err)
			}
		}
		refs := make([]storageclient.KVRef, len(sizes))
		bufs := make([][]byte, len(sizes))
		for i, n := range sizes {
			refs[i], bufs[i] = ns.ref(key(n)), make([]byte, n+100)
		}
		for i, r := range k.cl.KVGetBatch(ctx, refs, bufs) {
			if r.Err != nil || !bytes.Equal(bufs[i][:r.N], value(key(sizes[i]), sizes[i])) {
				t.Fatalf("batch entry of %d bytes: n %d err %v", sizes[i], r.N, r.Err)
			}
		}
	}
	// Every inline buffer goes back once its response is out (Done runs
	// just after the write, so the client may see the reply first).
	testutil.WaitUntil(t, "inline buffers released", func() bool {
		for _, st := range k.stores() {
			if st.InlineHeld() != 0 {
				return false
			}
		}
		return true
	})
}

// A small (inline) value corrupted on every replica after the engines
// vouched for it is a miss, never wrong bytes; corrupted on one replica
// it is read from another.
func TestGetInlineCorruptNeverReturned(t *testing.T) {
	k := startKV(t, 3, 3, 0)
	ns := k.createNamespace(t, kvformat.Descriptor{Name: "inline-corrupt", ID: 46, CapacityBytes: 1 << 30, Evict: true})
	ns.put(t, "one", value("one", 4000))
	ns.put(t, "all", value("all", 4000))
	for i := 0; i < 6; i++ { // every replica serves both, so the engines vouch for them
		ns.get(t, "one")
		ns.get(t, "all")
	}
	flip := func(node int, key string, off int64) {
		s := k.StorageService(node)
		testutil.FlipByte(t, s.Engine(s.TargetIDs()[0]).DataPath(ns.ref(key).Chunk), off)
	}
	flip(2, "one", 3000)
	for n := 1; n <= 3; n++ {
		flip(n, "all", 2000)
	}
	for i := 0; i < 9; i++ {
		if got := ns.get(t, "one"); !bytes.Equal(got, value("one", 4000)) {
			t.Fatalf("read %d of a value corrupt on one replica: %d bytes, not the value", i, len(got))
		}
		buf := make([]byte, 8000)
		_, _, err := k.cl.KVGet(context.Background(), ns.ref("all"), buf)
		if !errcode.Is(err, errcode.NotFound) || !strings.Contains(err.Error(), "corrupt on every replica") {
			t.Fatalf("read %d of a value corrupt everywhere: %v, want a NotFound naming the corruption", i, err)
		}
	}
}

// A store whose inline budget has no room sends from the file; with
// room it reads into memory, and every byte it held comes back on Close.
func TestGetInlineBudget(t *testing.T) {
	eng, err := chunkengine.Open(t.TempDir(), chunkengine.Options{NoSync: true, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	id := kvformat.SlotOf(50, []byte("k"), 1, 0).Chunk
	val := value("k", 100000)
	h := kvformat.NewHeader([]byte("k"), val, 1, 0)
	if _, err := eng.Apply(id, chunkengine.Update{Kind: chunkengine.UpdateReplace, Data: append(h.Encode(nil), val...), Version: 1, ChunkSize: chunkengine.MaxChunkSize}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		budget int64
		inline bool
	}{{1000, false}, {0, true}} {
		st := kvstore.Open(eng, kvstore.Options{InlineBudget: c.budget, Logger: testutil.Logger()})
		v, err := st.Get(id, []byte("k"), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		if v.Inline != nil {
			got = v.Inline
			if st.InlineHeld() < int64(len(val)) {
				t.Fatalf("budget %d: an inline value of %d bytes holds %d", c.budget, len(val), st.InlineHeld())
			}
		} else {
			got = make([]byte, v.ValueLen)
			if _, err := v.Region.File.ReadAt(got, v.ValueOff); err != nil {
				t.Fatal(err)
			}
		}
		if (v.Inline != nil) != c.inline || !bytes.Equal(got, val) {
			t.Fatalf("budget %d: inline %v (want %v), value equal %v", c.budget, v.Inline != nil, c.inline, bytes.Equal(got, val))
		}
		v.Close()
		if st.InlineHeld() != 0 {
			t.Fatalf("budget %d: %d inline bytes held after Close", c.budget, st.InlineHeld())
		}
	}
}
