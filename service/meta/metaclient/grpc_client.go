// Package metaclient is the client side of the meta service: Client calls
// one meta server over gRPC, and FailoverClient spreads calls over several
// (any of which can serve any call), retrying elsewhere only when that is
// safe. Both implement meta.FS with the errors of the in-process server.
package metaclient

import (
	"context"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/proto/metapb"
)

// Client calls one meta server over gRPC; it implements meta.FS with the same
// errors as the in-process Server (errcode codes and errnos survive the wire).
type Client struct {
	conn *grpc.ClientConn
	rpc  metapb.MetaClient
}

var _ meta.FS = (*Client)(nil)

// Dial connects to a meta server at addr with the cluster token.
func Dial(addr, token string, opts ...grpc.DialOption) (*Client, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), rpcauth.DialOption(token)}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, errcode.New(errcode.InvalidArgument, "meta client for %q: %v", addr, err)
	}
	return &Client{conn: conn, rpc: metapb.NewMetaClient(conn)}, nil
}

// CloseConn closes the connection (Close is the file operation).
func (c *Client) CloseConn() error { return c.conn.Close() }

func inodeOut(r *metapb.InodeResp, err error) (meta.Inode, error) {
	if err != nil {
		return meta.Inode{}, errcode.FromGRPC(err)
	}
	return meta.InodeFromPB(r.Inode), nil
}

func emptyOut(_ *metapb.Empty, err error) error { return errcode.FromGRPC(err) }

func openOut(r *metapb.OpenResp, err error) (meta.OpenResult, error) {
	if err != nil {
		return meta.OpenResult{}, errcode.FromGRPC(err)
	}
	return meta.OpenResult{Inode: meta.InodeFromPB(r.Inode), Session: r.Session, Created: r.Created}, nil
}

func (c *Client) StatFS(ctx context.Context) (meta.FSStat, error) {
	r, err := c.rpc.StatFS(ctx, &metapb.StatFSReq{})
	if err != nil {
		return meta.FSStat{}, errcode.FromGRPC(err)
	}
	return meta.FSStat{Capacity: r.Capacity, Free: r.Free, InodesAllocated: r.InodesAllocated}, nil
}

func (c *Client) Stat(ctx context.Context, u meta.User, p meta.PathAt) (meta.Inode, error) {
	return inodeOut(c.rpc.Stat(ctx, &metapb.StatReq{User: meta.UserToPB(u), Path: meta.PathToPB(p)}))
}

func (c *Client) BatchStat(ctx context.Context, ids []uint64) ([]*meta.Inode, error) {
	r, err := c.rpc.BatchStat(ctx, &metapb.BatchStatReq{Ids: ids})
	if err != nil {
		return nil, errcode.FromGRPC(err)
	}
	out := make([]*meta.Inode, len(r.Inodes))
	for i, n := range r.Inodes {
		if i < len(r.Found) && r.Found[i] {
			v := meta.InodeFromPB(n)
			out[i] = &v
		}
	}
	return out, nil
}

func (c *Client) BatchStatPaths(ctx context.Context, u meta.User, paths []meta.PathAt) ([]meta.Inode, []error, error) {
	req := &metapb.BatchStatPathsReq{User: meta.UserToPB(u)}
	for _, p := range paths {
		req.Paths = append(req.Paths, meta.PathToPB(p))
	}
	r, err := c.rpc.BatchStatPaths(ctx, req)
	if err != nil {
		return nil, nil, errcode.FromGRPC(err)
	}
	out := make([]meta.Inode, len(r.Inodes))
	errs := make([]error, len(r.Inodes))
	for i, n := range r.Inodes {
		out[i] = meta.InodeFromPB(n)
		if r.Codes[i] != 0 {
			errs[i] = errcode.WithErrno(errcode.Code(r.Codes[i]), errnoOf(r.Errnos[i]), "%s", r.Messages[i])
		}
	}
	return out, errs, nil
}

func (c *Client) Lookup(ctx context.Context, u meta.User, parent uint64, name string) (meta.Inode, error) {
	return inodeOut(c.rpc.Lookup(ctx, &metapb.LookupReq{User: meta.UserToPB(u), Parent: parent, Name: name}))
}

func (c *Client) Create(ctx context.Context, u meta.User, p meta.PathAt, o meta.CreateOptions) (meta.OpenResult, error) {
	req := &metapb.CreateReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Mode: o.Mode, Exclusive: o.Exclusive,
		Truncate: o.Truncate, Read: o.Read, Write: o.Write, ClientId: o.ClientID}
	if o.Layout != nil {
		req.Layout = meta.LayoutToPB(*o.Layout)
	}
	return openOut(c.rpc.Create(ctx, req))
}

