package service_test

import (
	"bytes"
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/service"
	"github.com/emberfs/emberfs/storage/storageclient"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// Regression tests of issue 13's storage holes (docs/reliability.md).

func readAll(t *testing.T, cl *storageclient.Client, chain uint32, id chunkengine.ChunkID, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	res, err := cl.Read(context.Background(), chain, id, 0, buf, storageclient.ReadOptions{})
	if err != nil {
		t.Fatalf("read %s: %v", id, err)
	}
	return buf[:res.N]
}

// TestHeadRefusesWritesUntilRecovered (hole 3): a head this process has
// not recovered may lack acknowledged versions; it must not assign
// versions from that copy. Reads already checked this; writes did not.
func TestHeadRefusesWritesUntilRecovered(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	chain := chains[0]
	ctx := context.Background()
	id := chunkengine.ChunkID{Inode: 91}
	if _, err := cl.Write(ctx, chain, id, chunkSize, 0, []byte("before")); err != nil {
		t.Fatal(err)
	}
	r := c.Current()
	head, _ := r.Head(chain)
	c.StorageService(nodeOf(head)).HoldUnrecoveredForTest(head)
	_, addr, _ := r.TargetAddress(head)
	tc := transport.NewClient(transport.ClientConfig{Token: c.Token()})
	defer tc.Close()
	u := wire.UpdateReq{Target: head, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: id, Kind: wire.KindWrite, ChunkSize: chunkSize}
	_, err := tc.Call(ctx, addr, &transport.Request{Op: wire.OpWrite, Ext: u.Encode(nil), Payload: [][]byte{[]byte("AFTER!")}}, nil)
	if !errcode.Is(err, errcode.Unavailable) {
		t.Fatalf("write at an unrecovered head: %v, want Unavailable", err)
	}
	for n := 1; n <= 3; n++ {
		s := c.StorageService(n)
		if m, _ := s.Engine(s.TargetIDs()[0]).Stat(id); m.Version != 1 || m.PendingVersion != 0 {
			t.Fatalf("node %d holds version %d pending %d after the refused write, want 1 and none", n, m.Version, m.PendingVersion)
		}
	}
}

// TestOrphanPendingIsRedrivenNotRolledBack (hole 4): a pending version at
// the head that nobody drives may be committed downstream (and read
// there). The head's next write must complete it, not abort it and
// rebuild from the older committed copy.
func TestOrphanPendingIsRedrivenNotRolledBack(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	chain := chains[0]
	ctx := context.Background()
	id := chunkengine.ChunkID{Inode: 92}
	if _, err := cl.Write(ctx, chain, id, chunkSize, 0, []byte("aaaaaaaa")); err != nil {
		t.Fatal(err)
	}
	r := c.Current()
	order := r.ServingTargets(chain)
	cv := uint32(r.ChainVersion(chain))
	// Version 2 = "bbbb" at offset 0: pending at the head (its driver gone),
	// committed on the middle and the tail, as when a head's forward was
	// acknowledged downstream but the head never committed.
	v2 := chunkengine.Update{Kind: chunkengine.UpdateWrite, Data: []byte("bbbb"), ChunkSize: chunkSize, Version: 2, ChainVer: cv}
	hs := c.StorageService(nodeOf(order[0]))
	if _, err := hs.Engine(order[0]).Prepare(id, v2); err != nil {
		t.Fatal(err)
	}
	for _, tg := range order[1:] {
		if _, err := c.StorageService(nodeOf(tg)).Engine(tg).Apply(id, v2); err != nil {
			t.Fatal(err)
		}
	}
	// Readers of the tail have seen version 2 already.
	if got := readAll(t, cl, chain, id, 8); string(got) != "bbbbaaaa" {
		t.Fatalf("tail read %q before the next write, want bbbbaaaa", got)
	}
	if _, err := cl.Write(ctx, chain, id, chunkSize, 6, []byte("cc")); err != nil {
		t.Fatal(err)
	}
	want := []byte("bbbbaacc")
	for n, m := range replicaStates(c, 3, id) {
		s := c.StorageService(n)
		got, _, err := s.Engine(s.TargetIDs()[0]).Read(id, 0, 8, false)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("node %d: version %d holds %q (%v), want %q: the committed version 2 was rolled back", n, m.Version, got, err, want)
		}
		if m.PendingVersion != 0 {
			t.Errorf("node %d still holds pending version %d", n, m.PendingVersion)
		}
	}
}

