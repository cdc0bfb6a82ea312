package service

import (
	"context"
	"errors"
	"io"
	"slices"
	"time"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/proto/storagepb"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// startSync starts syncing t's syncing successor unless a sync runs.
func (s *Service) startSync(t *target, chain uint32, succ uint64) {
	s.syncMu.Lock()
	if s.syncing[t.id] {
		s.syncMu.Unlock()
		return
	}
	s.syncing[t.id] = true
	s.syncMu.Unlock()
	s.goLoop(func() {
		defer func() {
			s.syncMu.Lock()
			delete(s.syncing, t.id)
			s.syncMu.Unlock()
		}()
		start := time.Now()
		st, err := s.syncSuccessor(t, chain, succ)
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Warn("sync of successor failed; will retry", "target", t.id, "successor", succ, "chain", chain, "err", err)
				// Retried by the routing loop's next pass.
				select {
				case <-s.ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
			return
		}
		s.metrics.syncs.Inc()
		s.log.Info("successor synced", "target", t.id, "successor", succ, "chain", chain,
			"replaced", st.replaced, "removed", st.removed, "unchanged", st.same, "took", time.Since(start).Round(time.Millisecond))
	})
}

type syncStats struct{ replaced, removed, same int }

// syncSuccessor brings a syncing successor to this target's committed
// state (3FS's recovery): dump the successor's chunk metadata, send a
// full-chunk replace for every chunk whose committed version, length or
// checksum differs (or that is corrupt or has a pending version there),
// remove chunks only the successor has, then send sync-done. Each chunk
// is handled under this target's chunk lock, so no write to it runs
// meanwhile; writes to other chunks flow on, forwarded to the syncing
// successor as full-chunk replaces.
func (s *Service) syncSuccessor(t *target, chain uint32, succ uint64) (syncStats, error) {
	var st syncStats
	ctx := s.ctx
	if err := s.syncSourceOK(t); err != nil {
		return st, err
	}
	r := s.cache.Current()
	chainVer := r.ChainVersion(chain)
	// Updates admitted before the successor joined the write path do not
	// reach it; the chunks they create must be in the dump below.
	if err := t.updates.drainOlder(ctx, chainVer); err != nil {
		return st, err
	}
	ctrl, _, err := r.TargetAddress(succ)
	if err != nil {
		return st, err
	}
	cl, err := s.control(ctrl)
	if err != nil {
		return st, err
	}
	theirs, err := dumpRemote(ctx, cl, succ)
	if err != nil {
		return st, err
	}
	mine := t.eng.Dump()
	have := make(map[chunkengine.ChunkID]bool, len(mine))
	for _, m := range mine {
		have[m.ID] = true
		same, err := s.syncChunk(ctx, t, chain, chainVer, succ, m.ID, theirs)
		if err != nil {
			return st, err
		}
		if same {
			st.same++
		} else {
			st.replaced++
		}
	}
	for id := range theirs {
		if have[id] {
			continue
		}
		if _, err := s.syncChunk(ctx, t, chain, chainVer, succ, id, theirs); err != nil {
			return st, err
		}
		st.removed++
	}
	// The successor may have got syncing under a newer chain version; it
	// checks that sync-done names the version it is syncing under.
	if cur := s.cache.Current(); cur.ChainVersion(chain) != chainVer {
		return st, errcode.New(errcode.StaleVersion, "chain %d changed from version %d during sync", chain, chainVer)
	}
	if err := s.syncSourceOK(t); err != nil {
		return st, err
	}
	if err := s.sendDedupe(t, chain, chainVer, succ); err != nil {
		return st, err
	}
	_, err = cl.SyncDone(ctx, &storagepb.SyncDoneReq{TargetId: succ, ChainId: chain, ChainVersion: chainVer,
		FromTargetId: t.id, ChunksReplaced: uint64(st.replaced), ChunksRemoved: uint64(st.removed)})
	return st, errcode.FromGRPC(err)
}

// syncSourceOK refuses to sync from a target this process does not know
// to hold the chain's committed data (not recovered since it started, or
// cut off from mgmtd): its copy could roll the successor back.
func (s *Service) syncSourceOK(t *target) error {
	if err := s.leaseOK(); err != nil {
		return err
	}
	if !t.isRecovered() {
		return errcode.New(errcode.Unavailable, "target %d is not recovered; it cannot be a sync source", t.id)
	}
	return nil
}

func dumpRemote(ctx context.Context, cl storagepb.StorageClient, target uint64) (map[chunkengine.ChunkID]*storagepb.ChunkMeta, error) {
	stream, err := cl.DumpChunkMeta(ctx, &storagepb.DumpChunkMetaReq{TargetId: target})
	if err != nil {
		return nil, errcode.FromGRPC(err)
	}
	out := map[chunkengine.ChunkID]*storagepb.ChunkMeta{}
	for {
		batch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, errcode.FromGRPC(err)
		}
		for _, m := range batch.Chunks {
			out[chunkengine.ChunkID{Inode: m.Inode, Index: m.Index}] = m
		}
	}
}

