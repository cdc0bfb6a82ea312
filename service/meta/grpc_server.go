package meta

import (
	"context"

	"github.com/emberfs/emberfs/internal/errcode"
	pb "github.com/emberfs/emberfs/service/proto"
)

// GRPCService serves a Server over gRPC (register it on a grpc.Server made
// with rpcauth.ServerOptions so that the cluster token is checked).
type GRPCService struct {
	pb.UnimplementedMetaServer
	s *Server
}

// NewGRPCService wraps s.
func NewGRPCService(s *Server) *GRPCService { return &GRPCService{s: s} }

func inodeResp(n Inode, err error) (*pb.MetaInodeResp, error) {
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &pb.MetaInodeResp{Inode: inodeToPB(&n)}, nil
}

func emptyResp(err error) (*pb.MetaEmpty, error) {
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &pb.MetaEmpty{}, nil
}

func openResp(r OpenResult, err error) (*pb.MetaOpenResp, error) {
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &pb.MetaOpenResp{Inode: inodeToPB(&r.Inode), Session: r.Session, Created: r.Created}, nil
}

func (g *GRPCService) StatFS(ctx context.Context, _ *pb.MetaStatFSReq) (*pb.MetaStatFSResp, error) {
	st, err := g.s.StatFS(ctx)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &pb.MetaStatFSResp{Capacity: st.Capacity, Free: st.Free, InodesAllocated: st.InodesAllocated}, nil
}

func (g *GRPCService) Stat(ctx context.Context, r *pb.MetaStatReq) (*pb.MetaInodeResp, error) {
	return inodeResp(g.s.Stat(ctx, userFromPB(r.User), pathFromPB(r.Path)))
}

func (g *GRPCService) BatchStat(ctx context.Context, r *pb.MetaBatchStatReq) (*pb.MetaBatchStatResp, error) {
	ns, err := g.s.BatchStat(ctx, r.Ids)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	resp := &pb.MetaBatchStatResp{}
	for _, n := range ns {
		if n == nil {
			resp.Inodes = append(resp.Inodes, &pb.MetaInode{})
			resp.Found = append(resp.Found, false)
			continue
		}
		resp.Inodes = append(resp.Inodes, inodeToPB(n))
		resp.Found = append(resp.Found, true)
	}
	return resp, nil
}

func (g *GRPCService) BatchStatPaths(ctx context.Context, r *pb.MetaBatchStatPathsReq) (*pb.MetaBatchStatPathsResp, error) {
	paths := make([]PathAt, len(r.Paths))
	for i, p := range r.Paths {
		paths[i] = pathFromPB(p)
	}
	ns, errs, err := g.s.BatchStatPaths(ctx, userFromPB(r.User), paths)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	resp := &pb.MetaBatchStatPathsResp{}
	for i := range ns {
		resp.Inodes = append(resp.Inodes, inodeToPB(&ns[i]))
		var msg string
		if errs[i] != nil {
			msg = errs[i].Error()
		}
		resp.Codes = append(resp.Codes, uint32(errcode.CodeOf(errs[i])))
		resp.Errnos = append(resp.Errnos, uint32(errcode.ErrnoOf(errs[i])))
		resp.Messages = append(resp.Messages, msg)
	}
	return resp, nil
}

func (g *GRPCService) Lookup(ctx context.Context, r *pb.MetaLookupReq) (*pb.MetaInodeResp, error) {
	return inodeResp(g.s.Lookup(ctx, userFromPB(r.User), r.Parent, r.Name))
}

func (g *GRPCService) Create(ctx context.Context, r *pb.MetaCreateReq) (*pb.MetaOpenResp, error) {
	opts := CreateOptions{Mode: r.Mode, Exclusive: r.Exclusive, Truncate: r.Truncate, Read: r.Read, Write: r.Write, ClientID: r.ClientId}
	if r.Layout != nil {
		l := layoutFromPB(r.Layout)
		opts.Layout = &l
	}
	return openResp(g.s.Create(ctx, userFromPB(r.User), pathFromPB(r.Path), opts))
}

func (g *GRPCService) Open(ctx context.Context, r *pb.MetaOpenReq) (*pb.MetaOpenResp, error) {
	return openResp(g.s.Open(ctx, userFromPB(r.User), pathFromPB(r.Path),
		OpenOptions{Read: r.Read, Write: r.Write, Truncate: r.Truncate, ClientID: r.ClientId}))
}

func (g *GRPCService) Close(ctx context.Context, r *pb.MetaCloseReq) (*pb.MetaInodeResp, error) {
	return inodeResp(g.s.Close(ctx, userFromPB(r.User), CloseOptions{Inode: r.Inode, Session: r.Session, UpdateLength: r.UpdateLength}))
}

func (g *GRPCService) Fsync(ctx context.Context, r *pb.MetaFsyncReq) (*pb.MetaInodeResp, error) {
	return inodeResp(g.s.Fsync(ctx, userFromPB(r.User), r.Inode))
}

func (g *GRPCService) Mkdir(ctx context.Context, r *pb.MetaMkdirReq) (*pb.MetaInodeResp, error) {
	return inodeResp(g.s.Mkdir(ctx, userFromPB(r.User), pathFromPB(r.Path), r.Mode, r.Parents))
}

