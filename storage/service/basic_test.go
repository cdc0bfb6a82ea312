package service_test

import (
	"context"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
)

func TestWriteReadThreeReplicas(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	ctx := context.Background()
	id := chunkengine.ChunkID{Inode: 7, Index: 0}
	data := pattern(1, 5000)
	st, err := cl.Write(ctx, chains[0], id, chunkSize, 100, data)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != 1 || st.Length != 5100 {
		t.Fatalf("after first write: %+v, want version 1 length 5100", st)
	}
	want := append(make([]byte, 100), data...)
	for _, target := range c.Current().ServingTargets(chains[0]) {
		buf := make([]byte, chunkSize)
		res, err := cl.Read(ctx, chains[0], id, 0, buf, storageclient.ReadOptions{Target: target})
		if err != nil {
			t.Fatalf("read from target %d: %v", target, err)
		}
		mustEqual(t, "read", buf[:res.N], want)
	}
	for n, m := range replicaStates(c, 3, id) {
		if m.Version != 1 || m.PendingVersion != 0 || m.Checksum != st.Checksum {
			t.Fatalf("node %d: %+v, want committed version 1 checksum %08x", n, m, st.Checksum)
		}
	}
	if _, err := cl.Truncate(ctx, chains[0], id, chunkSize, 10); err != nil {
		t.Fatal(err)
	}
	last, found, err := cl.QueryLastChunk(ctx, 7, chains)
	if err != nil || !found || last.Length != 10 {
		t.Fatalf("query last chunk: %+v %v %v", last, found, err)
	}
	if err := cl.RemoveChunk(ctx, chains[0], id); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Read(ctx, chains[0], id, 0, make([]byte, 10), storageclient.ReadOptions{})
	if !errcode.Is(err, errcode.NotFound) {
		t.Fatalf("read after remove: %v, want NotFound", err)
	}
}
