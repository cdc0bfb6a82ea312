package service_test

import (
	"context"
	"os"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// TestCorruptChunkDetectedServedElsewhereRepaired flips a byte in one
// replica's data file: reading from that replica fails with
// ChecksumMismatch, client reads still return the right data (from
// another replica), and the chain repairs the copy.
func TestCorruptChunkDetectedServedElsewhereRepaired(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	chain := chains[0]
	ctx := context.Background()
	id := chunkengine.ChunkID{Inode: 9, Index: 3}
	data := pattern(5, 20000)
	st, err := cl.Write(ctx, chain, id, chunkSize, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	victim := c.Current().ServingTargets(chain)[1]
	eng := c.StorageService(nodeOf(victim)).Engine(victim)
	path := eng.DataPath(id)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{data[1234] ^ 0xff}, 1234); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The damaged replica refuses (it was never verified, so the first
	// read checks the whole chunk).
	// A raw data-port read (no client retries) sees the mismatch.
	buf := make([]byte, chunkSize)
	tc := transport.NewClient(transport.ClientConfig{Token: c.Token()})
	defer tc.Close()
	r := c.Current()
	_, addr, _ := r.TargetAddress(victim)
	q := wire.ReadReq{Target: victim, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: id, Length: chunkSize}
	_, err = tc.Call(ctx, addr, &transport.Request{Op: wire.OpRead, Ext: q.Encode(nil)}, buf[:0])
	if !errcode.Is(err, errcode.ChecksumMismatch) {
		t.Fatalf("read of the corrupt replica: %v, want checksum mismatch", err)
	}
	// Unforced reads rotate over replicas and fail over.
	for range 6 {
		res, err := cl.Read(ctx, chain, id, 0, buf, storageclient.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "read with a corrupt replica", buf[:res.N], data)
	}
	testutil.WaitUntil(t, "repair of the corrupt replica", func() bool {
		m, _ := eng.Stat(id)
		return !m.Corrupt && m.Checksum == st.Checksum
	})
	res, err := cl.Read(ctx, chain, id, 0, buf, storageclient.ReadOptions{Target: victim})
	if err != nil {
		t.Fatalf("read of the repaired replica: %v", err)
	}
	mustEqual(t, "repaired replica", buf[:res.N], data)
	if err := eng.Verify(id); err != nil {
		t.Fatalf("repaired copy does not verify: %v", err)
	}
	// Writes flow through the repaired replica again.
	if _, err := cl.Write(ctx, chain, id, chunkSize, 0, []byte("after repair")); err != nil {
		t.Fatal(err)
	}
}