// syncChunk makes the successor's copy of id equal to ours (under our
// chunk lock). It reports whether it was equal already. Every frame is
// stamped with chainVer, the chain version the sync started under: if
// the chain moved on (this source demoted), the successor refuses it.
func (s *Service) syncChunk(ctx context.Context, t *target, chain uint32, chainVer uint64, succ uint64, id chunkengine.ChunkID, theirs map[chunkengine.ChunkID]*storagepb.ChunkMeta) (bool, error) {
	unlock, err := s.locks.lock(ctx, t.id, id)
	if err != nil {
		return false, err
	}
	defer unlock()
	m, ok := t.eng.Stat(id)
	var o syncRemote
	if p := theirs[id]; p != nil {
		o = syncRemote{Present: true, Version: p.Version, Length: p.Length, Checksum: p.Checksum,
			ChunkSize: p.ChunkSize, Corrupt: p.Corrupt, Pending: p.PendingVersion}
	}
	switch planSyncChunk(m, ok, o) {
	case syncSkip:
		return true, nil
	case syncRemove:
		return false, s.sendSync(t, chain, chainVer, succ, &update{UpdateReq: wire.UpdateReq{Chunk: id, Kind: wire.KindRemove}})
	}
	// A pending version here has nobody driving it (we hold the lock):
	// the committed version is what the chain acknowledged.
	data, ver, err := t.eng.Read(id, 0, chunkengine.MaxChunkSize, true)
	if err != nil {
		return false, err
	}
	return false, s.sendSync(t, chain, chainVer, succ, &update{
		UpdateReq: wire.UpdateReq{Chunk: id, Kind: wire.KindReplace, Version: ver, ChunkSize: m.ChunkSize}, data: data})
}

// sendSync sends a full-state update over the data transport (OpSync),
// stamped with the chain version the sync or repair started under and
// with the sending target.
func (s *Service) sendSync(t *target, chain uint32, chainVer uint64, dest uint64, u *update) error {
	r := s.cache.Current()
	_, addr, err := r.TargetAddress(dest)
	if err != nil {
		return err
	}
	u.Target, u.Chain, u.ChainVer, u.From = dest, chain, chainVer, t.id
	u.Flags |= wire.FlagFull | wire.FlagCheckCRC
	u.DataCRC = crc32c.Checksum(u.data)
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ForwardTimeout.Duration)
	defer cancel()
	resp, err := s.tc.Call(ctx, addr, &transport.Request{Op: wire.OpSync, Ext: u.Encode(nil), Payload: [][]byte{u.data}}, nil)
	if err != nil {
		return err
	}
	resp.Release()
	return nil
}

