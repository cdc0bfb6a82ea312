package chaos

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// fsys is how a worker reaches the file system: the native Go client or a
// FUSE mount (plain os calls on the mount point). Paths are cluster paths
// ("/w0/n1").
type fsys interface {
	kind() string
	// syncBeforeClose: the write contract of this way in. A FUSE
	// mount's close(2) returns before the kernel's RELEASE has put the
	// length in meta, so a write is acknowledged to readers elsewhere
	// only by fsync (docs/fuse.md, close-to-open); the native client's
	// Close does it.
	syncBeforeClose() bool
	// create makes p (O_CREAT|O_EXCL, read-write); open opens it
	// read-write or read-only. Each returns the inode id and the length
	// the open saw.
	create(ctx context.Context, p string) (handle, uint64, error)
	open(ctx context.Context, p string, write bool) (handle, uint64, int64, error)
	truncate(ctx context.Context, p string, size int64) error
	rename(ctx context.Context, src, dst string) error
	remove(ctx context.Context, p string) error
	stat(ctx context.Context, p string) (uint64, error)
	readDir(ctx context.Context, p string) ([]string, error)
}

type handle interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
}

func isNotFound(err error) bool {
	return errcode.Is(err, errcode.NotFound) || errors.Is(err, fs.ErrNotExist)
}

func isExist(err error) bool {
	return errcode.Is(err, errcode.AlreadyExists) || errors.Is(err, fs.ErrExist)
}

// native is the Go client.
type native struct{ cl *client.Client }

func (n native) kind() string          { return "native" }
func (n native) syncBeforeClose() bool { return false }

func (n native) create(ctx context.Context, p string) (handle, uint64, error) {
	f, err := n.cl.Open(ctx, meta.Root, at(p), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return nil, 0, err
	}
	return f, f.Inode().ID, nil
}

func (n native) open(ctx context.Context, p string, write bool) (handle, uint64, int64, error) {
	flags := os.O_RDONLY
	if write {
		flags = os.O_RDWR
	}
	f, err := n.cl.Open(ctx, meta.Root, at(p), flags, 0)
	if err != nil {
		return nil, 0, 0, err
	}
	return f, f.Inode().ID, f.Size(), nil
}

func (n native) truncate(ctx context.Context, p string, size int64) error {
	return n.cl.Truncate(ctx, meta.Root, at(p), size)
}

func (n native) rename(ctx context.Context, src, dst string) error {
	return n.cl.Rename(ctx, meta.Root, at(src), at(dst), 0)
}

func (n native) remove(ctx context.Context, p string) error {
	return n.cl.Remove(ctx, meta.Root, at(p))
}

func (n native) stat(ctx context.Context, p string) (uint64, error) {
	i, err := n.cl.Stat(ctx, meta.Root, at(p))
	return i.ID, err
}

func (n native) readDir(ctx context.Context, p string) ([]string, error) {
	ents, err := n.cl.ReadDir(ctx, meta.Root, at(p), false)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	return names, err
}

// mount is a FUSE mount of the cluster (an `emberfs mount` process),
// mounted with attribute and entry caching off so that an open sees the
// cluster's current name and length (close-to-open), as the native client
// does. The context is not passed on: the mount bounds its own calls.
type mount struct{ dir string }

func (m mount) kind() string          { return "fuse" }
func (m mount) syncBeforeClose() bool { return true }
func (m mount) path(p string) string  { return filepath.Join(m.dir, p) }
func inodeOf(fi os.FileInfo) uint64   { return fi.Sys().(*syscall.Stat_t).Ino }
func (m mount) stat(_ context.Context, p string) (uint64, error) {
	fi, err := os.Lstat(m.path(p))
	if err != nil {
		return 0, err
	}
	return inodeOf(fi), nil
}

func (m mount) create(_ context.Context, p string) (handle, uint64, error) {
	f, err := os.OpenFile(m.path(p), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, inodeOf(fi), nil
}

func (m mount) open(_ context.Context, p string, write bool) (handle, uint64, int64, error) {
	flags := os.O_RDONLY
	if write {
		flags = os.O_RDWR
	}
	f, err := os.OpenFile(m.path(p), flags, 0)
	if err != nil {
		return nil, 0, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, 0, err
	}
	return f, inodeOf(fi), fi.Size(), nil
}

func (m mount) truncate(_ context.Context, p string, size int64) error {
	return os.Truncate(m.path(p), size)
}

func (m mount) rename(_ context.Context, src, dst string) error {
	return os.Rename(m.path(src), m.path(dst))
}

func (m mount) remove(_ context.Context, p string) error { return os.Remove(m.path(p)) }

func (m mount) readDir(_ context.Context, p string) ([]string, error) {
	ents, err := os.ReadDir(m.path(p))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, err
}
