package meta

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/rpcauth"
	pb "github.com/emberfs/emberfs/service/proto"
)

// Client calls one meta server over gRPC; it implements FS with the same
// errors as the in-process Server (errcode codes and errnos survive the wire).
type Client struct {
	conn *grpc.ClientConn
	rpc  pb.MetaClient
}

var _ FS = (*Client)(nil)

// Dial connects to a meta server at addr with the cluster token.
func Dial(addr, token string, opts ...grpc.DialOption) (*Client, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), rpcauth.DialOption(token)}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, errcode.New(errcode.InvalidArgument, "meta client for %q: %v", addr, err)
	}
	return &Client{conn: conn, rpc: pb.NewMetaClient(conn)}, nil
}

// CloseConn closes the connection (Close is the file operation).
func (c *Client) CloseConn() error { return c.conn.Close() }

func inodeOut(r *pb.MetaInodeResp, err error) (Inode, error) {
	if err != nil {
		return Inode{}, errcode.FromGRPC(err)
	}
	return inodeFromPB(r.Inode), nil
}

func emptyOut(_ *pb.MetaEmpty, err error) error { return errcode.FromGRPC(err) }

func openOut(r *pb.MetaOpenResp, err error) (OpenResult, error) {
	if err != nil {
		return OpenResult{}, errcode.FromGRPC(err)
	}
	return OpenResult{Inode: inodeFromPB(r.Inode), Session: r.Session, Created: r.Created}, nil
}

func (c *Client) StatFS(ctx context.Context) (FSStat, error) {
	r, err := c.rpc.StatFS(ctx, &pb.MetaStatFSReq{})
	if err != nil {
		return FSStat{}, errcode.FromGRPC(err)
	}
	return FSStat{Capacity: r.Capacity, Free: r.Free, InodesAllocated: r.InodesAllocated}, nil
}

func (c *Client) Stat(ctx context.Context, u User, p PathAt) (Inode, error) {
	return inodeOut(c.rpc.Stat(ctx, &pb.MetaStatReq{User: userToPB(u), Path: pathToPB(p)}))
}

func (c *Client) BatchStat(ctx context.Context, ids []uint64) ([]*Inode, error) {
	r, err := c.rpc.BatchStat(ctx, &pb.MetaBatchStatReq{Ids: ids})
	if err != nil {
		return nil, errcode.FromGRPC(err)
	}
	out := make([]*Inode, len(r.Inodes))
	for i, n := range r.Inodes {
		if i < len(r.Found) && r.Found[i] {
			v := inodeFromPB(n)
			out[i] = &v
		}
	}
	return out, nil
}

func (c *Client) BatchStatPaths(ctx context.Context, u User, paths []PathAt) ([]Inode, []error, error) {
	req := &pb.MetaBatchStatPathsReq{User: userToPB(u)}
	for _, p := range paths {
		req.Paths = append(req.Paths, pathToPB(p))
	}
	r, err := c.rpc.BatchStatPaths(ctx, req)
	if err != nil {
		return nil, nil, errcode.FromGRPC(err)
	}
	out := make([]Inode, len(r.Inodes))
	errs := make([]error, len(r.Inodes))
	for i, n := range r.Inodes {
		out[i] = inodeFromPB(n)
		if r.Codes[i] != 0 {
			errs[i] = errcode.WithErrno(errcode.Code(r.Codes[i]), errnoOf(r.Errnos[i]), "%s", r.Messages[i])
		}
	}
	return out, errs, nil
}

func (c *Client) Lookup(ctx context.Context, u User, parent uint64, name string) (Inode, error) {
	return inodeOut(c.rpc.Lookup(ctx, &pb.MetaLookupReq{User: userToPB(u), Parent: parent, Name: name}))
}

func (c *Client) Create(ctx context.Context, u User, p PathAt, o CreateOptions) (OpenResult, error) {
	req := &pb.MetaCreateReq{User: userToPB(u), Path: pathToPB(p), Mode: o.Mode, Exclusive: o.Exclusive,
		Truncate: o.Truncate, Read: o.Read, Write: o.Write, ClientId: o.ClientID}
	if o.Layout != nil {
		req.Layout = layoutToPB(*o.Layout)
	}
	return openOut(c.rpc.Create(ctx, req))
}

func (c *Client) Open(ctx context.Context, u User, p PathAt, o OpenOptions) (OpenResult, error) {
	return openOut(c.rpc.Open(ctx, &pb.MetaOpenReq{User: userToPB(u), Path: pathToPB(p), Read: o.Read,
		Write: o.Write, Truncate: o.Truncate, ClientId: o.ClientID}))
}

func (c *Client) Close(ctx context.Context, u User, o CloseOptions) (Inode, error) {
	return inodeOut(c.rpc.Close(ctx, &pb.MetaCloseReq{User: userToPB(u), Inode: o.Inode, Session: o.Session, UpdateLength: o.UpdateLength}))
}

func (c *Client) Fsync(ctx context.Context, u User, inode uint64) (Inode, error) {
	return inodeOut(c.rpc.Fsync(ctx, &pb.MetaFsyncReq{User: userToPB(u), Inode: inode}))
}

func (c *Client) Mkdir(ctx context.Context, u User, p PathAt, mode uint32, parents bool) (Inode, error) {
	return inodeOut(c.rpc.Mkdir(ctx, &pb.MetaMkdirReq{User: userToPB(u), Path: pathToPB(p), Mode: mode, Parents: parents}))
}