func (c *Client) Open(ctx context.Context, u meta.User, p meta.PathAt, o meta.OpenOptions) (meta.OpenResult, error) {
	return openOut(c.rpc.Open(ctx, &metapb.OpenReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Read: o.Read,
		Write: o.Write, Truncate: o.Truncate, ClientId: o.ClientID}))
}

func (c *Client) Close(ctx context.Context, u meta.User, o meta.CloseOptions) (meta.Inode, error) {
	return inodeOut(c.rpc.Close(ctx, &metapb.CloseReq{User: meta.UserToPB(u), Inode: o.Inode, Session: o.Session, UpdateLength: o.UpdateLength}))
}

func (c *Client) Fsync(ctx context.Context, u meta.User, inode uint64) (meta.Inode, error) {
	return inodeOut(c.rpc.Fsync(ctx, &metapb.FsyncReq{User: meta.UserToPB(u), Inode: inode}))
}

func (c *Client) Mkdir(ctx context.Context, u meta.User, p meta.PathAt, mode uint32, parents bool) (meta.Inode, error) {
	return inodeOut(c.rpc.Mkdir(ctx, &metapb.MkdirReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Mode: mode, Parents: parents}))
}

func (c *Client) Symlink(ctx context.Context, u meta.User, p meta.PathAt, target string) (meta.Inode, error) {
	return inodeOut(c.rpc.Symlink(ctx, &metapb.SymlinkReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Target: target}))
}

func (c *Client) Mknod(ctx context.Context, u meta.User, p meta.PathAt, typ meta.FileType, mode, rdev uint32) (meta.Inode, error) {
	return inodeOut(c.rpc.Mknod(ctx, &metapb.MknodReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Type: uint32(typ), Mode: mode, Rdev: rdev}))
}

func (c *Client) Readlink(ctx context.Context, u meta.User, p meta.PathAt) (string, error) {
	r, err := c.rpc.Readlink(ctx, &metapb.PathReq{User: meta.UserToPB(u), Path: meta.PathToPB(p)})
	if err != nil {
		return "", errcode.FromGRPC(err)
	}
	return r.Target, nil
}

func (c *Client) Link(ctx context.Context, u meta.User, oldPath, newPath meta.PathAt) (meta.Inode, error) {
	return inodeOut(c.rpc.Link(ctx, &metapb.LinkReq{User: meta.UserToPB(u), OldPath: meta.PathToPB(oldPath), NewPath: meta.PathToPB(newPath)}))
}

func (c *Client) Unlink(ctx context.Context, u meta.User, p meta.PathAt) error {
	return emptyOut(c.rpc.Unlink(ctx, &metapb.PathReq{User: meta.UserToPB(u), Path: meta.PathToPB(p)}))
}

func (c *Client) Rmdir(ctx context.Context, u meta.User, p meta.PathAt) error {
	return emptyOut(c.rpc.Rmdir(ctx, &metapb.PathReq{User: meta.UserToPB(u), Path: meta.PathToPB(p)}))
}

func (c *Client) RemoveAll(ctx context.Context, u meta.User, p meta.PathAt) error {
	return emptyOut(c.rpc.RemoveAll(ctx, &metapb.PathReq{User: meta.UserToPB(u), Path: meta.PathToPB(p)}))
}

func (c *Client) Rename(ctx context.Context, u meta.User, src, dst meta.PathAt, flags meta.RenameFlags) error {
	return emptyOut(c.rpc.Rename(ctx, &metapb.RenameReq{User: meta.UserToPB(u), Src: meta.PathToPB(src), Dst: meta.PathToPB(dst), Flags: uint32(flags)}))
}

func (c *Client) ReadDir(ctx context.Context, u meta.User, p meta.PathAt, o meta.ReadDirOptions) (meta.DirPage, error) {
	r, err := c.rpc.ReadDir(ctx, &metapb.ReadDirReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Cursor: o.Cursor,
		Limit: int32(min(o.Limit, 1<<20)), WithStat: o.WithStat})
	if err != nil {
		return meta.DirPage{}, errcode.FromGRPC(err)
	}
	page := meta.DirPage{More: r.More, Entries: make([]meta.DirEntry, len(r.Entries))}
	for i, e := range r.Entries {
		page.Entries[i] = meta.DirEntry{Name: e.Name, ID: e.Id, Type: meta.FileType(e.Type)}
		if e.Inode != nil {
			n := meta.InodeFromPB(e.Inode)
			page.Entries[i].Inode = &n
		}
	}
	return page, nil
}