// handleSync serves OpSync on the receiving side of a sync or repair: a
// full-chunk replace, or a remove, applied whatever the local version.
func (s *Service) handleSync(ctx context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
	u, err := decodeUpdate(req)
	if err != nil {
		return nil, err
	}
	if u.Kind != wire.KindReplace && u.Kind != wire.KindRemove {
		return nil, errcode.New(errcode.InvalidArgument, "sync of chunk %s: only replace or remove, got %s", u.Chunk, chunkengine.UpdateKind(u.Kind))
	}
	if u.Kind == wire.KindReplace && u.Version == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "sync replace of chunk %s without a version", u.Chunk)
	}
	if err := admitPeer(s.cache.Current(), req.Peer, "sync", u.From); err != nil {
		return nil, err
	}
	t, err := s.target(u.Target)
	if err != nil {
		return nil, err
	}
	if err := s.leaseOK(); err != nil {
		return nil, err
	}
	r, err := s.checkChain(ctx, u.Chain, u.ChainVer)
	if err != nil {
		return nil, err
	}
	if tt, ok := r.Target(t.id); !ok || tt.ChainId != u.Chain {
		return nil, errcode.New(errcode.StaleVersion, "sync of chunk %s to target %d, which is not in chain %d", u.Chunk, t.id, u.Chain)
	}
	unlock, err := s.locks.lock(ctx, t.id, u.Chunk)
	if err != nil {
		return nil, err
	}
	defer unlock()
	m, ok := t.eng.Stat(u.Chunk)
	v := admitSync(syncReceipt{
		Repair: u.Flags&wire.FlagRepair != 0, Self: t.id, From: u.From,
		Pos: positionIn(r.WriteTargets(u.Chain), t.id), State: r.TargetState(t.id),
		Serving: r.ServingTargets(u.Chain), Local: viewOf(m, ok),
		ChainVer: u.ChainVer, Kind: u.Kind, Version: u.Version,
	})
	if v.Err != nil {
		s.log.Warn("sync frame refused", "target", t.id, "from", u.From, "chunk", u.Chunk, "err", v.Err)
		return nil, v.Err
	}
	if !v.Apply {
		return reply(rspOf(t.eng, u.Chunk)), nil
	}
	if err := s.applyFull(t, u, true); err != nil {
		return nil, err
	}
	t.kvObserve(u.Chunk)
	if u.Flags&wire.FlagRepair != 0 {
		s.metrics.repairs.Inc()
		s.log.Info("corrupt chunk repaired", "target", t.id, "chunk", u.Chunk, "version", u.Version)
	}
	return reply(rspOf(t.eng, u.Chunk)), nil
}

func (s *Service) kickRepair() {
	select {
	case s.repairKick <- struct{}{}:
	default:
	}
}

// repairLoop asks another serving replica to send a full copy of every
// chunk this service holds corrupt.
func (s *Service) repairLoop() {
	tick := time.NewTicker(s.cfg.RepairInterval.Duration)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.repairKick:
		case <-tick.C:
		}
		for _, t := range s.order {
			for _, id := range t.eng.CorruptChunks() {
				if err := s.requestRepair(t, id); err != nil && s.ctx.Err() == nil {
					s.log.Warn("repair of corrupt chunk failed; will retry", "target", t.id, "chunk", id, "err", err)
				}
			}
		}
	}
}

func (s *Service) requestRepair(t *target, id chunkengine.ChunkID) error {
	r := s.cache.Current()
	if r == nil {
		return errcode.New(errcode.Unavailable, "no routing yet")
	}
	tt, ok := r.Target(t.id)
	if !ok || tt.ChainId == 0 {
		return errcode.New(errcode.NotFound, "target %d is in no chain", t.id)
	}
	// Prefer the predecessor (its state is never behind ours), then any
	// other serving replica.
	var src []uint64
	wt := r.WriteTargets(tt.ChainId)
	if i := slices.Index(wt, t.id); i > 0 {
		src = append(src, wt[i-1])
	}
	for _, c := range r.ServingTargets(tt.ChainId) {
		if c != t.id && slices.Index(src, c) < 0 {
			src = append(src, c)
		}
	}
	if len(src) == 0 {
		return errcode.New(errcode.Unavailable, "chain %d has no other serving replica to repair chunk %s from", tt.ChainId, id)
	}
	var last error
	for _, from := range src {
		ctrl, _, err := r.TargetAddress(from)
		if err != nil {
			last = err
			continue
		}
		cl, err := s.control(ctrl)
		if err != nil {
			last = err
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ForwardTimeout.Duration)
		_, err = cl.RepairChunk(ctx, &storagepb.RepairChunkReq{SourceTargetId: from, DestTargetId: t.id, ChainId: tt.ChainId, Inode: id.Inode, Index: id.Index})
		cancel()
		if err == nil {
			return nil
		}
		last = errcode.FromGRPC(err)
	}
	return last
}

