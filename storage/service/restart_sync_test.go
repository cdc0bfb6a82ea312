package service_test

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// TestRestartedPredecessorDoesNotSyncFromStaleCopy: a storage process
// restarted inside mgmtd's failure timeout still sees routing in which its
// target serves, while its copy may lack acknowledged writes (in the
// linearizability test: a version pending on it and committed downstream
// when it died). It must not act as the sync source of a syncing
// successor: that rolled the successor back and its sync-done made the
// stale copy serve reads.
//
// Deterministic set-up: the tail stops and misses a write; the middle is
// stopped, its target directory replaced by the tail's stale copy, and
// restarted at once (mgmtd still shows it serving); then the tail
// returns and syncs. The tail must serve only the acknowledged value.
func TestRestartedPredecessorDoesNotSyncFromStaleCopy(t *testing.T) {
	// A long failure timeout keeps the restarted middle "serving" in
	// routing while the tail recovers; nothing here waits on it except
	// the fixed path (the middle is declared failed, the head syncs).
	const failureTimeout = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	o := localcluster.StorageOnly(t.TempDir(), 3)
	o.FailureTimeout = failureTimeout
	c := startStorage(t, ctx, o)
	chains, err := c.CreateChains(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	chain := chains[0]
	cl := c.StorageClient(storageclient.Config{})
	defer cl.Close()
	order := c.Current().ServingTargets(chain)
	if len(order) != 3 {
		t.Fatalf("chain %d serves %v, want 3 targets", chain, order)
	}
	middle, tail := nodeOf(order[1]), nodeOf(order[2])
	id := chunkengine.ChunkID{Inode: 77, Index: 0}
	write := func(v uint64) {
		t.Helper()
		buf := binary.LittleEndian.AppendUint64(nil, v)
		if _, err := cl.Write(ctx, chain, id, chunkSize, 0, buf); err != nil {
			t.Fatalf("write %d: %v", v, err)
		}
	}

	write(1)
	c.StopStorage(tail)
	waitServing(t, c, chain, 2)
	write(2) // on head and middle only

	// Restart the middle on the tail's stale copy, inside the failure
	// timeout: mgmtd still lists it serving.
	c.StopStorage(middle)
	copyTargetData(t, c.TargetDir(tail, 0), c.TargetDir(middle, 0))
	if err := c.StartStorage(middle); err != nil {
		t.Fatal(err)
	}
	if st := c.Current().TargetState(order[1]); st != mgmtdpb.PublicState_PUBLIC_SERVING {
		t.Fatalf("set-up too slow: restarted middle %d is already %s (failure timeout %v)", order[1], st, failureTimeout)
	}
	if err := c.StartStorage(tail); err != nil {
		t.Fatal(err)
	}

	// Wait for the tail to serve, then read it directly.
	testutil.WaitUntil(t, "returning tail serving", func() bool {
		return c.Current().TargetState(order[2]) == mgmtdpb.PublicState_PUBLIC_SERVING
	})
	buf := make([]byte, 8)
	res, err := cl.Read(ctx, chain, id, 0, buf, storageclient.ReadOptions{Target: order[2]})
	if err != nil {
		t.Fatalf("read from returning tail %d: %v", order[2], err)
	}
	if got := binary.LittleEndian.Uint64(buf[:res.N]); got != 2 {
		t.Fatalf("returning tail %d serves value %d (version %d), want the acknowledged 2", order[2], got, res.Version)
	}

	// Everyone converges on the acknowledged value.
	waitServing(t, c, chain, 3)
	testutil.WaitUntil(t, "replicas identical", func() bool {
		s := replicaStates(c, 3, id)
		if len(s) != 3 {
			return false
		}
		for n := 2; n <= 3; n++ {
			if s[n].Version != s[1].Version || s[n].Length != s[1].Length || s[n].Checksum != s[1].Checksum || s[n].PendingVersion != 0 {
				return false
			}
		}
		return s[1].PendingVersion == 0
	})
	for _, tgt := range order {
		res, err := cl.Read(ctx, chain, id, 0, buf, storageclient.ReadOptions{Target: tgt})
		if err != nil {
			t.Fatalf("read from %d: %v", tgt, err)
		}
		if got := binary.LittleEndian.Uint64(buf[:res.N]); got != 2 {
			t.Fatalf("target %d serves value %d, want 2", tgt, got)
		}
	}
}

// copyTargetData replaces dst's chunk engine files with src's, keeping
// dst's target-id file (the target keeps its identity, not its data).
func copyTargetData(t *testing.T, src, dst string) {
	t.Helper()
	ents, err := os.ReadDir(dst)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "target-id" {
			if err := os.RemoveAll(filepath.Join(dst, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if rel == "target-id" {
			return nil
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		return testutil.CopyFile(path, to, 0o666)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRetryAfterResyncIsNotAppliedTwice: a target that lost its dedupe
// table in a restart and was resynced must still recognise a retry of a
// write that was applied before, once it is the head: the sync source
// hands its write outcomes over with the sync. Without that, the retry
// was applied a second time at a new version (seen in
// TestLinearizableUnderRestarts as a value reappearing after two later
// writes).
func TestRetryAfterResyncIsNotAppliedTwice(t *testing.T) {
	c, chains, _ := startCluster(t, 3, 3)
	chain := chains[0]
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	order := c.Current().ServingTargets(chain)
	head, middle, tail := nodeOf(order[0]), nodeOf(order[1]), nodeOf(order[2])
	tc := transport.NewClient(transport.ClientConfig{Token: c.Token()})
	defer tc.Close()
	id := chunkengine.ChunkID{Inode: 78, Index: 0}
	data := binary.LittleEndian.AppendUint64(nil, 7)
	// One write with a fixed dedupe key, sent as a client retry would be.
	write := func() wire.UpdateRsp {
		t.Helper()
		r := c.Current()
		h, ok := r.Head(chain)
		if !ok {
			t.Fatalf("chain %d has no head", chain)
		}
		_, addr, err := r.TargetAddress(h)
		if err != nil {
			t.Fatal(err)
		}
		u := wire.UpdateReq{Target: h, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: id, Kind: wire.KindWrite,
			ChunkSize: chunkSize, ClientID: 0x5eed0001, Channel: 3, Seq: 9}
		resp, err := tc.Call(ctx, addr, &transport.Request{Op: wire.OpWrite, Ext: u.Encode(nil), Payload: [][]byte{data}}, nil)
		// A loaded machine can let a lease lapse or move the chain for a
		// moment; a client retries then, with the same dedupe key, which
		// is the very thing under test.
		for err != nil && (errcode.Is(err, errcode.Unavailable) || errcode.Is(err, errcode.StaleVersion)) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
			_ = c.Cache.Refresh(ctx)
			r = c.Current()
			if h, ok = r.Head(chain); !ok {
				continue
			}
			if _, addr, err = r.TargetAddress(h); err != nil {
				continue
			}
			u.Target, u.ChainVer = h, r.ChainVersion(chain)
			resp, err = tc.Call(ctx, addr, &transport.Request{Op: wire.OpWrite, Ext: u.Encode(nil), Payload: [][]byte{data}}, nil)
		}
		if err != nil {
			t.Fatalf("write to head %d: %v", h, err)
		}
		defer resp.Release()
		rsp, err := wire.DecodeUpdateRsp(resp.Ext)
		if err != nil {
			t.Fatal(err)
		}
		return rsp
	}
	first := write()

	// The tail restarts (losing its dedupe table) and is resynced.
	c.StopStorage(tail)
	waitServing(t, c, chain, 2)
	if err := c.StartStorage(tail); err != nil {
		t.Fatal(err)
	}
	waitServing(t, c, chain, 3)
	// Head and middle fail together: the resynced target is head alone.
	c.StopStorage(head)
	c.StopStorage(middle)
	testutil.WaitUntil(t, "resynced target heads the chain", func() bool {
		h, ok := c.Current().Head(chain)
		return ok && h == order[2] && len(c.Current().ServingTargets(chain)) == 1
	})
	retry := write()
	if retry.Version != first.Version {
		t.Fatalf("retry of an applied write answered version %d, first attempt committed %d: applied twice", retry.Version, first.Version)
	}
	if m, _ := c.StorageService(tail).Engine(order[2]).Stat(id); m.Version != first.Version {
		t.Fatalf("chunk %s on target %d is at version %d after the retry, want %d", id, order[2], m.Version, first.Version)
	}
}

// TestSyncIncludesChunkCreatedByOlderUpdate: an update admitted on the
// sync source while the returning target was not on the write path (the
// source was the tail) and still running when the sync starts must not
// be missed by the sync. It creates a chunk that was neither in the
// source's dump nor forwarded to the successor, so the successor was
// promoted to serving without it and answered NotFound for a chunk whose
// write was acknowledged (found by the chaos harness: zeros read back).
// The sync now waits for such updates before it lists the chunks.
func TestSyncIncludesChunkCreatedByOlderUpdate(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	chain := chains[0]
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	order := c.Current().ServingTargets(chain)
	middle, tail := nodeOf(order[1]), nodeOf(order[2])
	c.StopStorage(tail)
	waitServing(t, c, chain, 2) // the middle is the tail now

	id := chunkengine.ChunkID{Inode: 91, Index: 0}
	held, release := make(chan struct{}), make(chan struct{})
	c.StorageService(middle).SetAdmittedHookForTest(func(target uint64, chunk chunkengine.ChunkID) {
		if target == order[1] && chunk == id {
			close(held)
			<-release
		}
	})
	data := pattern(9, 4096)
	written := make(chan error, 1)
	go func() {
		_, err := cl.Write(ctx, chain, id, chunkSize, 0, data)
		written <- err
	}()
	select {
	case <-held:
	case err := <-written:
		t.Fatalf("write finished (%v) before the middle admitted it", err)
	}
	// The tail returns while the write waits on the middle, admitted
	// under the chain version in which the middle is the tail.
	if err := c.StartStorage(tail); err != nil {
		t.Fatal(err)
	}
	syncing := func(r *routing.Routing) bool { return r.TargetState(order[2]) == mgmtdpb.PublicState_PUBLIC_SYNCING }
	if _, err := c.WaitRouting(ctx, syncing); err != nil {
		t.Fatalf("returning target %d never started syncing: %v", order[2], err)
	}
	// Give a sync that does not wait for the held update time to finish
	// and get the target promoted (the bug); a correct sync waits.
	promoted := func(r *routing.Routing) bool { return r.TargetState(order[2]) == mgmtdpb.PublicState_PUBLIC_SERVING }
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
	_, _ = c.WaitRouting(wctx, promoted)
	wcancel()
	close(release)
	if err := <-written; err != nil {
		t.Fatalf("write: %v", err)
	}
	waitServing(t, c, chain, 3)
	buf := make([]byte, len(data))
	res, err := cl.Read(ctx, chain, id, 0, buf, storageclient.ReadOptions{Target: order[2]})
	if err != nil {
		t.Fatalf("read of the acknowledged chunk from the resynced target %d: %v", order[2], err)
	}
	mustEqual(t, "resynced target's copy", buf[:res.N], data)
}