func (c *Client) SetAttr(ctx context.Context, u meta.User, p meta.PathAt, a meta.SetAttr) (meta.Inode, error) {
	return inodeOut(c.rpc.SetAttr(ctx, &metapb.SetAttrReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Mode: a.Mode,
		Uid: a.UID, Gid: a.GID, AtimeNs: timeNs(a.Atime), MtimeNs: timeNs(a.Mtime), AtimeNow: a.AtimeNow,
		MtimeNow: a.MtimeNow, Size: a.Size, Atime: optTimeToPB(a.Atime), Mtime: optTimeToPB(a.Mtime)}))
}

func (c *Client) Truncate(ctx context.Context, u meta.User, p meta.PathAt, size uint64) (meta.Inode, error) {
	return c.SetAttr(ctx, u, p, meta.SetAttr{Size: &size})
}

func (c *Client) SetDirLayout(ctx context.Context, u meta.User, p meta.PathAt, l meta.Layout) (meta.Inode, error) {
	return inodeOut(c.rpc.SetDirLayout(ctx, &metapb.SetDirLayoutReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Layout: meta.LayoutToPB(l)}))
}

func (c *Client) GetXattr(ctx context.Context, u meta.User, p meta.PathAt, name string) ([]byte, error) {
	r, err := c.rpc.GetXattr(ctx, &metapb.XattrReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Name: name})
	if err != nil {
		return nil, errcode.FromGRPC(err)
	}
	return r.Value, nil
}

func (c *Client) SetXattr(ctx context.Context, u meta.User, p meta.PathAt, name string, value []byte, flags int) error {
	return emptyOut(c.rpc.SetXattr(ctx, &metapb.XattrReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Name: name, Value: value, Flags: int32(flags)}))
}

func (c *Client) ListXattr(ctx context.Context, u meta.User, p meta.PathAt) ([]string, error) {
	r, err := c.rpc.ListXattr(ctx, &metapb.XattrReq{User: meta.UserToPB(u), Path: meta.PathToPB(p)})
	if err != nil {
		return nil, errcode.FromGRPC(err)
	}
	return r.Names, nil
}

func (c *Client) RemoveXattr(ctx context.Context, u meta.User, p meta.PathAt, name string) error {
	return emptyOut(c.rpc.RemoveXattr(ctx, &metapb.XattrReq{User: meta.UserToPB(u), Path: meta.PathToPB(p), Name: name}))
}

func (c *Client) RenewClient(ctx context.Context, client string) (time.Time, error) {
	r, err := c.rpc.RenewClient(ctx, &metapb.RenewClientReq{ClientId: client})
	if err != nil {
		return time.Time{}, errcode.FromGRPC(err)
	}
	return time.Unix(0, r.ExpiresUnixNs), nil
}

func errnoOf(v uint32) syscall.Errno { return syscall.Errno(v) }

// optTimeToPB is an optional time as seconds + nanoseconds (what servers
// read); timeNs sends the deprecated nanoseconds too, for older servers.
func optTimeToPB(t *time.Time) *metapb.Timespec {
	if t == nil {
		return nil
	}
	return meta.TimeToPB(*t)
}

func timeNs(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	v := t.UnixNano()
	return &v
}

func (c *Client) Lock(ctx context.Context, u meta.User, r meta.LockRequest) (meta.LockResult, error) {
	resp, err := c.rpc.Lock(ctx, &metapb.LockReq{User: meta.UserToPB(u), Inode: r.Inode, Lock: meta.LockToPB(r.Lock), Test: r.Test})
	if err != nil {
		return meta.LockResult{}, errcode.FromGRPC(err)
	}
	var out meta.LockResult
	if resp.Conflict != nil {
		l := meta.LockFromPB(resp.Conflict)
		out.Conflict = &l
	}
	return out, nil
}

func (c *Client) ReserveAppend(ctx context.Context, u meta.User, inode, session, length uint64) (uint64, error) {
	resp, err := c.rpc.ReserveAppend(ctx, &metapb.ReserveAppendReq{User: meta.UserToPB(u), Inode: inode, Session: session, Length: length})
	if err != nil {
		return 0, errcode.FromGRPC(err)
	}
	return resp.Offset, nil
}
