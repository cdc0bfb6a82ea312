package service

import (
	"context"
	"slices"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/proto/storagepb"
	"github.com/emberfs/emberfs/storage/chunkengine"
)

// controlServer implements the Storage gRPC service (control calls only;
// chunk data goes over the data transport).
type controlServer struct {
	storagepb.UnimplementedStorageServer
	s *Service
}

const dumpBatch = 4096

func (c *controlServer) DumpChunkMeta(req *storagepb.DumpChunkMetaReq, stream storagepb.Storage_DumpChunkMetaServer) error {
	t, err := c.s.target(req.TargetId)
	if err != nil {
		return errcode.ToGRPC(err)
	}
	all := t.eng.Dump()
	for len(all) > 0 {
		n := min(len(all), dumpBatch)
		batch := &storagepb.DumpChunkMetaRsp{Chunks: make([]*storagepb.ChunkMeta, n)}
		for i, m := range all[:n] {
			batch.Chunks[i] = &storagepb.ChunkMeta{Inode: m.ID.Inode, Index: m.ID.Index, ChunkSize: m.ChunkSize,
				Version: m.Version, ChainVer: m.ChainVer, Length: m.Length, Checksum: m.Checksum,
				Corrupt: m.Corrupt, PendingVersion: m.PendingVersion}
		}
		if err := stream.Send(batch); err != nil {
			return err
		}
		all = all[n:]
	}
	return nil
}

func (c *controlServer) SyncDone(ctx context.Context, req *storagepb.SyncDoneReq) (*storagepb.SyncDoneRsp, error) {
	s := c.s
	t, err := s.target(req.TargetId)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	// A process that holds no lease (not registered yet after a restart,
	// or cut off) acts on no routing, sync-done included.
	if err := s.leaseOK(); err != nil {
		return nil, errcode.ToGRPC(err)
	}
	r, err := s.checkChain(ctx, req.ChainId, req.ChainVersion)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	if st := r.TargetState(t.id); st != mgmtdpb.PublicState_PUBLIC_SYNCING {
		return nil, errcode.ToGRPC(errcode.New(errcode.StaleVersion, "sync-done for target %d, which is %s at chain %d version %d", t.id, st, req.ChainId, req.ChainVersion))
	}
	// Only the predecessor the routing names syncs us.
	wt := r.WriteTargets(req.ChainId)
	if i := slices.Index(wt, t.id); i <= 0 || wt[i-1] != req.FromTargetId {
		return nil, errcode.ToGRPC(errcode.New(errcode.StaleVersion, "sync-done for target %d from target %d, which is not its predecessor in chain %d version %d", t.id, req.FromTargetId, req.ChainId, req.ChainVersion))
	}
	t.markRecovered(req.ChainVersion)
	s.log.Info("sync done; target up to date", "target", t.id, "chain", req.ChainId, "chain_version", req.ChainVersion, "from", req.FromTargetId,
		"replaced", req.ChunksReplaced, "removed", req.ChunksRemoved)
	return &storagepb.SyncDoneRsp{}, nil
}

func (c *controlServer) RepairChunk(ctx context.Context, req *storagepb.RepairChunkReq) (*storagepb.RepairChunkRsp, error) {
	s := c.s
	t, err := s.target(req.SourceTargetId)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	if err := s.leaseOK(); err != nil {
		return nil, errcode.ToGRPC(err)
	}
	r := s.cache.Current()
	if r == nil || r.TargetState(t.id) != mgmtdpb.PublicState_PUBLIC_SERVING || !t.isRecovered() {
		return nil, errcode.ToGRPC(errcode.New(errcode.Unavailable, "target %d is not serving and recovered; cannot be a repair source", t.id))
	}
	ver, err := s.repairFrom(ctx, t, req.DestTargetId, req.ChainId, chunkengine.ChunkID{Inode: req.Inode, Index: req.Index})
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &storagepb.RepairChunkRsp{Version: ver}, nil
}

func (c *controlServer) ListTargets(context.Context, *storagepb.ListTargetsReq) (*storagepb.ListTargetsRsp, error) {
	s := c.s
	rsp := &storagepb.ListTargetsRsp{NodeId: s.cfg.NodeID}
	reports := s.reports()
	for i, t := range s.order {
		info := &storagepb.TargetInfo{TargetId: t.id, Path: t.path, ChainId: reports[i].ChainId,
			LocalState: reports[i].LocalState.String(), CorruptChunks: uint64(len(t.eng.CorruptChunks()))}
		if si, err := t.eng.SpaceInfo(); err == nil {
			info.CapacityBytes, info.FreeBytes, info.UsedBytes, info.Chunks = si.Capacity, si.Free, si.Used, uint64(si.Chunks)
		}
		rsp.Targets = append(rsp.Targets, info)
	}
	return rsp, nil
}