func (c *Client) Symlink(ctx context.Context, u User, p PathAt, target string) (Inode, error) {
	return inodeOut(c.rpc.Symlink(ctx, &pb.MetaSymlinkReq{User: userToPB(u), Path: pathToPB(p), Target: target}))
}

func (c *Client) Readlink(ctx context.Context, u User, p PathAt) (string, error) {
	r, err := c.rpc.Readlink(ctx, &pb.MetaPathReq{User: userToPB(u), Path: pathToPB(p)})
	if err != nil {
		return "", errcode.FromGRPC(err)
	}
	return r.Target, nil
}

func (c *Client) Link(ctx context.Context, u User, oldPath, newPath PathAt) (Inode, error) {
	return inodeOut(c.rpc.Link(ctx, &pb.MetaLinkReq{User: userToPB(u), OldPath: pathToPB(oldPath), NewPath: pathToPB(newPath)}))
}

func (c *Client) Unlink(ctx context.Context, u User, p PathAt) error {
	return emptyOut(c.rpc.Unlink(ctx, &pb.MetaPathReq{User: userToPB(u), Path: pathToPB(p)}))
}

func (c *Client) Rmdir(ctx context.Context, u User, p PathAt) error {
	return emptyOut(c.rpc.Rmdir(ctx, &pb.MetaPathReq{User: userToPB(u), Path: pathToPB(p)}))
}

func (c *Client) RemoveAll(ctx context.Context, u User, p PathAt) error {
	return emptyOut(c.rpc.RemoveAll(ctx, &pb.MetaPathReq{User: userToPB(u), Path: pathToPB(p)}))
}

func (c *Client) Rename(ctx context.Context, u User, src, dst PathAt, flags RenameFlags) error {
	return emptyOut(c.rpc.Rename(ctx, &pb.MetaRenameReq{User: userToPB(u), Src: pathToPB(src), Dst: pathToPB(dst), Flags: uint32(flags)}))
}

func (c *Client) ReadDir(ctx context.Context, u User, p PathAt, o ReadDirOptions) (DirPage, error) {
	r, err := c.rpc.ReadDir(ctx, &pb.MetaReadDirReq{User: userToPB(u), Path: pathToPB(p), Cursor: o.Cursor,
		Limit: int32(min(o.Limit, 1<<20)), WithStat: o.WithStat})
	if err != nil {
		return DirPage{}, errcode.FromGRPC(err)
	}
	page := DirPage{More: r.More, Entries: make([]DirEntry, len(r.Entries))}
	for i, e := range r.Entries {
		page.Entries[i] = DirEntry{Name: e.Name, ID: e.Id, Type: FileType(e.Type)}
		if e.Inode != nil {
			n := inodeFromPB(e.Inode)
			page.Entries[i].Inode = &n
		}
	}
	return page, nil
}

func (c *Client) SetAttr(ctx context.Context, u User, p PathAt, a SetAttr) (Inode, error) {
	return inodeOut(c.rpc.SetAttr(ctx, &pb.MetaSetAttrReq{User: userToPB(u), Path: pathToPB(p), Mode: a.Mode,
		Uid: a.UID, Gid: a.GID, AtimeNs: timeNs(a.Atime), MtimeNs: timeNs(a.Mtime), AtimeNow: a.AtimeNow,
		MtimeNow: a.MtimeNow, Size: a.Size}))
}

func (c *Client) Truncate(ctx context.Context, u User, p PathAt, size uint64) (Inode, error) {
	return c.SetAttr(ctx, u, p, SetAttr{Size: &size})
}

func (c *Client) SetDirLayout(ctx context.Context, u User, p PathAt, l Layout) (Inode, error) {
	return inodeOut(c.rpc.SetDirLayout(ctx, &pb.MetaSetDirLayoutReq{User: userToPB(u), Path: pathToPB(p), Layout: layoutToPB(l)}))
}

func (c *Client) GetXattr(ctx context.Context, u User, p PathAt, name string) ([]byte, error) {
	r, err := c.rpc.GetXattr(ctx, &pb.MetaXattrReq{User: userToPB(u), Path: pathToPB(p), Name: name})
	if err != nil {
		return nil, errcode.FromGRPC(err)
	}
	return r.Value, nil
}

func (c *Client) SetXattr(ctx context.Context, u User, p PathAt, name string, value []byte, flags int) error {
	return emptyOut(c.rpc.SetXattr(ctx, &pb.MetaXattrReq{User: userToPB(u), Path: pathToPB(p), Name: name, Value: value, Flags: int32(flags)}))
}

func (c *Client) ListXattr(ctx context.Context, u User, p PathAt) ([]string, error) {
	r, err := c.rpc.ListXattr(ctx, &pb.MetaXattrReq{User: userToPB(u), Path: pathToPB(p)})
	if err != nil {
		return nil, errcode.FromGRPC(err)
	}
	return r.Names, nil
}

func (c *Client) RemoveXattr(ctx context.Context, u User, p PathAt, name string) error {
	return emptyOut(c.rpc.RemoveXattr(ctx, &pb.MetaXattrReq{User: userToPB(u), Path: pathToPB(p), Name: name}))
}

func (c *Client) RenewClient(ctx context.Context, client string) (time.Time, error) {
	r, err := c.rpc.RenewClient(ctx, &pb.MetaRenewClientReq{ClientId: client})
	if err != nil {
		return time.Time{}, errcode.FromGRPC(err)
	}
	return time.Unix(0, r.ExpiresUnixNs), nil
}
