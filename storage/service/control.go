package service

import (
	"context"
	"slices"

	"github.com/emberfs/emberfs/internal/errcode"
	pb "github.com/emberfs/emberfs/service/proto"
	"github.com/emberfs/emberfs/storage/chunkengine"
)

// controlServer implements the Storage gRPC service (control calls only;
// chunk data goes over the data transport).
type controlServer struct {
	pb.UnimplementedStorageServer
	s *Service
}

const dumpBatch = 4096

func (c *controlServer) DumpChunkMeta(req *pb.StorageDumpChunkMetaReq, stream pb.Storage_DumpChunkMetaServer) error {
	t, err := c.s.target(req.TargetId)
	if err != nil {
		return errcode.ToGRPC(err)
	}
	all := t.eng.Dump()
	for len(all) > 0 {
		n := min(len(all), dumpBatch)
		batch := &pb.StorageDumpChunkMetaRsp{Chunks: make([]*pb.StorageChunkMeta, n)}
		for i, m := range all[:n] {
			batch.Chunks[i] = &pb.StorageChunkMeta{Inode: m.ID.Inode, Index: m.ID.Index, ChunkSize: m.ChunkSize,
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

func (c *controlServer) SyncDone(ctx context.Context, req *pb.StorageSyncDoneReq) (*pb.StorageSyncDoneRsp, error) {
	s := c.s
	t, err := s.target(req.TargetId)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	r, err := s.checkChain(ctx, req.ChainId, req.ChainVersion)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	if st := r.TargetState(t.id); st != pb.MgmtdPublicState_MGMTD_PUBLIC_SYNCING {
		return nil, errcode.ToGRPC(errcode.New(errcode.StaleVersion, "sync-done for target %d, which is %s at chain %d version %d", t.id, st, req.ChainId, req.ChainVersion))
	}
	// Only the predecessor the routing names syncs us.
	wt := r.WriteTargets(req.ChainId)
	if i := slices.Index(wt, t.id); i <= 0 || wt[i-1] != req.FromTargetId {
		return nil, errcode.ToGRPC(errcode.New(errcode.StaleVersion, "sync-done for target %d from target %d, which is not its predecessor in chain %d version %d", t.id, req.FromTargetId, req.ChainId, req.ChainVersion))
	}
	t.setRecovered(true)
	s.log.Info("sync done; target up to date", "target", t.id, "chain", req.ChainId, "from", req.FromTargetId,
		"replaced", req.ChunksReplaced, "removed", req.ChunksRemoved)
	return &pb.StorageSyncDoneRsp{}, nil
}

func (c *controlServer) RepairChunk(ctx context.Context, req *pb.StorageRepairChunkReq) (*pb.StorageRepairChunkRsp, error) {
	s := c.s
	t, err := s.target(req.SourceTargetId)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	if err := s.leaseOK(); err != nil {
		return nil, errcode.ToGRPC(err)
	}
	r := s.cache.Current()
	if r == nil || r.TargetState(t.id) != pb.MgmtdPublicState_MGMTD_PUBLIC_SERVING || !t.isRecovered() {
		return nil, errcode.ToGRPC(errcode.New(errcode.Unavailable, "target %d is not serving and recovered; cannot be a repair source", t.id))
	}
	ver, err := s.repairFrom(ctx, t, req.DestTargetId, req.ChainId, chunkengine.ChunkID{Inode: req.Inode, Index: req.Index})
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &pb.StorageRepairChunkRsp{Version: ver}, nil
}

func (c *controlServer) ListTargets(context.Context, *pb.StorageListTargetsReq) (*pb.StorageListTargetsRsp, error) {
	s := c.s
	rsp := &pb.StorageListTargetsRsp{NodeId: s.cfg.NodeID}
	reports := s.reports()
	for i, t := range s.order {
		info := &pb.StorageTargetInfo{TargetId: t.id, Path: t.path, ChainId: reports[i].ChainId,
			LocalState: reports[i].LocalState.String(), CorruptChunks: uint64(len(t.eng.CorruptChunks()))}
		if si, err := t.eng.SpaceInfo(); err == nil {
			info.CapacityBytes, info.FreeBytes, info.UsedBytes, info.Chunks = si.Capacity, si.Free, si.Used, uint64(si.Chunks)
		}
		rsp.Targets = append(rsp.Targets, info)
	}
	return rsp, nil
}
