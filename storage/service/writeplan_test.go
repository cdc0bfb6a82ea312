package service

import (
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/wire"
)

// Table tests of the write path's decisions (writeplan.go): no servers,
// disks or clocks.

func TestPositionIn(t *testing.T) {
	wt := []uint64{101, 201, 301}
	for _, c := range []struct {
		self uint64
		want chainPos
	}{
		{101, chainPos{In: true, Head: true, Succ: 201}},
		{201, chainPos{In: true, Succ: 301, Pred: 101}},
		{301, chainPos{In: true, Tail: true, Pred: 201}},
		{401, chainPos{}},
	} {
		if got := positionIn(wt, c.self); got != c.want {
			t.Errorf("positionIn(%v, %d) = %+v, want %+v", wt, c.self, got, c.want)
		}
	}
	if got := positionIn([]uint64{7}, 7); !got.Head || !got.Tail {
		t.Errorf("single write target: %+v, want head and tail", got)
	}
}

func TestAdmitHeadWrite(t *testing.T) {
	head := chainPos{In: true, Head: true, Succ: 2}
	for _, c := range []struct {
		name      string
		pos       chainPos
		recovered bool
		want      errcode.Code
	}{
		{"recovered head", head, true, errcode.OK},
		{"head not recovered", head, false, errcode.Unavailable},
		{"middle", chainPos{In: true, Pred: 1, Succ: 3}, true, errcode.StaleVersion},
		{"not in chain", chainPos{}, true, errcode.StaleVersion},
	} {
		if got := errcode.CodeOf(admitHeadWrite(c.pos, c.recovered, 1, 9, 4)); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestAdmitForward(t *testing.T) {
	mid := chainPos{In: true, Pred: 1, Succ: 3}
	for _, c := range []struct {
		name string
		pos  chainPos
		from uint64
		want errcode.Code
	}{
		{"from predecessor", mid, 1, errcode.OK},
		{"from the tail", mid, 3, errcode.PermissionDenied},
		{"from a client (no sender)", mid, 0, errcode.PermissionDenied},
		{"to the head", chainPos{In: true, Head: true, Succ: 2}, 1, errcode.StaleVersion},
		{"to a target outside the chain", chainPos{}, 1, errcode.StaleVersion},
	} {
		if got := errcode.CodeOf(admitForward(c.pos, c.from, 2, 9, 4)); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestPlanHead(t *testing.T) {
	committed := chunkView{Exists: true, Version: 5}
	orphan := chunkView{Exists: true, Version: 5, Pending: 6}
	for _, c := range []struct {
		name      string
		c         chunkView
		kind      uint8
		ifVersion uint64
		tail      bool
		want      headStep
	}{
		{"write, middle follows", committed, wire.KindWrite, 0, false, headPrepare},
		{"write, single replica", committed, wire.KindWrite, 0, true, headApply},
		{"create", chunkView{}, wire.KindWrite, 0, false, headPrepare},
		{"orphaned pending is re-driven", orphan, wire.KindWrite, 0, false, headRedrive},
		{"orphaned pending, even on a replace", orphan, wire.KindReplace, 0, true, headRedrive},
		{"orphaned pending, even on a remove", orphan, wire.KindRemove, 0, false, headRedrive},
		{"replace", committed, wire.KindReplace, 0, false, headReplace},
		{"replace creates", chunkView{}, wire.KindReplace, 0, true, headReplace},
		{"remove of nothing", chunkView{}, wire.KindRemove, 0, false, headNothing},
		{"remove", committed, wire.KindRemove, 0, false, headPrepare},
		{"if-version matches", committed, wire.KindRemove, 5, false, headPrepare},
		{"if-version moved", committed, wire.KindRemove, 4, false, headNothing},
		{"if-version, chunk gone", chunkView{}, wire.KindRemove, 4, false, headNothing},
	} {
		if got := planHead(c.c, c.kind, c.ifVersion, c.tail); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestPlanReplica(t *testing.T) {
	for _, c := range []struct {
		name    string
		c       chunkView
		kind    uint8
		flags   uint8
		version uint64
		tail    bool
		want    replicaStep
	}{
		{"plain forward, middle", chunkView{Exists: true, Version: 3}, wire.KindWrite, 0, 4, false, replicaPrepare},
		{"plain forward, tail", chunkView{Exists: true, Version: 3}, wire.KindWrite, 0, 4, true, replicaApply},
		{"full replace, behind", chunkView{Exists: true, Version: 3}, wire.KindReplace, wire.FlagFull, 4, false, replicaApplyFull},
		{"full replace, late duplicate", chunkView{Exists: true, Version: 4}, wire.KindReplace, wire.FlagFull, 4, true, replicaAck},
		{"full replace over a corrupt copy", chunkView{Exists: true, Version: 4, Corrupt: true}, wire.KindReplace, wire.FlagFull, 4, true, replicaApplyFull},
		{"full replace over a pending version", chunkView{Exists: true, Version: 4, Pending: 5}, wire.KindReplace, wire.FlagFull, 4, true, replicaApplyFull},
		{"full remove", chunkView{Exists: true, Version: 9}, wire.KindRemove, wire.FlagFull, 4, true, replicaApplyFull},
	} {
		if got := planReplica(c.c, c.kind, c.flags, c.version, c.tail); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestReactToForwardError(t *testing.T) {
	for _, c := range []struct {
		code errcode.Code
		full bool
		want forwardReaction
	}{
		{errcode.StaleVersion, false, refreshNow},
		{errcode.NotFound, true, refreshNow},
		{errcode.Conflict, false, sendFull},
		{errcode.ChecksumMismatch, false, sendFull},
		{errcode.Busy, false, sendFull},
		{errcode.Conflict, true, retryLater},
		{errcode.Unavailable, false, retryLater},
		{errcode.InvalidArgument, false, giveUp},
		{errcode.OutOfRange, true, giveUp},
		{errcode.PermissionDenied, false, giveUp},
	} {
		if got := reactToForwardError(c.code, c.full); got != c.want {
			t.Errorf("%v (full %v): %v, want %v", c.code, c.full, got, c.want)
		}
	}
	if !forwardNeedsFull(false, mgmtdpb.PublicState_PUBLIC_SYNCING) || forwardNeedsFull(true, mgmtdpb.PublicState_PUBLIC_SYNCING) ||
		forwardNeedsFull(false, mgmtdpb.PublicState_PUBLIC_SERVING) {
		t.Error("forwardNeedsFull: only a plain forward to a syncing successor becomes full")
	}
}

func TestAdmitSync(t *testing.T) {
	syncing, serving := mgmtdpb.PublicState_PUBLIC_SYNCING, mgmtdpb.PublicState_PUBLIC_SERVING
	tail := chainPos{In: true, Tail: true, Pred: 2}
	base := syncReceipt{Self: 3, From: 2, Pos: tail, State: syncing, Serving: []uint64{1, 2}, ChainVer: 7, Kind: wire.KindReplace, Version: 4}
	with := func(f func(*syncReceipt)) syncReceipt { r := base; f(&r); return r }
	for _, c := range []struct {
		name  string
		r     syncReceipt
		apply bool
		code  errcode.Code
	}{
		{"from predecessor while syncing", base, true, errcode.OK},
		{"stale old copy replaced (older version, older chain version)", with(func(r *syncReceipt) { r.Local = chunkView{Exists: true, Version: 9, ChainVer: 5} }), true, errcode.OK},
		{"not syncing", with(func(r *syncReceipt) { r.State = serving }), false, errcode.StaleVersion},
		{"from a non-predecessor", with(func(r *syncReceipt) { r.From = 1 }), false, errcode.PermissionDenied},
		{"from a client (no sender)", with(func(r *syncReceipt) { r.From = 0 }), false, errcode.PermissionDenied},
		{"older than committed here", with(func(r *syncReceipt) { r.Local = chunkView{Exists: true, Version: 3, ChainVer: 8} }), false, errcode.StaleVersion},
		{"older chain version but local copy corrupt", with(func(r *syncReceipt) { r.Local = chunkView{Exists: true, Version: 3, ChainVer: 8, Corrupt: true} }), true, errcode.OK},
		{"repair from a serving replica", with(func(r *syncReceipt) {
			r.Repair, r.State, r.From, r.Local = true, serving, 1, chunkView{Exists: true, Version: 4, Corrupt: true}
		}), true, errcode.OK},
		{"repair from outside the chain", with(func(r *syncReceipt) {
			r.Repair, r.State, r.From, r.Local = true, serving, 9, chunkView{Exists: true, Version: 4, Corrupt: true}
		}), false, errcode.PermissionDenied},
		{"repair of a copy no longer corrupt", with(func(r *syncReceipt) {
			r.Repair, r.State, r.Local = true, serving, chunkView{Exists: true, Version: 4}
		}), false, errcode.OK},
		{"repair over a pending version", with(func(r *syncReceipt) {
			r.Repair, r.State, r.Local = true, serving, chunkView{Exists: true, Version: 4, Pending: 5, Corrupt: true}
		}), false, errcode.Busy},
	} {
		v := admitSync(c.r)
		if v.Apply != c.apply || errcode.CodeOf(v.Err) != c.code {
			t.Errorf("%s: apply %v err %v, want apply %v code %v", c.name, v.Apply, v.Err, c.apply, c.code)
		}
	}
}

func TestPlanSyncChunk(t *testing.T) {
	mine := chunkengine.ChunkMeta{Version: 4, Length: 10, Checksum: 0xabc, ChunkSize: 4096}
	same := syncRemote{Present: true, Version: 4, Length: 10, Checksum: 0xabc, ChunkSize: 4096}
	diff := func(f func(*syncRemote)) syncRemote { r := same; f(&r); return r }
	for _, c := range []struct {
		name   string
		mine   chunkengine.ChunkMeta
		mineOK bool
		theirs syncRemote
		want   syncStep
	}{
		{"equal", mine, true, same, syncSkip},
		{"missing there", mine, true, syncRemote{}, syncReplace},
		{"older there", mine, true, diff(func(r *syncRemote) { r.Version = 3 }), syncReplace},
		{"newer there (stale returning copy)", mine, true, diff(func(r *syncRemote) { r.Version = 9 }), syncReplace},
		{"corrupt there", mine, true, diff(func(r *syncRemote) { r.Corrupt = true }), syncReplace},
		{"pending there", mine, true, diff(func(r *syncRemote) { r.Pending = 5 }), syncReplace},
		{"other checksum", mine, true, diff(func(r *syncRemote) { r.Checksum = 1 }), syncReplace},
		{"other chunk size", mine, true, diff(func(r *syncRemote) { r.ChunkSize = 8192 }), syncReplace},
		{"only there", chunkengine.ChunkMeta{}, false, same, syncRemove},
		{"only a pending create here", chunkengine.ChunkMeta{PendingVersion: 1}, true, same, syncRemove},
		{"nowhere", chunkengine.ChunkMeta{}, false, syncRemote{}, syncSkip},
	} {
		if got := planSyncChunk(c.mine, c.mineOK, c.theirs); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestVouchesUpToDate(t *testing.T) {
	const serving, syncing, offline = mgmtdpb.PublicState_PUBLIC_SERVING, mgmtdpb.PublicState_PUBLIC_SYNCING, mgmtdpb.PublicState_PUBLIC_OFFLINE
	for _, c := range []struct {
		recovered   bool
		at          uint64
		st          mgmtdpb.PublicState
		chainVer    uint64
		want        bool
		explanation string
	}{
		{false, 0, syncing, 5, false, "not recovered"},
		{true, 5, syncing, 5, true, "sync-done at the current version"},
		// The chaos finding: sync-done at 5, offline at 6-7 (unseen), syncing at 8.
		{true, 5, syncing, 8, false, "sync-done from an earlier syncing period"},
		{true, 5, serving, 9, true, "serving: stays on the write path"},
		{true, 5, offline, 5, true, "offline: followRouting clears the flag itself"},
	} {
		if got := vouchesUpToDate(c.recovered, c.at, c.st, c.chainVer); got != c.want {
			t.Errorf("%s: vouchesUpToDate(%v, %d, %v, %d) = %v, want %v", c.explanation, c.recovered, c.at, c.st, c.chainVer, got, c.want)
		}
	}
}
