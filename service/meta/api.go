package meta

import (
	"context"
	"time"
)

// FS is the metadata API, served in-process by *Server and remotely by
// *Client (gRPC), with the same semantics and the same errcode errors.
type FS interface {
	StatFS(ctx context.Context) (FSStat, error)
	Stat(ctx context.Context, u User, p PathAt) (Inode, error)
	BatchStat(ctx context.Context, ids []uint64) ([]*Inode, error)
	BatchStatPaths(ctx context.Context, u User, paths []PathAt) ([]Inode, []error, error)
	Lookup(ctx context.Context, u User, parent uint64, name string) (Inode, error)
	Create(ctx context.Context, u User, p PathAt, opts CreateOptions) (OpenResult, error)
	Open(ctx context.Context, u User, p PathAt, opts OpenOptions) (OpenResult, error)
	Close(ctx context.Context, u User, opts CloseOptions) (Inode, error)
	Fsync(ctx context.Context, u User, inode uint64) (Inode, error)
	Mkdir(ctx context.Context, u User, p PathAt, mode uint32, parents bool) (Inode, error)
	Symlink(ctx context.Context, u User, p PathAt, target string) (Inode, error)
	Readlink(ctx context.Context, u User, p PathAt) (string, error)
	// Mknod makes a FIFO, socket or device node (TypeFIFO ... TypeBlockDev);
	// rdev is the device number of a device node.
	Mknod(ctx context.Context, u User, p PathAt, typ FileType, mode, rdev uint32) (Inode, error)
	Link(ctx context.Context, u User, oldPath, newPath PathAt) (Inode, error)
	Unlink(ctx context.Context, u User, p PathAt) error
	Rmdir(ctx context.Context, u User, p PathAt) error
	RemoveAll(ctx context.Context, u User, p PathAt) error
	Rename(ctx context.Context, u User, src, dst PathAt, flags RenameFlags) error
	ReadDir(ctx context.Context, u User, p PathAt, opts ReadDirOptions) (DirPage, error)
	SetAttr(ctx context.Context, u User, p PathAt, a SetAttr) (Inode, error)
	Truncate(ctx context.Context, u User, p PathAt, size uint64) (Inode, error)
	SetDirLayout(ctx context.Context, u User, p PathAt, l Layout) (Inode, error)
	GetXattr(ctx context.Context, u User, p PathAt, name string) ([]byte, error)
	SetXattr(ctx context.Context, u User, p PathAt, name string, value []byte, flags int) error
	ListXattr(ctx context.Context, u User, p PathAt) ([]string, error)
	RemoveXattr(ctx context.Context, u User, p PathAt, name string) error
	RenewClient(ctx context.Context, client string) (time.Time, error)
	Lock(ctx context.Context, u User, r LockRequest) (LockResult, error)
	ReserveAppend(ctx context.Context, u User, inode, session, length uint64) (uint64, error)
}

var _ FS = (*Server)(nil)
