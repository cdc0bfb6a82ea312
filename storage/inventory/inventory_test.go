package inventory_test

import (
	"context"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/inventory"
	"github.com/emberfs/emberfs/storage/storageclient"
)

const chunkSize = 64 << 10

// cluster starts two storage nodes (one target each) forming one chain of
// two replicas, and returns the chain, a client and the target ids.
func cluster(t *testing.T) (*localcluster.Cluster, uint32, *storageclient.Client, []uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := localcluster.StorageOnly(t.TempDir(), 2)
	o.NoSync, o.Logger = true, testutil.Logger()
	c, err := localcluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	chains, err := c.CreateChains(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(chains) != 1 {
		t.Fatalf("chains %v, want one", chains)
	}
	cl := c.StorageClient(storageclient.Config{})
	t.Cleanup(func() { cl.Close() })
	targets := c.Current().ServingTargets(chains[0])
	sort.Slice(targets, func(i, j int) bool { return targets[i] < targets[j] })
	return c, chains[0], cl, targets
}

func write(t *testing.T, cl *storageclient.Client, chain uint32, inode uint64, index uint32) {
	t.Helper()
	id := storageclient.ChunkID{Inode: inode, Index: index}
	if _, err := cl.Write(context.Background(), chain, id, chunkSize, 0, []byte("chunk data")); err != nil {
		t.Fatalf("write %s: %v", id, err)
	}
}

// List reports every inode with chunks once, with the targets holding it;
// a target the routing does not know is a per-target failure.
func TestList(t *testing.T) {
	c, chain, cl, targets := cluster(t)
	ctx := context.Background()
	write(t, cl, chain, 10, 0)
	write(t, cl, chain, 10, 3)
	write(t, cl, chain, 20, 0)

	l, err := inventory.List(ctx, c.Cache, c.Token(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]uint64{10: targets, 20: targets}
	if !reflect.DeepEqual(l.Inodes, want) || !reflect.DeepEqual(l.Listed, targets) || len(l.Failed) != 0 {
		t.Fatalf("listing %+v, want inodes %v on targets %v", l, want, targets)
	}

	l, err = inventory.List(ctx, c.Cache, c.Token(), []uint64{targets[0], 999})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(l.Listed, targets[:1]) || l.Failed[999] == nil || len(l.Inodes) != 2 {
		t.Fatalf("listing of a known and an unknown target: %+v", l)
	}

	l, err = inventory.List(ctx, c.Cache, "wrong-token", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Failed) != 2 || len(l.Listed) != 0 || len(l.Inodes) != 0 {
		t.Fatalf("listing with a wrong token: %+v, want both targets failed", l)
	}
}

// Check reports exactly the inodes with chunks that are neither live nor
// found again in the namespace, nor gone from storage on the second look.
func TestCheckOrphans(t *testing.T) {
	c, chain, cl, targets := cluster(t)
	ctx := context.Background()
	const liveIno, orphan, lateFile, removedLate = 100, 200, 300, 400
	for _, ino := range []uint64{liveIno, orphan, lateFile, removedLate} {
		write(t, cl, chain, ino, 0)
	}
	live := map[uint64]bool{liveIno: true, 555: true}

	// Without a re-check every non-live inode is reported.
	ck := &inventory.Checker{Cache: c.Cache, Token: c.Token()}
	ids, err := ck.OrphanChunks(ctx, live)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{orphan, lateFile, removedLate}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("orphans %v, want %v", ids, want)
	}
	if r := ck.Last(); r.Candidates != 3 || r.Listed != 2 || !reflect.DeepEqual(r.Orphans[orphan], targets) {
		t.Fatalf("result %+v", r)
	}

	// lateFile was "created after the snapshot": the namespace has it now.
	// removedLate was created and removed, chunks and all, after the
	// snapshot: the namespace no longer has it and its chunks are gone by
	// the second listing.
	var asked []uint64
	ck = &inventory.Checker{Cache: c.Cache, Token: c.Token(), Exists: func(ctx context.Context, ids []uint64) (map[uint64]bool, error) {
		asked = append(asked, ids...)
		if _, err := cl.RemoveInode(ctx, removedLate, []uint32{chain}); err != nil {
			return nil, err
		}
		return map[uint64]bool{lateFile: true}, nil
	}}
	ids, err = ck.OrphanChunks(ctx, live)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids, []uint64{orphan}) {
		t.Fatalf("orphans %v, want only %d", ids, orphan)
	}
	if !reflect.DeepEqual(asked, []uint64{orphan, lateFile, removedLate}) {
		t.Fatalf("re-check asked about %v", asked)
	}
	r := ck.Last()
	if r.Candidates != 3 || r.ExistNow != 1 || r.Vanished != 1 || len(r.Unlisted) != 0 ||
		!reflect.DeepEqual(r.Orphans, map[uint64][]uint64{orphan: targets}) {
		t.Fatalf("result %+v", r)
	}

	// Clean: everything with chunks is live.
	ids, err = ck.OrphanChunks(ctx, map[uint64]bool{liveIno: true, orphan: true, lateFile: true})
	if err != nil || len(ids) != 0 {
		t.Fatalf("clean check: %v, %v", ids, err)
	}
}

// A storage node that is down cannot be listed: its target is reported as
// unlisted, and the orphan is still found on the other replica.
func TestCheckNodeDown(t *testing.T) {
	c, chain, cl, targets := cluster(t)
	ctx := context.Background()
	write(t, cl, chain, 7, 0)
	c.StopStorage(2)
	ck := &inventory.Checker{Cache: c.Cache, Token: c.Token()}
	ids, err := ck.OrphanChunks(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := ck.Last()
	// Target ids are node*100 + index, so targets[1] is node 2's.
	if !reflect.DeepEqual(ids, []uint64{7}) || r.Listed != 1 || len(r.Unlisted) != 1 || r.Unlisted[targets[1]] == nil ||
		!reflect.DeepEqual(r.Orphans[7], targets[:1]) {
		t.Fatalf("orphans %v, result %+v; want inode 7 on %d and target %d unlisted", ids, r, targets[0], targets[1])
	}
}
