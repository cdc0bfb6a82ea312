// Package pybind is the flat Go API that gopy exports to Python as
// emberfs._native. Everything here uses types gopy maps well (ints, strings,
// string slices, pointers to simple structs, error). Bulk data crosses as a
// buffer address and length: Go reads into and writes from the caller's
// memory (bytearray, numpy array, torch tensor) with no copy, and gopy
// releases the GIL for every call, so Python threads run in parallel.
//
// Errors are returned as "[errno N] message" so the Python wrapper can raise
// the matching OSError subclass (gopy turns a Go error into RuntimeError).
package pybind

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/buildinfo"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
)

// Version is the EmberFS version the extension was built from.
func Version() string { return buildinfo.Version }

// wrap formats err for the Python side; nil stays nil.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("[errno %d] %v", int(errcode.ErrnoOf(err)), err)
}

// Client is a connection to one EmberFS cluster.
type Client struct {
	c    *client.Client
	mu   sync.RWMutex
	user meta.User
}

// Connect dials the cluster whose mgmtd listens at mgmtdAddrs (comma
// separated) using the cluster token.
func Connect(mgmtdAddrs string, token string) (*Client, error) {
	addrs := mgmtdclient.ParseAddrs(mgmtdAddrs)
	if len(addrs) == 0 {
		return nil, wrap(errcode.New(errcode.InvalidArgument, "no mgmtd address given"))
	}
	c, err := client.New(context.Background(), client.Config{MgmtdAddrs: addrs, Token: token})
	if err != nil {
		return nil, wrap(err)
	}
	return &Client{c: c, user: meta.User{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}}, nil
}

// SetUser sets the uid and gid used for permission checks.
func (c *Client) SetUser(uid, gid int) {
	c.mu.Lock()
	c.user = meta.User{UID: uint32(uid), GID: uint32(gid)}
	c.mu.Unlock()
}

func (c *Client) who() meta.User {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.user
}

// Close releases the connection.
func (c *Client) Close() error { return wrap(c.c.Close()) }

// Stat describes an inode. Mode carries the file type bits (S_IFREG, ...)
// like os.stat's st_mode.
type Stat struct {
	Ino     uint64
	Mode    int
	Nlink   int
	Uid     int
	Gid     int
	Size    int64
	AtimeNs int64
	MtimeNs int64
	CtimeNs int64
}

const (
	sIFREG = 0o100000
	sIFDIR = 0o040000
	sIFLNK = 0o120000
)

func statOf(n meta.Inode) *Stat {
	mode := int(n.Mode & meta.ModePerm)
	switch n.Type {
	case meta.TypeDir:
		mode |= sIFDIR
	case meta.TypeSymlink:
		mode |= sIFLNK
	default:
		mode |= sIFREG
	}
	return &Stat{
		Ino: n.ID, Mode: mode, Nlink: int(n.Nlink), Uid: int(n.UID), Gid: int(n.GID),
		Size: int64(n.Size), AtimeNs: n.Atime.UnixNano(), MtimeNs: n.Mtime.UnixNano(), CtimeNs: n.Ctime.UnixNano(),
	}
}

// Stat follows symbolic links; Lstat does not.
func (c *Client) Stat(path string) (*Stat, error) { return c.stat(path, false) }

// Lstat is Stat without following a final symbolic link.
func (c *Client) Lstat(path string) (*Stat, error) { return c.stat(path, true) }

func (c *Client) stat(path string, noFollow bool) (*Stat, error) {
	n, err := c.c.Stat(context.Background(), c.who(), meta.PathAt{Path: path, NoFollow: noFollow})
	if err != nil {
		return nil, wrap(err)
	}
	return statOf(n), nil
}

