package service

import (
	"testing"

	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/wire"
)

// TestDedupeTableIsBounded (issue 13, hole 6, first half): the table had
// one entry per (client, channel) ever seen, for 10 minutes, without a
// bound. Now past its bound the oldest finished outcomes go first; recent
// and running ones stay, and a retry of a recent write is still answered.
func TestDedupeTableIsBounded(t *testing.T) {
	d := newDedupeTable(100)
	id := chunkengine.ChunkID{Inode: 1}
	var running *dedupeEntry
	for c := uint64(1); c <= 1000; c++ {
		e, mine, err := d.begin(&wire.UpdateReq{ClientID: c, Channel: 1, Seq: 1, Chunk: id})
		if err != nil || !mine {
			t.Fatalf("client %d: mine %v, %v", c, mine, err)
		}
		if c == 1 {
			running = e // never finished: must survive every eviction
			continue
		}
		d.finish(e, wire.UpdateRsp{Version: c}, nil)
	}
	if n := d.size(); n > 100 {
		t.Fatalf("table holds %d entries, bound 100", n)
	}
	e, mine, err := d.begin(&wire.UpdateReq{ClientID: 1000, Channel: 1, Seq: 1, Chunk: id})
	if err != nil || mine || e.rsp.Version != 1000 {
		t.Fatalf("retry of the newest write: mine %v rsp %+v %v; want answered from the table", mine, e, err)
	}
	if e, mine, _ := d.begin(&wire.UpdateReq{ClientID: 1, Channel: 1, Seq: 1, Chunk: id}); mine || e != running {
		t.Fatalf("the running write's entry was evicted")
	}
}
