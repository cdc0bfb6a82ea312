package service

import (
	"context"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// checkRead validates a read against routing: only a serving replica at
// the reader's chain version answers.
func (s *Service) checkRead(ctx context.Context, q *wire.ReadReq) (*target, error) {
	t, err := s.target(q.Target)
	if err != nil {
		return nil, err
	}
	if err := s.leaseOK(); err != nil {
		return nil, err
	}
	if err := s.routingCaughtUp(ctx); err != nil {
		return nil, err
	}
	r, err := s.checkChain(ctx, q.Chain, q.ChainVer)
	if err != nil {
		return nil, err
	}
	if tt, ok := r.Target(t.id); !ok || tt.ChainId != q.Chain {
		return nil, errcode.New(errcode.StaleVersion, "target %d is not in chain %d", t.id, q.Chain)
	}
	if st := r.TargetState(t.id); st != mgmtdpb.PublicState_PUBLIC_SERVING {
		return nil, errcode.New(errcode.StaleVersion, "target %d of chain %d is %s, not serving reads", t.id, q.Chain, st)
	}
	// Routing from before a restart can still show the target serving at
	// the chain version the reader holds; only a copy this process knows
	// to be complete answers.
	if !t.isRecovered() {
		return nil, errcode.New(errcode.Unavailable, "target %d of chain %d is not recovered on storage node %d yet", t.id, q.Chain, s.cfg.NodeID)
	}
	return t, nil
}

// routingCaughtUp refuses reads while our routing is older than the
// version mgmtd reported in its last heartbeat answer: a lease can be
// valid while the routing watch lags or was cut (a healed partition, a
// target mgmtd already marked failed), and such a replica may no longer
// be serving, or no longer hold the latest committed version. It first
// tries one refresh, so a watch that is merely a little behind costs a
// round trip rather than a failed read.
func (s *Service) routingCaughtUp(ctx context.Context) error {
	want := s.agent.RoutingVersion()
	if s.cache.Version() >= want {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	err := s.cache.Refresh(rctx)
	cancel()
	if have := s.cache.Version(); have < want {
		return errcode.New(errcode.Unavailable, "storage node %d has routing version %d, older than mgmtd's %d; reads refused until it catches up (refresh: %v)", s.cfg.NodeID, have, want, err)
	}
	return nil
}

// readRegion opens the committed bytes for a read; a checksum mismatch
// (the engine marks the chunk corrupt) starts a repair.
func (s *Service) readRegion(t *target, q *wire.ReadReq) (*chunkengine.Region, error) {
	reg, err := t.eng.OpenRegion(q.Chunk, q.Offset, q.Length, q.Relaxed)
	if err != nil {
		if errcode.Is(err, errcode.ChecksumMismatch) {
			s.metrics.corruptReads.Inc()
			s.kickRepair()
		}
		return nil, err
	}
	return reg, nil
}

func regionReply(reg *chunkengine.Region) (ext []byte, seg transport.Segment) {
	m := wire.ReadRsp{Version: reg.Version, Checksum: reg.Checksum}
	ext = m.Encode(nil)
	if reg.File != nil {
		seg = transport.FileRegion(reg.File, reg.Offset, reg.Length)
	}
	return ext, seg
}

// handleRead serves OpRead: committed bytes sent from the data file by
// sendfile.
func (s *Service) handleRead(ctx context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
	q, err := wire.DecodeReadReq(req.Ext)
	if err != nil {
		return nil, err
	}
	t, err := s.checkRead(ctx, &q)
	if err != nil {
		return nil, err
	}
	reg, err := s.readRegion(t, &q)
	if err != nil {
		return nil, err
	}
	s.metrics.readBytes.Add(float64(reg.Length))
	ext, seg := regionReply(reg)
	resp := &transport.ServerResponse{Ext: ext, Done: func() { reg.Close() }}
	if reg.File != nil {
		resp.Payload = []transport.Segment{seg}
	}
	return resp, nil
}

// maxOpenRegionsPerBatch bounds the data files one batch frame keeps open
// until its response is written (sendfile needs them open): a frame of
// 65,536 small reads must not hold 65,536 descriptors. Entries past it
// are copied into memory and their file closed at once; the response's
// size is bounded by the transport's max_payload either way.
const maxOpenRegionsPerBatch = 64

func copiedRegionReply(reg *chunkengine.Region) ([]byte, transport.Segment, error) {
	defer reg.Close()
	buf := make([]byte, reg.Length)
	if _, err := reg.File.ReadAt(buf, reg.Offset); err != nil {
		return nil, transport.Segment{}, errcode.New(errcode.Internal, "read chunk data for a batch entry: %v", err)
	}
	ext, _ := regionReply(&chunkengine.Region{Version: reg.Version, Checksum: reg.Checksum})
	return ext, transport.Bytes(buf), nil
}

// regionOpened counts a region a batch holds open, keeping the peak.
func (s *Service) regionOpened() {
	n := s.openRegions.Add(1)
	for {
		p := s.peakRegions.Load()
		if n <= p || s.peakRegions.CompareAndSwap(p, n) {
			return
		}
	}
}

// handleReadBatch serves OpReadBatch: many reads, one status each.
func (s *Service) handleReadBatch(ctx context.Context, _ *transport.ServerRequest, subs []transport.SubRequest) ([]transport.SubReply, func(), error) {
	replies := make([]transport.SubReply, len(subs))
	var regions []*chunkengine.Region
	for i, sub := range subs {
		q, err := wire.DecodeReadReq(sub.Ext)
		if err == nil && len(sub.Payload) != 0 {
			err = errcode.New(errcode.InvalidArgument, "read entry %d carries a %d-byte payload", i, len(sub.Payload))
		}
		var t *target
		if err == nil {
			t, err = s.checkRead(ctx, &q)
		}
		var reg *chunkengine.Region
		if err == nil {
			reg, err = s.readRegion(t, &q)
		}
		if err != nil {
			replies[i].Err = err
			continue
		}
		s.metrics.readBytes.Add(float64(reg.Length))
		if len(regions) < maxOpenRegionsPerBatch || reg.File == nil {
			regions = append(regions, reg)
			s.regionOpened()
			replies[i].Ext, replies[i].Data = regionReply(reg)
			continue
		}
		// Past the open-file bound: copy the bytes now and close the file.
		replies[i].Ext, replies[i].Data, replies[i].Err = copiedRegionReply(reg)
	}
	return replies, func() {
		for _, r := range regions {
			r.Close()
			s.openRegions.Add(-1)
		}
	}, nil
}

// handleQueryLast serves OpQueryLast: the highest committed chunk of an
// inode on this replica (ask the chain's tail, which commits first).
func (s *Service) handleQueryLast(ctx context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
	q, err := wire.DecodeInodeReq(req.Ext)
	if err != nil {
		return nil, err
	}
	rq := wire.ReadReq{Target: q.Target, Chain: q.Chain, ChainVer: q.ChainVer}
	t, err := s.checkRead(ctx, &rq)
	if err != nil {
		return nil, err
	}
	id, n, ok := t.eng.QueryLastChunk(q.Inode)
	return &transport.ServerResponse{Ext: wire.LastChunkRsp{Found: ok, Index: id.Index, Length: n}.Encode(nil)}, nil
}
