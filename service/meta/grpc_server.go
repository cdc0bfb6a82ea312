package meta

import (
	"context"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/proto/metapb"
)

// GRPCService serves a Server over gRPC (register it on a grpc.Server made
// with rpcauth.ServerOptions so that the cluster token is checked).
type GRPCService struct {
	metapb.UnimplementedMetaServer
	s *Server
}

// NewGRPCService wraps s.
func NewGRPCService(s *Server) *GRPCService { return &GRPCService{s: s} }

func inodeResp(n Inode, err error) (*metapb.InodeResp, error) {
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &metapb.InodeResp{Inode: inodeToPB(&n)}, nil
}

func emptyResp(err error) (*metapb.Empty, error) {
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &metapb.Empty{}, nil
}

func openResp(r OpenResult, err error) (*metapb.OpenResp, error) {
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &metapb.OpenResp{Inode: inodeToPB(&r.Inode), Session: r.Session, Created: r.Created}, nil
}

func (g *GRPCService) StatFS(ctx context.Context, _ *metapb.StatFSReq) (*metapb.StatFSResp, error) {
	st, err := g.s.StatFS(ctx)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &metapb.StatFSResp{Capacity: st.Capacity, Free: st.Free, InodesAllocated: st.InodesAllocated}, nil
}

func (g *GRPCService) Stat(ctx context.Context, r *metapb.StatReq) (*metapb.InodeResp, error) {
	return inodeResp(g.s.Stat(ctx, userFromPB(r.User), pathFromPB(r.Path)))
}

func (g *GRPCService) BatchStat(ctx context.Context, r *metapb.BatchStatReq) (*metapb.BatchStatResp, error) {
	ns, err := g.s.BatchStat(ctx, r.Ids)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	resp := &metapb.BatchStatResp{}
	for _, n := range ns {
		if n == nil {
			resp.Inodes = append(resp.Inodes, &metapb.Inode{})
			resp.Found = append(resp.Found, false)
			continue
		}
		resp.Inodes = append(resp.Inodes, inodeToPB(n))
		resp.Found = append(resp.Found, true)
	}
	return resp, nil
}

