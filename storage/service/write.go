package service

import (
	"context"
	"errors"
	"time"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// update is one decoded chunk update with its payload.
type update struct {
	wire.UpdateReq
	data []byte
	// ifVersion (local updates only, not on the wire): the head applies
	// the update only while the chunk's committed version is this one (the
	// KV reclaimer removing exactly the value it chose).
	ifVersion uint64
}

func decodeUpdate(req *transport.ServerRequest) (*update, error) {
	u, err := wire.DecodeUpdateReq(req.Ext)
	if err != nil {
		return nil, err
	}
	n := len(req.Payload)
	switch u.Kind {
	case wire.KindWrite:
		if n == 0 {
			return nil, errcode.New(errcode.InvalidArgument, "write to chunk %s carries no data", u.Chunk)
		}
		fallthrough
	case wire.KindReplace:
		if n > wire.MaxData {
			return nil, errcode.New(errcode.OutOfRange, "update of chunk %s carries %d bytes, more than the largest chunk size %d", u.Chunk, n, wire.MaxData)
		}
		if u.ChunkSize != 0 && uint64(u.Offset)+uint64(n) > uint64(u.ChunkSize) {
			return nil, errcode.New(errcode.OutOfRange, "write of %d bytes at offset %d to chunk %s ends past its chunk size %d", n, u.Offset, u.Chunk, u.ChunkSize)
		}
	default:
		if n != 0 {
			return nil, errcode.New(errcode.InvalidArgument, "%s of chunk %s must carry no data, got %d bytes", chunkengine.UpdateKind(u.Kind), u.Chunk, n)
		}
	}
	if u.Flags&wire.FlagCheckCRC != 0 {
		if got := crc32c.Checksum(req.Payload); got != u.DataCRC {
			return nil, errcode.New(errcode.ChecksumMismatch, "update of chunk %s: payload of %d bytes has CRC32C %08x, sender said %08x", u.Chunk, n, got, u.DataCRC)
		}
	}
	return &update{UpdateReq: u, data: req.Payload}, nil
}

func (u *update) engineUpdate(chainVer uint64) chunkengine.Update {
	return chunkengine.Update{
		Kind: chunkengine.UpdateKind(u.Kind), Offset: u.Offset, Data: u.data, Length: u.Length,
		ChunkSize: u.ChunkSize, Version: u.Version, ChainVer: uint32(chainVer), Tag: u.tag(),
		DataCRC: u.DataCRC, DataCRCChecked: u.crcChecked(), KeepCached: kvformat.IsKVChunk(u.Chunk),
	}
}

// crcChecked says decodeUpdate checked the payload against DataCRC, so
// the engine need not checksum it again.
func (u *update) crcChecked() bool { return u.Flags&wire.FlagCheckCRC != 0 && len(u.data) > 0 }

// tag is the update's dedupe key as the engine persists it with the
// version it produces (zero without a client id).
func (u *update) tag() chunkengine.WriteTag {
	if u.ClientID == 0 {
		return chunkengine.WriteTag{}
	}
	return chunkengine.WriteTag{Client: u.ClientID, Channel: u.Channel, Seq: u.Seq}
}

func rspOf(eng *chunkengine.Engine, id chunkengine.ChunkID) wire.UpdateRsp {
	m, _ := eng.Stat(id)
	return wire.UpdateRsp{Version: m.Version, Length: m.Length, Checksum: m.Checksum}
}

func reply(rsp wire.UpdateRsp) *transport.ServerResponse {
	return &transport.ServerResponse{Ext: rsp.Encode(nil)}
}

// handleWrite serves OpWrite: a client's update, sent to the chain head.
func (s *Service) handleWrite(ctx context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
	u, err := decodeUpdate(req)
	if err != nil {
		return nil, err
	}
	if u.Version != 0 || u.Flags&(wire.FlagFull|wire.FlagRepair) != 0 {
		return nil, errcode.New(errcode.InvalidArgument, "write to chunk %s: clients may not set a version or the full/repair flags", u.Chunk)
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
	if err := admitHeadWrite(positionIn(r.WriteTargets(u.Chain), t.id), t.isRecovered(), t.id, u.Chain, u.ChainVer); err != nil {
		return nil, err
	}
	if kvformat.IsKVChunk(u.Chunk) && u.Kind == wire.KindReplace {
		// A KVCache put: a well-formed record, within the namespace's
		// share when it does not evict.
		if err := t.kv.Admit(u.Chunk, u.data); err != nil {
			return nil, err
		}
	}
	var entry *dedupeEntry
	if u.ClientID != 0 {
		e, mine, err := s.dedupe.begin(&u.UpdateReq)
		if err != nil {
			return nil, err
		}
		if !mine {
			select {
			case <-e.done:
			case <-ctx.Done():
				return nil, errcode.New(errcode.CodeOf(ctx.Err()), "waiting for an earlier attempt of the same write: %v", ctx.Err())
			}
			s.metrics.dedupeHits.Inc()
			if e.err != nil {
				return nil, e.err
			}
			return reply(e.rsp), nil
		}
		entry = e
	}
	rsp, err := s.runUpdate(ctx, t, u, true)
	if entry != nil {
		s.dedupe.finish(entry, rsp, err)
	}
	if err != nil {
		return nil, err
	}
	return reply(rsp), nil
}

// handleForward serves OpForward: the update at an explicit version from
// the predecessor in the chain.
func (s *Service) handleForward(ctx context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
	u, err := decodeUpdate(req)
	if err != nil {
		return nil, err
	}
	if u.Version == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "forward of chunk %s without a version", u.Chunk)
	}
	// Who may send it comes first: a refusal does not depend on this
	// node's lease or chain version.
	if err := admitPeer(s.cache.Current(), req.Peer, "forward", u.From); err != nil {
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
	if err := admitForward(positionIn(r.WriteTargets(u.Chain), t.id), u.From, t.id, u.Chain, u.ChainVer); err != nil {
		return nil, err
	}
	var entry *dedupeEntry
	if u.ClientID != 0 {
		// Recorded so that a client retry reaching this target after a
		// failover is answered from here; a duplicate forward itself is
		// made harmless by the chunk versions.
		if e, mine, err := s.dedupe.begin(&u.UpdateReq); err == nil && mine {
			entry = e
		}
	}
	rsp, err := s.runUpdate(ctx, t, u, false)
	if entry != nil {
		s.dedupe.finish(entry, rsp, err)
	}
	if err != nil {
		return nil, err
	}
	return reply(rsp), nil
}

// runUpdate applies u on t and drives it down the chain. Once the update
// is prepared here it is driven to completion on the service's own
// context, not the request's: a predecessor or client that went away
// must not leave the chain with a version nobody forwards.
func (s *Service) runUpdate(ctx context.Context, t *target, u *update, head bool) (wire.UpdateRsp, error) {
	unlock, err := s.locks.lock(ctx, t.id, u.Chunk)
	if err != nil {
		return wire.UpdateRsp{}, err
	}
	defer unlock()
	// Counted before routing is read, so a sync that saw a newer version
	// first either sees this update counted or this update sees the newer
	// version and stops (inflight.go).
	defer t.updates.enter(u.ChainVer)()
	// Re-read routing under the lock: the chain may have changed while we
	// waited, and the decision "am I the tail" must be current.
	r := s.cache.Current()
	if r.ChainVersion(u.Chain) != u.ChainVer {
		return wire.UpdateRsp{}, errcode.New(errcode.StaleVersion, "chain %d moved to version %d while the update of chunk %s waited", u.Chain, r.ChainVersion(u.Chain), u.Chunk)
	}
	if hook := s.admittedHook.Load(); hook != nil {
		(*hook)(t.id, u.Chunk)
	}
	defer t.kvObserve(u.Chunk) // under the lock: the index sees this change next
	if head {
		return s.headUpdate(t, r, u)
	}
	return s.replicaUpdate(t, r, u)
}

func isTail(r *routing.Routing, chain uint32, id uint64) bool {
	return positionIn(r.WriteTargets(chain), id).Tail
}

// headUpdate: the head assigns the version (committed + 1). The decision
// is planHead's; this is its I/O.
func (s *Service) headUpdate(t *target, r *routing.Routing, u *update) (wire.UpdateRsp, error) {
	id := u.Chunk
	tail := isTail(r, u.Chain, t.id)
	for redriven := false; ; redriven = true {
		m, ok := t.eng.Stat(id)
		step := planHead(viewOf(m, ok), u.Kind, u.ifVersion, tail)
		switch step {
		case headRedrive:
			if redriven {
				return wire.UpdateRsp{}, errcode.New(errcode.Internal, "chunk %s on target %d still has pending version %d after re-driving it", id, t.id, m.PendingVersion)
			}
			if err := s.redrivePending(t, r, u, tail); err != nil {
				return wire.UpdateRsp{}, err
			}
			if tag := u.tag(); !tag.IsZero() && m.PendingTag == tag {
				// The orphaned version was this very write (its head
				// restarted before answering): it is done now; applying
				// the retry too would apply the write twice.
				return rspOf(t.eng, id), nil
			}
			continue
		case headNothing:
			return rspOf(t.eng, id), nil
		case headReplace:
			// A client's replace sets the whole content: the head gives it
			// the next version and every replica applies it as a
			// full-state update, whatever version it holds.
			u.Version = m.Version + 1
			u.Flags |= wire.FlagFull
			if err := s.applyFull(t, u, tail); err != nil {
				return wire.UpdateRsp{}, s.updateErr(t, id, err)
			}
			if tail {
				return rspOf(t.eng, id), nil
			}
			return s.forwardAndCommit(t, u, true)
		case headApply:
			if _, err := t.eng.Apply(id, u.engineUpdate(u.ChainVer)); err != nil {
				return wire.UpdateRsp{}, s.updateErr(t, id, err)
			}
			return rspOf(t.eng, id), nil
		default: // headPrepare
			ver, err := t.eng.Prepare(id, u.engineUpdate(u.ChainVer))
			if err != nil {
				return wire.UpdateRsp{}, s.updateErr(t, id, err)
			}
			u.Version = ver
			return s.forwardAndCommit(t, u, false)
		}
	}
}

// redrivePending completes an orphaned pending version (one left by a
// forward driver that gave up): it may be committed downstream already,
// and readers may have seen it there, so it is sent down the chain as a
// full-state update at its own version and committed here. Aborting it
// and rebuilding from the older committed copy (what this once did) could
// roll acknowledged content back.
func (s *Service) redrivePending(t *target, r *routing.Routing, u *update, tail bool) error {
	id := u.Chunk
	data, m, err := t.eng.ReadPending(id)
	if err != nil {
		return s.updateErr(t, id, err)
	}
	s.log.Warn("head found an orphaned pending version; re-driving it down the chain",
		"target", t.id, "chunk", id, "pending", m.PendingVersion, "committed", m.Version, "remove", m.PendingRemove)
	pu := &update{UpdateReq: wire.UpdateReq{Target: t.id, Chain: u.Chain, ChainVer: u.ChainVer, Chunk: id,
		Kind: wire.KindReplace, Flags: wire.FlagFull, ChunkSize: m.ChunkSize, Version: m.PendingVersion,
		ClientID: m.PendingTag.Client, Channel: m.PendingTag.Channel, Seq: m.PendingTag.Seq}, data: data}
	if m.PendingRemove {
		pu.Kind, pu.data = wire.KindRemove, nil
	}
	if !tail {
		if err := s.forward(t, pu, true); err != nil {
			return err
		}
	}
	if mm, ok := t.eng.Stat(id); ok && mm.PendingVersion == m.PendingVersion {
		return t.eng.Commit(id, m.PendingVersion, 0)
	}
	return nil
}

// replicaUpdate: a forwarded update at an explicit version.
func (s *Service) replicaUpdate(t *target, r *routing.Routing, u *update) (wire.UpdateRsp, error) {
	id := u.Chunk
	tail := isTail(r, u.Chain, t.id)
	m, ok := t.eng.Stat(id)
	switch planReplica(viewOf(m, ok), u.Kind, u.Flags, u.Version, tail) {
	case replicaAck:
		return rspOf(t.eng, id), nil
	case replicaApplyFull:
		if err := s.applyFull(t, u, tail); err != nil {
			return wire.UpdateRsp{}, err
		}
		if tail {
			return rspOf(t.eng, id), nil
		}
		return s.forwardAndCommit(t, u, true)
	}
	eu := u.engineUpdate(u.ChainVer)
	var err error
	if tail { // replicaApply; else replicaPrepare
		_, err = t.eng.Apply(id, eu)
	} else {
		_, err = t.eng.Prepare(id, eu)
	}
	switch {
	case errcode.Is(err, errcode.AlreadyExists):
		// Committed here already, hence everywhere downstream: a retried
		// forward. Acknowledge.
		return rspOf(t.eng, id), nil
	case err != nil:
		return wire.UpdateRsp{}, s.updateErr(t, id, err)
	case tail:
		return rspOf(t.eng, id), nil
	}
	return s.forwardAndCommit(t, u, false)
}

// applyFull applies a full-state update (replace or forced remove): on the
// tail it commits at once, elsewhere it stays pending for the forward.
func (s *Service) applyFull(t *target, u *update, commit bool) error {
	id := u.Chunk
	m, ok := t.eng.Stat(id)
	if u.Kind == wire.KindRemove {
		if !ok {
			return nil
		}
		if m.PendingVersion != 0 {
			if err := t.eng.Abort(id, m.PendingVersion); err != nil {
				return err
			}
		}
		if m.Version == 0 {
			return nil
		}
		eu := chunkengine.Update{Kind: chunkengine.UpdateRemove, ChainVer: uint32(u.ChainVer), Tag: u.tag()}
		var err error
		if commit {
			_, err = t.eng.Apply(id, eu)
		} else {
			_, err = t.eng.Prepare(id, eu)
			if err == nil {
				// The removal's own version is local; downstream removes
				// whatever it holds.
				if mm, ok := t.eng.Stat(id); ok {
					u.Version = mm.PendingVersion
				}
			}
		}
		if errcode.Is(err, errcode.NotFound) {
			return nil
		}
		return err
	}
	eu := chunkengine.Update{Kind: chunkengine.UpdateReplace, Data: u.data, ChunkSize: u.ChunkSize,
		Version: u.Version, ChainVer: uint32(u.ChainVer), Tag: u.tag(), DataCRC: u.DataCRC, DataCRCChecked: u.crcChecked(),
		KeepCached: kvformat.IsKVChunk(id)}
	if commit {
		_, err := t.eng.Apply(id, eu)
		return err
	}
	_, err := t.eng.Prepare(id, eu)
	return err
}

// updateErr kicks the repair loop when an update found the chunk corrupt.
func (s *Service) updateErr(t *target, id chunkengine.ChunkID, err error) error {
	if errcode.Is(err, errcode.ChecksumMismatch) && t.eng.IsCorrupt(id) {
		s.kickRepair()
		return errcode.New(errcode.Busy, "chunk %s on target %d is corrupt and being repaired; retry: %v", id, t.id, err)
	}
	return err
}

// forwardAndCommit forwards u (pending at version u.Version here) to the
// successor and commits it locally once the successor acknowledged.
func (s *Service) forwardAndCommit(t *target, u *update, full bool) (wire.UpdateRsp, error) {
	id := u.Chunk
	if err := s.forward(t, u, full); err != nil {
		// Left pending: a later head write resolves it (headUpdate), and a
		// target that left the chain is resynced, which replaces it.
		return wire.UpdateRsp{}, err
	}
	if u.Kind == wire.KindRemove && full {
		if m, ok := t.eng.Stat(id); !ok || m.PendingVersion == 0 {
			return wire.UpdateRsp{}, nil
		}
	}
	if err := t.eng.Commit(id, u.Version, 0); err != nil {
		return wire.UpdateRsp{}, err
	}
	return rspOf(t.eng, id), nil
}

// forward sends u to the current successor until one acknowledges it.
// When mgmtd moves a failed successor out of the chain, the next attempt
// goes to the new successor; when this target became the tail, the update
// is complete. It gives up only when this target left the write path or
// the service stops.
func (s *Service) forward(t *target, u *update, full bool) error {
	backoff := 5 * time.Millisecond
	refresh := false
	for attempt := 0; ; attempt++ {
		if s.ctx.Err() != nil {
			return errcode.New(errcode.Unavailable, "storage node %d is stopping", s.cfg.NodeID)
		}
		if refresh {
			rctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
			_ = s.cache.Refresh(rctx)
			cancel()
			refresh = false
		}
		r := s.cache.Current()
		pos := positionIn(r.WriteTargets(u.Chain), t.id)
		if !pos.In {
			return errcode.New(errcode.Unavailable, "target %d left the write path of chain %d (routing %d) while forwarding chunk %s", t.id, u.Chain, r.Version(), u.Chunk)
		}
		if pos.Tail {
			return nil // we are the tail now
		}
		succ := pos.Succ
		fu := *u
		fu.Target, fu.From = succ, t.id
		fu.ChainVer = r.ChainVersion(u.Chain)
		if forwardNeedsFull(full, r.TargetState(succ)) {
			// A syncing successor may lack earlier versions: send the whole
			// new state of the chunk.
			var err error
			if fu, err = s.fullForward(t, u, fu); err != nil {
				return err
			}
		}
		err := s.sendForward(r, succ, &fu)
		if err == nil {
			if attempt > 0 {
				s.log.Info("forward succeeded after retries", "target", t.id, "to", succ, "chunk", u.Chunk, "attempts", attempt+1)
			}
			return nil
		}
		s.metrics.forwardRetries.Inc()
		switch reactToForwardError(errcode.CodeOf(err), full) {
		case refreshNow:
			refresh = true
		case sendFull:
			// The successor missed updates or holds a corrupt copy: the
			// whole chunk state repairs both.
			full = true
			var ferr error
			if *u, ferr = s.fullForward(t, u, *u); ferr != nil {
				return ferr
			}
			continue
		case giveUp:
			return err
		}
		if attempt%20 == 0 {
			s.log.Warn("forward failed; retrying", "target", t.id, "to", succ, "chunk", u.Chunk, "attempt", attempt+1, "err", err)
		}
		// Wait for a routing change or the backoff, whichever first.
		ch := s.cache.Changed()
		tm := time.NewTimer(backoff)
		select {
		case <-s.ctx.Done():
		case <-ch:
		case <-tm.C:
			refresh = true
		}
		tm.Stop()
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

func (s *Service) sendForward(r *routing.Routing, succ uint64, u *update) error {
	_, addr, err := r.TargetAddress(succ)
	if err != nil {
		return errcode.New(errcode.StaleVersion, "%v", err)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ForwardTimeout.Duration)
	defer cancel()
	// A successor cut off by the network answers nothing until the
	// timeout; once mgmtd moves it out of the chain, the forward goes to
	// the new successor instead of waiting (tests/netns, partition).
	ctx, stop := s.cache.WhileRouting(ctx, func(cur *routing.Routing) bool {
		p := positionIn(cur.WriteTargets(u.Chain), u.From)
		return p.In && !p.Tail && p.Succ == succ
	})
	defer stop()
	resp, err := s.tc.Call(ctx, addr, &transport.Request{Op: wire.OpForward, Ext: u.Encode(nil), Payload: [][]byte{u.data}}, nil)
	if err != nil {
		if errors.Is(context.Cause(ctx), mgmtdclient.ErrRoutingMoved) {
			return errcode.New(errcode.StaleVersion, "forward of chunk %s to target %d abandoned: routing no longer has it after target %d in chain %d", u.Chunk, succ, u.From, u.Chain)
		}
		return err
	}
	resp.Release()
	return nil
}

// fullForward turns a forward of u into one carrying the chunk's whole new
// state at the same version (replace; removes stay removes).
func (s *Service) fullForward(t *target, u *update, fu update) (update, error) {
	fu.Flags = (fu.Flags | wire.FlagFull) &^ wire.FlagCheckCRC
	if u.Kind == wire.KindRemove || u.Kind == wire.KindReplace {
		return fu, nil
	}
	full, size, err := s.fullContent(t, u)
	if err != nil {
		return fu, err
	}
	fu.Kind, fu.Offset, fu.Length, fu.ChunkSize, fu.data = wire.KindReplace, 0, 0, size, full
	return fu, nil
}

// fullContent computes the content u produces from the committed version
// (the pending version's own bytes are not readable through the engine).
func (s *Service) fullContent(t *target, u *update) ([]byte, uint32, error) {
	id := u.Chunk
	m, _ := t.eng.Stat(id)
	size := m.ChunkSize
	if size == 0 {
		size = u.ChunkSize
	}
	var base []byte
	if m.Version != 0 {
		b, _, err := t.eng.Read(id, 0, chunkengine.MaxChunkSize, true)
		if err != nil && !errcode.Is(err, errcode.NotFound) {
			return nil, 0, err
		}
		base = b
	}
	switch u.Kind {
	case wire.KindWrite:
		end := int(u.Offset) + len(u.data)
		if end > len(base) {
			base = append(base, make([]byte, end-len(base))...)
		}
		copy(base[u.Offset:], u.data)
	case wire.KindTruncate:
		if int(u.Length) <= len(base) {
			base = base[:u.Length]
		} else {
			base = append(base, make([]byte, int(u.Length)-len(base))...)
		}
	case wire.KindReplace:
		base = u.data
	}
	return base, size, nil
}

// handleRemoveInode serves OpRemoveInode at a chain head: every chunk of
// the inode is removed through the chain like any other update.
func (s *Service) handleRemoveInode(ctx context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
	q, err := wire.DecodeInodeReq(req.Ext)
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
	if head, ok := r.Head(q.Chain); !ok || head != t.id {
		return nil, errcode.New(errcode.StaleVersion, "target %d is not the head of chain %d at version %d", t.id, q.Chain, q.ChainVer)
	}
	removed := uint32(0)
	// The engine has no per-inode listing; Dump is sorted by id, so scan it.
	for _, m := range t.eng.Dump() {
		if m.ID.Inode != q.Inode {
			continue
		}
		u := &update{UpdateReq: wire.UpdateReq{Target: t.id, Chain: q.Chain, ChainVer: q.ChainVer, Chunk: m.ID, Kind: wire.KindRemove}}
		if _, err := s.runUpdate(ctx, t, u, true); err != nil {
			return nil, err
		}
		removed++
	}
	return &transport.ServerResponse{Ext: wire.LastChunkRsp{Found: removed > 0, Index: removed}.Encode(nil)}, nil
}

// admitPeer decides whether chain traffic (what: forward or sync) naming
// sending target from may come over a connection whose caller said it is
// peer: only a storage service's connection, and only for a target that
// routing places on another node. The sender's target id alone is
// a field anyone holding the cluster token can fill in (issue 13, hole 1).
func admitPeer(r *routing.Routing, peer transport.Peer, what string, from uint64) error {
	if peer.Role != transport.PeerStorage {
		return errcode.New(errcode.PermissionDenied, "%s from target %d over a connection that is not a storage service's (role %d); chain traffic comes only from storage peers", what, from, peer.Role)
	}
	// A target never moves between nodes, so any routing that knows it
	// places it right; one our routing does not know yet (a node that
	// just joined) is left to admitForward/admitSync, which take only the
	// predecessor after refreshing to the sender's chain version.
	if t, ok := r.Target(from); ok && t.NodeId != peer.Node {
		return errcode.New(errcode.PermissionDenied, "%s from target %d over a connection of storage node %d, which routing %d does not place that target on", what, from, peer.Node, r.Version())
	}
	return nil
}