func (g *GRPCService) Symlink(ctx context.Context, r *pb.MetaSymlinkReq) (*pb.MetaInodeResp, error) {
	return inodeResp(g.s.Symlink(ctx, userFromPB(r.User), pathFromPB(r.Path), r.Target))
}

func (g *GRPCService) Readlink(ctx context.Context, r *pb.MetaPathReq) (*pb.MetaReadlinkResp, error) {
	target, err := g.s.Readlink(ctx, userFromPB(r.User), pathFromPB(r.Path))
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &pb.MetaReadlinkResp{Target: target}, nil
}

func (g *GRPCService) Link(ctx context.Context, r *pb.MetaLinkReq) (*pb.MetaInodeResp, error) {
	return inodeResp(g.s.Link(ctx, userFromPB(r.User), pathFromPB(r.OldPath), pathFromPB(r.NewPath)))
}

func (g *GRPCService) Unlink(ctx context.Context, r *pb.MetaPathReq) (*pb.MetaEmpty, error) {
	return emptyResp(g.s.Unlink(ctx, userFromPB(r.User), pathFromPB(r.Path)))
}

func (g *GRPCService) Rmdir(ctx context.Context, r *pb.MetaPathReq) (*pb.MetaEmpty, error) {
	return emptyResp(g.s.Rmdir(ctx, userFromPB(r.User), pathFromPB(r.Path)))
}

func (g *GRPCService) RemoveAll(ctx context.Context, r *pb.MetaPathReq) (*pb.MetaEmpty, error) {
	return emptyResp(g.s.RemoveAll(ctx, userFromPB(r.User), pathFromPB(r.Path)))
}

func (g *GRPCService) Rename(ctx context.Context, r *pb.MetaRenameReq) (*pb.MetaEmpty, error) {
	return emptyResp(g.s.Rename(ctx, userFromPB(r.User), pathFromPB(r.Src), pathFromPB(r.Dst), RenameFlags(r.Flags)))
}

func (g *GRPCService) ReadDir(ctx context.Context, r *pb.MetaReadDirReq) (*pb.MetaReadDirResp, error) {
	page, err := g.s.ReadDir(ctx, userFromPB(r.User), pathFromPB(r.Path),
		ReadDirOptions{Cursor: r.Cursor, Limit: int(r.Limit), WithStat: r.WithStat})
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	resp := &pb.MetaReadDirResp{More: page.More, Entries: make([]*pb.MetaDirEntry, len(page.Entries))}
	for i, e := range page.Entries {
		resp.Entries[i] = &pb.MetaDirEntry{Name: e.Name, Id: e.ID, Type: uint32(e.Type), Inode: inodeToPB(e.Inode)}
	}
	return resp, nil
}

func (g *GRPCService) SetAttr(ctx context.Context, r *pb.MetaSetAttrReq) (*pb.MetaInodeResp, error) {
	a := SetAttr{Mode: r.Mode, UID: r.Uid, GID: r.Gid, Atime: optTime(r.AtimeNs), Mtime: optTime(r.MtimeNs),
		AtimeNow: r.AtimeNow, MtimeNow: r.MtimeNow, Size: r.Size}
	return inodeResp(g.s.SetAttr(ctx, userFromPB(r.User), pathFromPB(r.Path), a))
}

func (g *GRPCService) SetDirLayout(ctx context.Context, r *pb.MetaSetDirLayoutReq) (*pb.MetaInodeResp, error) {
	return inodeResp(g.s.SetDirLayout(ctx, userFromPB(r.User), pathFromPB(r.Path), layoutFromPB(r.Layout)))
}

func (g *GRPCService) GetXattr(ctx context.Context, r *pb.MetaXattrReq) (*pb.MetaXattrResp, error) {
	v, err := g.s.GetXattr(ctx, userFromPB(r.User), pathFromPB(r.Path), r.Name)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &pb.MetaXattrResp{Value: v}, nil
}

func (g *GRPCService) SetXattr(ctx context.Context, r *pb.MetaXattrReq) (*pb.MetaEmpty, error) {
	return emptyResp(g.s.SetXattr(ctx, userFromPB(r.User), pathFromPB(r.Path), r.Name, r.Value, int(r.Flags)))
}

func (g *GRPCService) ListXattr(ctx context.Context, r *pb.MetaXattrReq) (*pb.MetaXattrResp, error) {
	names, err := g.s.ListXattr(ctx, userFromPB(r.User), pathFromPB(r.Path))
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &pb.MetaXattrResp{Names: names}, nil
}

func (g *GRPCService) RemoveXattr(ctx context.Context, r *pb.MetaXattrReq) (*pb.MetaEmpty, error) {
	return emptyResp(g.s.RemoveXattr(ctx, userFromPB(r.User), pathFromPB(r.Path), r.Name))
}

func (g *GRPCService) RenewClient(ctx context.Context, r *pb.MetaRenewClientReq) (*pb.MetaRenewClientResp, error) {
	exp, err := g.s.RenewClient(ctx, r.ClientId)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &pb.MetaRenewClientResp{ExpiresUnixNs: exp.UnixNano()}, nil
}