// TestSyncFrameOnlyFromSyncingPredecessor (hole 1): a Sync replace
// overwrites whatever a target holds. One from a target that is not the
// receiver's predecessor, or to a target that is not syncing, or
// stamped with a chain version older than the one its copy was committed
// under, must be refused and leave the chunk as it was.
func TestSyncFrameOnlyFromSyncingPredecessor(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	chain := chains[0]
	ctx := context.Background()
	id := chunkengine.ChunkID{Inode: 93}
	if _, err := cl.Write(ctx, chain, id, chunkSize, 0, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Write(ctx, chain, id, chunkSize, 0, []byte("v2")); err != nil {
		t.Fatal(err)
	}
	r := c.Current()
	order := r.ServingTargets(chain)
	tail := order[2]
	_, addr, _ := r.TargetAddress(tail)
	tc := transport.NewClient(transport.ClientConfig{Token: c.Token()})
	defer tc.Close()
	old := []byte("v1")
	for _, from := range []uint64{order[1], order[0], 0} {
		u := wire.UpdateReq{Target: tail, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: id, Kind: wire.KindReplace,
			Flags: wire.FlagFull, Version: 1, ChunkSize: chunkSize, From: from}
		// Over a storage connection of the node the sender lives on, so
		// the sync admission itself (not the peer check) is what refuses.
		pc := transport.NewClient(transport.ClientConfig{Token: c.Token(), PeerToken: c.PeerToken(), Peer: transport.Peer{Role: transport.PeerStorage, Node: uint32(nodeOf(from))}})
		_, err := pc.Call(ctx, addr, &transport.Request{Op: wire.OpSync, Ext: u.Encode(nil), Payload: [][]byte{old}}, nil)
		pc.Close()
		if err == nil {
			t.Errorf("sync replace to serving tail %d from %d accepted, want refused", tail, from)
		}
	}
	s := c.StorageService(nodeOf(tail))
	got, ver, err := s.Engine(tail).Read(id, 0, 2, false)
	if err != nil || string(got) != "v2" || ver != 2 {
		t.Fatalf("tail holds %q at version %d (%v) after the refused syncs, want v2 at 2: rolled back", got, ver, err)
	}
	// A forward from a target that is not the predecessor is refused too.
	u := wire.UpdateReq{Target: tail, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: id, Kind: wire.KindWrite,
		Version: 3, ChunkSize: chunkSize, From: order[0]}
	hc := transport.NewClient(transport.ClientConfig{Token: c.Token(), PeerToken: c.PeerToken(), Peer: transport.Peer{Role: transport.PeerStorage, Node: uint32(nodeOf(order[0]))}})
	defer hc.Close()
	_, err = hc.Call(ctx, addr, &transport.Request{Op: wire.OpForward, Ext: u.Encode(nil), Payload: [][]byte{[]byte("zz")}}, nil)
	if err == nil || strings.Contains(err.Error(), "chain traffic comes only") || strings.Contains(err.Error(), "does not place that target") {
		t.Errorf("forward to tail %d from head %d (not its predecessor) over the head's storage connection: %v, want refused, and not by the peer check", tail, order[0], err)
	}
	if m, _ := s.Engine(tail).Stat(id); m.Version != 2 || m.PendingVersion != 0 {
		t.Fatalf("tail at version %d pending %d after the refused forward, want 2 and none", m.Version, m.PendingVersion)
	}
}

// TestStaleRoutingRefusesReads (hole 2): a replica whose lease is valid
// but whose routing is older than mgmtd's (its watch cut, heartbeats
// still answered) must not serve reads at the chain version it last saw.
func TestStaleRoutingRefusesReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	c := startStorage(t, ctx, localcluster.StorageOnly(t.TempDir(), 3))
	chains, err := c.CreateChains(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	chain := chains[0]
	cl := c.StorageClient(storageclient.Config{})
	defer cl.Close()
	id := chunkengine.ChunkID{Inode: 94}
	if _, err := cl.Write(ctx, chain, id, chunkSize, 0, []byte("old")); err != nil {
		t.Fatal(err)
	}
	r := c.Current()
	order := r.ServingTargets(chain)
	tail := order[2]
	ts := c.StorageService(nodeOf(tail))
	ts.StopRoutingWatchForTest()
	// The head leaves the chain; mgmtd's routing moves on, the tail's
	// does not (its heartbeats say so).
	c.StopStorage(nodeOf(order[0]))
	testutil.WaitUntil(t, "mgmtd reports newer routing to the tail", func() bool {
		held, m := ts.RoutingVersionsForTest()
		return m > held
	})
	if st := c.Current().TargetState(order[0]); st == mgmtdpb.PublicState_PUBLIC_SERVING {
		t.Fatalf("routing still shows the stopped head serving")
	}
	_, addr, _ := r.TargetAddress(tail)
	tc := transport.NewClient(transport.ClientConfig{Token: c.Token()})
	defer tc.Close()
	q := wire.ReadReq{Target: tail, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: id, Length: 3}
	resp, err := tc.Call(ctx, addr, &transport.Request{Op: wire.OpRead, Ext: q.Encode(nil)}, nil)
	if err == nil {
		resp.Release()
		t.Fatalf("tail with routing %v older than mgmtd's served a read at chain version %d", r.Version(), q.ChainVer)
	}
	if c := errcode.CodeOf(err); c != errcode.Unavailable && c != errcode.StaleVersion {
		t.Fatalf("read at a tail with stale routing: %v, want Unavailable or StaleVersion", err)
	}
}

// TestBatchReadDoesNotOpenAFilePerEntry (hole 7): a batch frame of many
// small reads kept one data file open per entry until its response was
// written. Under a descriptor limit below the entry count the entries
// past it failed (and a big enough batch could exhaust the process's
// descriptors for every other request). Now at most
// maxOpenRegionsPerBatch files stay open per frame.
func TestBatchReadDoesNotOpenAFilePerEntry(t *testing.T) {
	c, chains, cl := startCluster(t, 1, 1)
	chain := chains[0]
	ctx := context.Background()
	const chunks, entries = 8, 16384
	for i := range chunks {
		if _, err := cl.Write(ctx, chain, chunkengine.ChunkID{Inode: 95, Index: uint32(i)}, chunkSize, 0, pattern(byte(i), 256)); err != nil {
			t.Fatal(err)
		}
	}
	r := c.Current()
	tgt, _ := r.Head(chain)
	_, addr, _ := r.TargetAddress(tgt)
	tc := transport.NewClient(transport.ClientConfig{Token: c.Token()})
	defer tc.Close()
	subs := make([]transport.SubRequest, entries)
	for i := range subs {
		q := wire.ReadReq{Target: tgt, Chain: chain, ChainVer: r.ChainVersion(chain),
			Chunk: chunkengine.ChunkID{Inode: 95, Index: uint32(i % chunks)}, Offset: uint32(i % 200), Length: 16}
		subs[i].Ext = q.Encode(nil)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = 4096 // well below the entry count
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	resp, err := tc.CallBatch(ctx, addr, wire.OpReadBatch, subs, nil)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatalf("batch of %d reads: %v", entries, err)
	}
	defer resp.Release()
	failed := 0
	for i, res := range resp.Results {
		want := pattern(byte(i%chunks), 256)[i%200 : i%200+16]
		if res.Err != nil || !bytes.Equal(res.Data, want) {
			if failed++; failed <= 3 {
				t.Errorf("entry %d: %q, %v; want %q", i, res.Data, res.Err, want)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d entries failed", failed, entries)
	}
	if peak := c.StorageService(1).PeakBatchOpenRegionsForTest(); peak > 64 {
		t.Fatalf("batch reads held %d data files open at once, want at most 64", peak)
	}
}

// TestKVBatchDoesNotOpenAFilePerEntry (hole 7, KV side): a KV get batch
// kept each value's data file open until the response was written, as
// storage batch reads once did; values sent from their file (larger than
// the inline size, or past the inline budget) then cost one descriptor
// per entry. Under a descriptor limit below the entry count the entries
// past it failed. Now at most 64 files stay open per frame; an exists
// batch answers each entry without keeping a file.
func TestKVBatchDoesNotOpenAFilePerEntry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	// Inline reads off: every value goes out from its file, as values
	// past the inline size or budget do.
	o := localcluster.StorageOnly(t.TempDir(), 1)
	o.StorageConfig = func(_ int, cfg *service.Config) { cfg.KVInlineMax = -1 }
	c := startStorage(t, ctx, o)
	chains, err := c.CreateChains(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	chain := chains[0]
	cl := c.StorageClient(storageclient.Config{})
	defer cl.Close()
	// 4096 entries: a get reply header is ~170 bytes and a frame carries
	// at most 1 MiB of them.
	const keys, entries = 8, 4096
	refs := make([]storageclient.KVRef, keys)
	values := make([][]byte, keys)
	for i := range refs {
		key := []byte{'k', byte('a' + i)}
		refs[i] = storageclient.KVRef{Chain: chain, Chunk: kvformat.SlotOf(1, key, 1, 0).Chunk, Key: key}
		values[i] = pattern(byte(i), 256)
		h := kvformat.NewHeader(key, values[i], time.Now().UnixNano(), 0)
		if err := cl.KVPut(ctx, refs[i], h.Encode(nil), values[i]); err != nil {
			t.Fatal(err)
		}
	}
	r := c.Current()
	tgt, _ := r.Head(chain)
	_, addr, _ := r.TargetAddress(tgt)
	tc := transport.NewClient(transport.ClientConfig{Token: c.Token()})
	defer tc.Close()
	subs := make([]transport.SubRequest, entries)
	for i := range subs {
		ref := refs[i%keys]
		q := wire.KVGetReq{Target: tgt, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: ref.Chunk, Key: ref.Key, MaxLen: 1024}
		subs[i].Ext = q.Encode(nil)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = 1024 // well below the entry count
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	gets, gerr := tc.CallBatch(ctx, addr, wire.OpKVGetBatch, subs, nil)
	exists, eerr := tc.CallBatch(ctx, addr, wire.OpKVExists, subs, nil)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); rerr != nil {
		t.Fatal(rerr)
	}
	if gerr != nil || eerr != nil {
		t.Fatalf("batches of %d kv entries: get %v, exists %v", entries, gerr, eerr)
	}
	defer gets.Release()
	defer exists.Release()
	failed := 0
	for i, res := range gets.Results {
		if res.Err != nil || !bytes.Equal(res.Data, values[i%keys]) {
			if failed++; failed <= 3 {
				t.Errorf("get entry %d: %d bytes, %v; want %d bytes of value %d", i, len(res.Data), res.Err, len(values[i%keys]), i%keys)
			}
		}
	}
	for i, res := range exists.Results {
		if res.Err != nil {
			if failed++; failed <= 3 {
				t.Errorf("exists entry %d: %v", i, res.Err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d entries failed", failed, 2*entries)
	}
	if peak := c.StorageService(1).PeakBatchOpenRegionsForTest(); peak > 64 {
		t.Fatalf("kv batches held %d data files open at once, want at most 64", peak)
	}
}

// TestClientConnectionCannotSendChainTraffic (hole 1, role separation):
// Forward and Sync were admitted from any holder of the cluster token
// that named the right predecessor in UpdateReq.From. Now the data-port
// handshake says who is calling (a storage service gives its role and
// node id); chain traffic is taken only from storage connections, and
// only for a sending target that routing places on the calling node.
func TestClientConnectionCannotSendChainTraffic(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	chain := chains[0]
	ctx := context.Background()
	id := chunkengine.ChunkID{Inode: 98}
	if _, err := cl.Write(ctx, chain, id, chunkSize, 0, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	r := c.Current()
	order := r.ServingTargets(chain)
	mid, tail := order[1], order[2]
	_, addr, _ := r.TargetAddress(tail)
	fwd := wire.UpdateReq{Target: tail, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: id, Kind: wire.KindWrite,
		Version: 2, ChunkSize: chunkSize, From: mid}
	syn := wire.UpdateReq{Target: tail, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: id, Kind: wire.KindReplace,
		Flags: wire.FlagFull | wire.FlagRepair, Version: 9, ChunkSize: chunkSize, From: mid}
	callers := map[string]transport.ClientConfig{
		"client connection":                  {Token: c.Token()},
		"storage connection of another node": {Token: c.Token(), PeerToken: c.PeerToken(), Peer: transport.Peer{Role: transport.PeerStorage, Node: uint32(nodeOf(order[0]))}},
	}
	for name, cfg := range callers {
		tc := transport.NewClient(cfg)
		for op, u := range map[transport.Op]wire.UpdateReq{wire.OpForward: fwd, wire.OpSync: syn} {
			_, err := tc.Call(ctx, addr, &transport.Request{Op: op, Ext: u.Encode(nil), Payload: [][]byte{[]byte("XX")}}, nil)
			if !errcode.Is(err, errcode.PermissionDenied) {
				t.Errorf("%s sending op %d claiming target %d: %v, want PermissionDenied", name, op, mid, err)
			}
		}
		tc.Close()
	}
	s := c.StorageService(nodeOf(tail))
	if got, ver, err := s.Engine(tail).Read(id, 0, 2, false); err != nil || string(got) != "v1" || ver != 1 {
		t.Fatalf("tail holds %q at version %d (%v) after the refused chain traffic, want v1 at 1", got, ver, err)
	}
	// The chain itself still works.
	if _, err := cl.Write(ctx, chain, id, chunkSize, 0, []byte("v2")); err != nil {
		t.Fatalf("write through the chain after the refusals: %v", err)
	}
}