// ListDir returns the names in directory path, in name order.
func (c *Client) ListDir(path string) ([]string, error) {
	entries, err := c.c.ReadDir(context.Background(), c.who(), meta.P(path), false)
	if err != nil {
		return nil, wrap(err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name
	}
	return names, nil
}

// Mkdir creates a directory; with parents it creates missing parents and
// succeeds if the directory exists (mkdir -p).
func (c *Client) Mkdir(path string, mode int, parents bool) error {
	_, err := c.c.Meta().Mkdir(context.Background(), c.who(), meta.P(path), uint32(mode), parents)
	return wrap(err)
}

// Unlink removes a file or symbolic link.
func (c *Client) Unlink(path string) error {
	return wrap(c.c.Meta().Unlink(context.Background(), c.who(), meta.P(path)))
}

// Rmdir removes an empty directory.
func (c *Client) Rmdir(path string) error {
	return wrap(c.c.Meta().Rmdir(context.Background(), c.who(), meta.P(path)))
}

// RemoveAll removes path and everything below it in one call.
func (c *Client) RemoveAll(path string) error {
	return wrap(c.c.Meta().RemoveAll(context.Background(), c.who(), meta.P(path)))
}

// Rename moves src to dst atomically, replacing dst if POSIX allows it.
func (c *Client) Rename(src, dst string) error {
	return wrap(c.c.Meta().Rename(context.Background(), c.who(), meta.P(src), meta.P(dst), 0))
}

// Symlink creates path pointing at target.
func (c *Client) Symlink(target, path string) error {
	_, err := c.c.Meta().Symlink(context.Background(), c.who(), meta.P(path), target)
	return wrap(err)
}

// Readlink returns a symbolic link's target.
func (c *Client) Readlink(path string) (string, error) {
	t, err := c.c.Meta().Readlink(context.Background(), c.who(), meta.PathAt{Path: path, NoFollow: true})
	return t, wrap(err)
}

// Link creates a hard link newPath to oldPath.
func (c *Client) Link(oldPath, newPath string) error {
	_, err := c.c.Meta().Link(context.Background(), c.who(), meta.P(oldPath), meta.P(newPath))
	return wrap(err)
}

// Truncate sets the length of the file at path.
func (c *Client) Truncate(path string, size int64) error {
	if size < 0 {
		return wrap(errcode.New(errcode.InvalidArgument, "negative size %d", size))
	}
	// Through the client, not straight to meta: the client drops its
	// cached bytes and size of the file (issue 13, hole 11).
	return wrap(c.c.Truncate(context.Background(), c.who(), meta.P(path), size))
}

// Chmod sets the permission bits of path.
func (c *Client) Chmod(path string, mode int) error {
	m := uint32(mode)
	_, err := c.c.Meta().SetAttr(context.Background(), c.who(), meta.P(path), meta.SetAttr{Mode: &m})
	return wrap(err)
}

// File is an open file.
type File struct {
	f *client.File
}

// Open opens path with os.O_* flags (O_CREAT, O_EXCL, O_TRUNC, O_APPEND,
// O_RDONLY/O_WRONLY/O_RDWR) and, when creating, permission bits mode.
func (c *Client) Open(path string, flags int, mode int) (*File, error) {
	f, err := c.c.Open(context.Background(), c.who(), meta.P(path), flags, uint32(mode))
	if err != nil {
		return nil, wrap(err)
	}
	return &File{f: f}, nil
}

// buffer turns a caller's memory (address and length) into a Go slice
// without copying; the caller keeps the memory alive during the call.
func buffer(addr uintptr, n int) ([]byte, error) {
	if n < 0 {
		return nil, errcode.New(errcode.InvalidArgument, "negative length %d", n)
	}
	if n == 0 {
		return nil, nil
	}
	if addr == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "null buffer address")
	}
	// The memory belongs to Python, not the Go heap, so turning the integer
	// back into a pointer is safe; reading it through &addr keeps vet's
	// uintptr->Pointer rule satisfied.
	p := *(*unsafe.Pointer)(unsafe.Pointer(&addr))
	return unsafe.Slice((*byte)(p), n), nil
}

// ReadInto reads up to n bytes at offset off into the memory at addr and
// returns how many were read (0 at end of file).
func (f *File) ReadInto(addr uintptr, n int, off int64) (int, error) {
	buf, err := buffer(addr, n)
	if err != nil {
		return 0, wrap(err)
	}
	got, err := f.f.ReadAt(buf, off)
	if err != nil && (got > 0 || errors.Is(err, io.EOF)) {
		return got, nil // short read at end of file
	}
	return got, wrap(err)
}

// WriteFrom writes n bytes from the memory at addr at offset off.
func (f *File) WriteFrom(addr uintptr, n int, off int64) (int, error) {
	buf, err := buffer(addr, n)
	if err != nil {
		return 0, wrap(err)
	}
	got, err := f.f.WriteAt(buf, off)
	return got, wrap(err)
}

// Size is the file's length as this client sees it.
func (f *File) Size() int64 { return f.f.Size() }

// Truncate sets the file's length.
func (f *File) Truncate(size int64) error { return wrap(f.f.Truncate(size)) }

// Flush pushes buffered writes to storage.
func (f *File) Flush() error { return wrap(f.f.Flush()) }

// Sync flushes and makes the length durable in metadata.
func (f *File) Sync() error { return wrap(f.f.Sync()) }

// Close flushes and closes the file.
func (f *File) Close() error { return wrap(f.f.Close()) }

// Ino is the file's inode number.
func (f *File) Ino() uint64 { return f.f.Inode().ID }
