package fuse

import (
	"context"
	"time"

	"github.com/emberfs/emberfs/service/meta"
)

// DefaultMetaTimeout bounds one metadata call made for a FUSE request.
const DefaultMetaTimeout = 30 * time.Second

// boundedMeta gives every metadata call a deadline. FUSE requests run
// without the caller's cancellation (see opCtx), so without it a hung meta
// server (SIGSTOPped, a half-open connection) would hang the system call —
// and the process making it, unkillable in D state — forever. A call past
// the deadline fails with ETIMEDOUT (issue 13, hole 12). Every method is
// written out, so a new meta.FS method cannot slip through unbounded.
type boundedMeta struct {
	fs meta.FS
	d  time.Duration
}

var _ meta.FS = boundedMeta{}

func (b boundedMeta) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.d)
}

func (b boundedMeta) StatFS(ctx context.Context) (meta.FSStat, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.StatFS(ctx)
}

func (b boundedMeta) Stat(ctx context.Context, u meta.User, p meta.PathAt) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Stat(ctx, u, p)
}

func (b boundedMeta) BatchStat(ctx context.Context, ids []uint64) ([]*meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.BatchStat(ctx, ids)
}

func (b boundedMeta) BatchStatPaths(ctx context.Context, u meta.User, paths []meta.PathAt) ([]meta.Inode, []error, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.BatchStatPaths(ctx, u, paths)
}

func (b boundedMeta) Lookup(ctx context.Context, u meta.User, parent uint64, name string) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Lookup(ctx, u, parent, name)
}

func (b boundedMeta) Create(ctx context.Context, u meta.User, p meta.PathAt, opts meta.CreateOptions) (meta.OpenResult, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Create(ctx, u, p, opts)
}

func (b boundedMeta) Open(ctx context.Context, u meta.User, p meta.PathAt, opts meta.OpenOptions) (meta.OpenResult, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Open(ctx, u, p, opts)
}

func (b boundedMeta) Close(ctx context.Context, u meta.User, opts meta.CloseOptions) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Close(ctx, u, opts)
}

func (b boundedMeta) Fsync(ctx context.Context, u meta.User, inode uint64) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Fsync(ctx, u, inode)
}

func (b boundedMeta) Mkdir(ctx context.Context, u meta.User, p meta.PathAt, mode uint32, parents bool) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Mkdir(ctx, u, p, mode, parents)
}

func (b boundedMeta) Symlink(ctx context.Context, u meta.User, p meta.PathAt, target string) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Symlink(ctx, u, p, target)
}

func (b boundedMeta) Mknod(ctx context.Context, u meta.User, p meta.PathAt, typ meta.FileType, mode, rdev uint32) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Mknod(ctx, u, p, typ, mode, rdev)
}

func (b boundedMeta) Readlink(ctx context.Context, u meta.User, p meta.PathAt) (string, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Readlink(ctx, u, p)
}

func (b boundedMeta) Link(ctx context.Context, u meta.User, oldPath, newPath meta.PathAt) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Link(ctx, u, oldPath, newPath)
}

func (b boundedMeta) Unlink(ctx context.Context, u meta.User, p meta.PathAt) error {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Unlink(ctx, u, p)
}

func (b boundedMeta) Rmdir(ctx context.Context, u meta.User, p meta.PathAt) error {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Rmdir(ctx, u, p)
}

func (b boundedMeta) RemoveAll(ctx context.Context, u meta.User, p meta.PathAt) error {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.RemoveAll(ctx, u, p)
}

func (b boundedMeta) Rename(ctx context.Context, u meta.User, src, dst meta.PathAt, flags meta.RenameFlags) error {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Rename(ctx, u, src, dst, flags)
}

func (b boundedMeta) ReadDir(ctx context.Context, u meta.User, p meta.PathAt, opts meta.ReadDirOptions) (meta.DirPage, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.ReadDir(ctx, u, p, opts)
}

func (b boundedMeta) SetAttr(ctx context.Context, u meta.User, p meta.PathAt, a meta.SetAttr) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.SetAttr(ctx, u, p, a)
}

func (b boundedMeta) Truncate(ctx context.Context, u meta.User, p meta.PathAt, size uint64) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Truncate(ctx, u, p, size)
}

func (b boundedMeta) SetDirLayout(ctx context.Context, u meta.User, p meta.PathAt, l meta.Layout) (meta.Inode, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.SetDirLayout(ctx, u, p, l)
}

func (b boundedMeta) GetXattr(ctx context.Context, u meta.User, p meta.PathAt, name string) ([]byte, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.GetXattr(ctx, u, p, name)
}

func (b boundedMeta) SetXattr(ctx context.Context, u meta.User, p meta.PathAt, name string, value []byte, flags int) error {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.SetXattr(ctx, u, p, name, value, flags)
}

func (b boundedMeta) ListXattr(ctx context.Context, u meta.User, p meta.PathAt) ([]string, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.ListXattr(ctx, u, p)
}

func (b boundedMeta) RemoveXattr(ctx context.Context, u meta.User, p meta.PathAt, name string) error {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.RemoveXattr(ctx, u, p, name)
}

func (b boundedMeta) RenewClient(ctx context.Context, client string) (time.Time, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.RenewClient(ctx, client)
}

func (b boundedMeta) Lock(ctx context.Context, u meta.User, r meta.LockRequest) (meta.LockResult, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.Lock(ctx, u, r)
}

func (b boundedMeta) ReserveAppend(ctx context.Context, u meta.User, inode, session, length uint64) (uint64, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.fs.ReserveAppend(ctx, u, inode, session, length)
}

// openBounded opens a file through the backend with the metadata deadline
// (the open is a meta Create or Open call, plus routing lookups).
func (fsys *fileSystem) openBounded(ctx context.Context, u meta.User, p meta.PathAt, flags int, mode uint32) (File, error) {
	ctx, cancel := context.WithTimeout(ctx, fsys.opts.MetaTimeout)
	defer cancel()
	return fsys.b.Open(ctx, u, p, flags, mode)
}
