package service_test

import (
	"context"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// sendWrite sends one client write with a fixed dedupe key to the chain's
// head, at the routing's current chain version, until the head takes it
// (a restarted head answers Unavailable or StaleVersion until it serves).
func sendWrite(t *testing.T, c *localcluster.Cluster, tc *transport.Client, chain uint32, u wire.UpdateReq, data []byte) wire.UpdateRsp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	for {
		_ = c.Cache.Refresh(ctx)
		r := c.Current()
		head, ok := r.Head(chain)
		var err error
		if ok {
			_, addr, _ := r.TargetAddress(head)
			u.Target, u.ChainVer = head, r.ChainVersion(chain)
			var resp *transport.Response
			resp, err = tc.Call(ctx, addr, &transport.Request{Op: wire.OpWrite, Ext: u.Encode(nil), Payload: [][]byte{data}}, nil)
			if err == nil {
				rsp, derr := wire.DecodeUpdateRsp(resp.Ext)
				resp.Release()
				if derr != nil {
					t.Fatal(derr)
				}
				return rsp
			}
			switch errcode.CodeOf(err) {
			case errcode.Unavailable, errcode.StaleVersion, errcode.Busy:
			default:
				t.Fatalf("write seq %d: %v", u.Seq, err)
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("write seq %d never taken: %v", u.Seq, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond): // a pause between attempts, not a deadline
		}
	}
}

// TestRetryAfterRestartIsAppliedOnce (issue 13, hole 6, second half): the
// dedupe table lived in memory only, so a client whose write was applied
// by the last serving replica, but whose answer was lost when that
// replica's process died, had its retry applied a second time (a new
// version; for a write interleaved with others, lost or reordered data).
// Outcomes are now persisted with the chunk update they belong to and
// reloaded at start: the retry is answered with the first outcome.
func TestRetryAfterRestartIsAppliedOnce(t *testing.T) {
	c, chains, _ := startCluster(t, 1, 1)
	chain := chains[0]
	tc := transport.NewClient(transport.ClientConfig{Token: c.Token()})
	defer tc.Close()
	id := chunkengine.ChunkID{Inode: 96}
	const client, channel = 0xC11E, 3
	w := func(seq uint64, off uint32, data string) wire.UpdateRsp {
		u := wire.UpdateReq{Chain: chain, Chunk: id, Kind: wire.KindWrite, Offset: off, ChunkSize: chunkSize,
			ClientID: client, Channel: channel, Seq: seq}
		return sendWrite(t, c, tc, chain, u, []byte(data))
	}
	w(1, 0, "aaaa")
	first := w(2, 2, "bb")
	if first.Version != 2 {
		t.Fatalf("second write committed version %d, want 2", first.Version)
	}
	// Another client's write to another chunk of the same target, so the
	// outcome to find is not simply the target's last record.
	other := wire.UpdateReq{Chain: chain, Chunk: chunkengine.ChunkID{Inode: 97}, Kind: wire.KindWrite, ChunkSize: chunkSize, ClientID: 0xD00D, Channel: 1, Seq: 1}
	sendWrite(t, c, tc, chain, other, []byte("zz"))

	c.StopStorage(1) // the answer to seq 2 is "lost"; the process is gone
	if err := c.StartStorage(1); err != nil {
		t.Fatal(err)
	}
	retry := w(2, 2, "bb")
	if retry != first {
		t.Fatalf("retry of seq 2 after the restart answered %+v, want the first outcome %+v", retry, first)
	}
	s := c.StorageService(1)
	m, _ := s.Engine(s.TargetIDs()[0]).Stat(id)
	if m.Version != 2 || m.PendingVersion != 0 {
		t.Fatalf("chunk at version %d (pending %d) after the retry, want 2: the write was applied twice", m.Version, m.PendingVersion)
	}
	// The next write of the channel is a new write.
	if next := w(3, 0, "c"); next.Version != 3 {
		t.Fatalf("seq 3 committed version %d, want 3", next.Version)
	}
}
