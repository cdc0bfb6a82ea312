// Package fuse mounts an EmberFS file system in the kernel through FUSE
// (github.com/hanwen/go-fuse/v2, fs package). Namespace operations go to the
// metadata service (meta.FS), file data through the native client's files;
// both come from a Backend. See docs/fuse.md.
package fuse

import (
	"context"

	"github.com/emberfs/emberfs/service/meta"
)

// Backend is what the mount needs from the native client: the namespace and
// open files. *client.Client satisfies it through ClientBackend.
type Backend interface {
	Meta() meta.FS
	// ClientID is the client's meta id: file locks taken through the
	// mount belong to it and live as long as its lease.
	ClientID() string
	// Open opens (flags are os.O_*; with O_CREAT it creates with mode) the
	// file p names as user u. PathAt{Parent: id} opens inode id itself.
	Open(ctx context.Context, u meta.User, p meta.PathAt, flags int, mode uint32) (File, error)
}

// File is one open file of the native client.
type File interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Truncate(size int64) error
	// Flush pushes buffered writes to storage (close(2) reports its error).
	Flush() error
	// Sync flushes and makes the length durable in the metadata service.
	Sync() error
	// Close flushes, finalizes the length and ends the write session.
	Close() error
	Inode() meta.Inode
	// Size is the file length as this handle sees it, buffered writes included.
	Size() int64
}