func (g *GRPCService) BatchStatPaths(ctx context.Context, r *metapb.BatchStatPathsReq) (*metapb.BatchStatPathsResp, error) {
	paths := make([]PathAt, len(r.Paths))
	for i, p := range r.Paths {
		paths[i] = pathFromPB(p)
	}
	ns, errs, err := g.s.BatchStatPaths(ctx, userFromPB(r.User), paths)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	resp := &metapb.BatchStatPathsResp{}
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

func (g *GRPCService) Lookup(ctx context.Context, r *metapb.LookupReq) (*metapb.InodeResp, error) {
	return inodeResp(g.s.Lookup(ctx, userFromPB(r.User), r.Parent, r.Name))
}

func (g *GRPCService) Create(ctx context.Context, r *metapb.CreateReq) (*metapb.OpenResp, error) {
	opts := CreateOptions{Mode: r.Mode, Exclusive: r.Exclusive, Truncate: r.Truncate, Read: r.Read, Write: r.Write, ClientID: r.ClientId}
	if r.Layout != nil {
		l := layoutFromPB(r.Layout)
		opts.Layout = &l
	}
	return openResp(g.s.Create(ctx, userFromPB(r.User), pathFromPB(r.Path), opts))
}

func (g *GRPCService) Open(ctx context.Context, r *metapb.OpenReq) (*metapb.OpenResp, error) {
	return openResp(g.s.Open(ctx, userFromPB(r.User), pathFromPB(r.Path),
		OpenOptions{Read: r.Read, Write: r.Write, Truncate: r.Truncate, ClientID: r.ClientId}))
}

func (g *GRPCService) Close(ctx context.Context, r *metapb.CloseReq) (*metapb.InodeResp, error) {
	return inodeResp(g.s.Close(ctx, userFromPB(r.User), CloseOptions{Inode: r.Inode, Session: r.Session, UpdateLength: r.UpdateLength}))
}

func (g *GRPCService) Fsync(ctx context.Context, r *metapb.FsyncReq) (*metapb.InodeResp, error) {
	return inodeResp(g.s.Fsync(ctx, userFromPB(r.User), r.Inode))
}

func (g *GRPCService) Mkdir(ctx context.Context, r *metapb.MkdirReq) (*metapb.InodeResp, error) {
	return inodeResp(g.s.Mkdir(ctx, userFromPB(r.User), pathFromPB(r.Path), r.Mode, r.Parents))
}

func (g *GRPCService) Symlink(ctx context.Context, r *metapb.SymlinkReq) (*metapb.InodeResp, error) {
	return inodeResp(g.s.Symlink(ctx, userFromPB(r.User), pathFromPB(r.Path), r.Target))
}

func (g *GRPCService) Mknod(ctx context.Context, r *metapb.MknodReq) (*metapb.InodeResp, error) {
	return inodeResp(g.s.Mknod(ctx, userFromPB(r.User), pathFromPB(r.Path), FileType(r.Type), r.Mode, r.Rdev))
}

func (g *GRPCService) Readlink(ctx context.Context, r *metapb.PathReq) (*metapb.ReadlinkResp, error) {
	target, err := g.s.Readlink(ctx, userFromPB(r.User), pathFromPB(r.Path))
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &metapb.ReadlinkResp{Target: target}, nil
}

func (g *GRPCService) Link(ctx context.Context, r *metapb.LinkReq) (*metapb.InodeResp, error) {
	return inodeResp(g.s.Link(ctx, userFromPB(r.User), pathFromPB(r.OldPath), pathFromPB(r.NewPath)))
}

func (g *GRPCService) Unlink(ctx context.Context, r *metapb.PathReq) (*metapb.Empty, error) {
	return emptyResp(g.s.Unlink(ctx, userFromPB(r.User), pathFromPB(r.Path)))
}

func (g *GRPCService) Rmdir(ctx context.Context, r *metapb.PathReq) (*metapb.Empty, error) {
	return emptyResp(g.s.Rmdir(ctx, userFromPB(r.User), pathFromPB(r.Path)))
}

func (g *GRPCService) RemoveAll(ctx context.Context, r *metapb.PathReq) (*metapb.Empty, error) {
	return emptyResp(g.s.RemoveAll(ctx, userFromPB(r.User), pathFromPB(r.Path)))
}

func (g *GRPCService) Rename(ctx context.Context, r *metapb.RenameReq) (*metapb.Empty, error) {
	return emptyResp(g.s.Rename(ctx, userFromPB(r.User), pathFromPB(r.Src), pathFromPB(r.Dst), RenameFlags(r.Flags)))
}

func (g *GRPCService) ReadDir(ctx context.Context, r *metapb.ReadDirReq) (*metapb.ReadDirResp, error) {
	page, err := g.s.ReadDir(ctx, userFromPB(r.User), pathFromPB(r.Path),
		ReadDirOptions{Cursor: r.Cursor, Limit: int(r.Limit), WithStat: r.WithStat})
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	resp := &metapb.ReadDirResp{More: page.More, Entries: make([]*metapb.DirEntry, len(page.Entries))}
	for i, e := range page.Entries {
		resp.Entries[i] = &metapb.DirEntry{Name: e.Name, Id: e.ID, Type: uint32(e.Type), Inode: inodeToPB(e.Inode)}
	}
	return resp, nil
}

func (g *GRPCService) SetAttr(ctx context.Context, r *metapb.SetAttrReq) (*metapb.InodeResp, error) {
	a := SetAttr{Mode: r.Mode, UID: r.Uid, GID: r.Gid, Atime: optTimeFromPB(r.Atime, r.AtimeNs), Mtime: optTimeFromPB(r.Mtime, r.MtimeNs),
		AtimeNow: r.AtimeNow, MtimeNow: r.MtimeNow, Size: r.Size}
	return inodeResp(g.s.SetAttr(ctx, userFromPB(r.User), pathFromPB(r.Path), a))
}

func (g *GRPCService) SetDirLayout(ctx context.Context, r *metapb.SetDirLayoutReq) (*metapb.InodeResp, error) {
	return inodeResp(g.s.SetDirLayout(ctx, userFromPB(r.User), pathFromPB(r.Path), layoutFromPB(r.Layout)))
}

func (g *GRPCService) GetXattr(ctx context.Context, r *metapb.XattrReq) (*metapb.XattrResp, error) {
	v, err := g.s.GetXattr(ctx, userFromPB(r.User), pathFromPB(r.Path), r.Name)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &metapb.XattrResp{Value: v}, nil
}

func (g *GRPCService) SetXattr(ctx context.Context, r *metapb.XattrReq) (*metapb.Empty, error) {
	return emptyResp(g.s.SetXattr(ctx, userFromPB(r.User), pathFromPB(r.Path), r.Name, r.Value, int(r.Flags)))
}

func (g *GRPCService) ListXattr(ctx context.Context, r *metapb.XattrReq) (*metapb.XattrResp, error) {
	names, err := g.s.ListXattr(ctx, userFromPB(r.User), pathFromPB(r.Path))
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &metapb.XattrResp{Names: names}, nil
}

func (g *GRPCService) RemoveXattr(ctx context.Context, r *metapb.XattrReq) (*metapb.Empty, error) {
	return emptyResp(g.s.RemoveXattr(ctx, userFromPB(r.User), pathFromPB(r.Path), r.Name))
}

func (g *GRPCService) RenewClient(ctx context.Context, r *metapb.RenewClientReq) (*metapb.RenewClientResp, error) {
	exp, err := g.s.RenewClient(ctx, r.ClientId)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &metapb.RenewClientResp{ExpiresUnixNs: exp.UnixNano()}, nil
}

func (g *GRPCService) Lock(ctx context.Context, r *metapb.LockReq) (*metapb.LockResp, error) {
	res, err := g.s.Lock(ctx, userFromPB(r.User), LockRequest{Inode: r.Inode, Lock: LockFromPB(r.Lock), Test: r.Test})
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	out := &metapb.LockResp{}
	if res.Conflict != nil {
		out.Conflict = LockToPB(*res.Conflict)
	}
	return out, nil
}

func (g *GRPCService) ReserveAppend(ctx context.Context, r *metapb.ReserveAppendReq) (*metapb.ReserveAppendResp, error) {
	off, err := g.s.ReserveAppend(ctx, userFromPB(r.User), r.Inode, r.Session, r.Length)
	if err != nil {
		return nil, errcode.ToGRPC(err)
	}
	return &metapb.ReserveAppendResp{Offset: off}, nil
}