// repairFrom sends our committed copy of a chunk to dest (RepairChunk).
func (s *Service) repairFrom(ctx context.Context, src *target, dest uint64, chain uint32, id chunkengine.ChunkID) (uint64, error) {
	unlock, err := s.locks.lock(ctx, src.id, id)
	if err != nil {
		return 0, err
	}
	defer unlock()
	m, ok := src.eng.Stat(id)
	u := &update{UpdateReq: wire.UpdateReq{Chunk: id, Flags: wire.FlagRepair}}
	switch {
	case !ok || m.Version == 0:
		u.Kind = wire.KindRemove
	case m.PendingVersion != 0:
		return 0, errcode.New(errcode.Busy, "chunk %s on target %d has pending version %d", id, src.id, m.PendingVersion)
	default:
		data, ver, err := src.eng.Read(id, 0, chunkengine.MaxChunkSize, false)
		if err != nil {
			return 0, err
		}
		u.Kind, u.Version, u.ChunkSize, u.data = wire.KindReplace, ver, m.ChunkSize, data
	}
	if err := s.sendSync(src, chain, s.cache.Current().ChainVersion(chain), dest, u); err != nil {
		return 0, err
	}
	return u.Version, nil
}

func (s *Service) sendDedupe(t *target, chain uint32, chainVer uint64, succ uint64) error {
	recs := s.dedupe.succeeded(func(id chunkengine.ChunkID) bool {
		_, ok := t.eng.Stat(id)
		return ok
	})
	r := s.cache.Current()
	_, addr, err := r.TargetAddress(succ)
	if err != nil {
		return err
	}
	q := wire.InodeReq{Target: succ, Chain: chain, ChainVer: chainVer}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ForwardTimeout.Duration)
	defer cancel()
	resp, err := s.tc.Call(ctx, addr, &transport.Request{Op: wire.OpSyncDedupe, Ext: q.Encode(nil), Payload: [][]byte{encodeDedupeRecords(recs)}}, nil)
	if err != nil {
		return err
	}
	resp.Release()
	return nil
}

// handleSyncDedupe merges a sync source's dedupe outcomes (wire.OpSyncDedupe).
func (s *Service) handleSyncDedupe(ctx context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
	q, err := wire.DecodeInodeReq(req.Ext)
	if err != nil {
		return nil, err
	}
	if req.Peer.Role != transport.PeerStorage {
		return nil, errcode.New(errcode.PermissionDenied, "dedupe sync from a connection that is not a storage service's")
	}
	recs, err := decodeDedupeRecords(req.Payload)
	if err != nil {
		return nil, err
	}
	t, err := s.target(q.Target)
	if err != nil {
		return nil, err
	}
	if err := s.leaseOK(); err != nil {
		return nil, err
	}
	r, err := s.checkChain(ctx, q.Chain, q.ChainVer)
	if err != nil {
		return nil, err
	}
	if st := r.TargetState(t.id); st != mgmtdpb.PublicState_PUBLIC_SYNCING {
		return nil, errcode.New(errcode.StaleVersion, "dedupe sync for target %d, which is %s at chain %d version %d", t.id, st, q.Chain, q.ChainVer)
	}
	// Persisted first, so they survive this target's own restart (one
	// metadata fsync for the lot).
	if err := t.eng.RecordOutcomes(engineOutcomes(recs)); err != nil {
		return nil, err
	}
	s.dedupe.merge(recs)
	return &transport.ServerResponse{}, nil
}
