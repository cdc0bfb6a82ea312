// Package vfs is the chunk engine's file-system seam: exactly the
// operations the engine performs on its target directory, behind an
// interface, so tests can put a fault-injecting file system (package
// faultfs) where the operating system's normally is. Default is the real
// one. The shape follows Pebble's vfs package; the code is our own.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// File is an open file or directory.
type File interface {
	io.ReaderAt
	// WriteAt follows io.WriterAt: fewer than len(p) bytes written comes
	// with a non-nil error. Callers still check n (WriteFull), because a
	// short write that goes unnoticed would store a torn version as whole.
	io.WriterAt
	// Sync makes the file durable: fdatasync for a regular file (its data
	// and the size needed to read it back), fsync for a directory opened
	// with OpenDir (its entries).
	Sync() error
	Truncate(size int64) error
	Close() error
	// Fd is the descriptor, for system calls that need one (sendfile
	// works on the *os.File that OSFile finds).
	Fd() uintptr
}

// FS is a file system. Names are operating-system paths.
type FS interface {
	// OpenFile opens a regular file with os.OpenFile's flags.
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// OpenDir opens a directory, to Sync its entries.
	OpenDir(name string) (File, error)
	Mkdir(name string, perm os.FileMode) error
	MkdirAll(name string, perm os.FileMode) error
	Rename(oldname, newname string) error
	Remove(name string) error
	RemoveAll(name string) error
	ReadDir(name string) ([]os.DirEntry, error)
	Stat(name string) (os.FileInfo, error)
	// Lock takes an exclusive, non-blocking lock on name (creating it),
	// held until the returned Closer is closed. A lock held elsewhere
	// fails with an error for which errors.Is(err, ErrLocked) is true.
	Lock(name string) (io.Closer, error)
	// DiskUsage describes the file system holding path.
	DiskUsage(path string) (DiskUsage, error)
}

// DiskUsage is the space of a file system, in bytes.
type DiskUsage struct {
	Capacity uint64 // size of the file system
	Free     uint64 // available to unprivileged users
	Used     uint64 // in use by anything
}

// ErrLocked is what Lock's error wraps when someone else holds the lock.
var ErrLocked = errors.New("locked by another process")

// Default is the operating system's file system.
var Default FS = osFS{}

type osFS struct{}

// osFile is an *os.File whose Sync is fdatasync (os.File.Sync is fsync).
type osFile struct{ *os.File }

func (f osFile) Sync() error { return syscall.Fdatasync(int(f.File.Fd())) }

// osDir is a directory: Sync is fsync, which is what makes entries durable.
type osDir struct{ *os.File }

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if flag == os.O_RDONLY {
		return openRead(name)
	}
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// openRead opens a regular file for reading. It is os.Open without the
// poller set-up: os.Open makes every file non-blocking and tries to add it
// to the network poller (two fcntl pairs and an epoll_ctl that fails for a
// regular file), five system calls on top of the open itself. The engine
// reads data files with pread and sendfile, which the poller cannot help
// with; os.NewFile on a blocking descriptor skips all of it but one fcntl.
// A small KV get opens one data file, so this is a quarter of its system
// calls on the storage side (docs/kvcache.md, "Speed work").
func openRead(name string) (File, error) {
	for {
		fd, err := syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
		return osFile{os.NewFile(uintptr(fd), name)}, nil
	}
}

func (osFS) OpenDir(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return osDir{f}, nil
}

func (osFS) Mkdir(name string, perm os.FileMode) error    { return os.Mkdir(name, perm) }
func (osFS) MkdirAll(name string, perm os.FileMode) error { return os.MkdirAll(name, perm) }
func (osFS) Rename(oldname, newname string) error         { return os.Rename(oldname, newname) }
func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) RemoveAll(name string) error                  { return os.RemoveAll(name) }
func (osFS) ReadDir(name string) ([]os.DirEntry, error)   { return os.ReadDir(name) }
func (osFS) Stat(name string) (os.FileInfo, error)        { return os.Stat(name) }
func (osFS) DiskUsage(path string) (DiskUsage, error)     { return diskUsage(path) }
func (osFS) Lock(name string) (io.Closer, error)          { return lockFile(name) }
func diskUsage(path string) (DiskUsage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return DiskUsage{}, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	bs := uint64(st.Bsize)
	return DiskUsage{Capacity: st.Blocks * bs, Free: st.Bavail * bs, Used: (st.Blocks - st.Bfree) * bs}, nil
}

func lockFile(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			err = fmt.Errorf("%w: %w", ErrLocked, err)
		}
		return nil, &os.PathError{Op: "flock", Path: name, Err: err}
	}
	return f, nil // closing the file releases the flock
}

// OSFile returns the *os.File behind f, for zero-copy sendfile, or nil
// when f has none. Wrappers (faultfs) expose what they wrap by an
// Unwrap() File method.
func OSFile(f File) *os.File {
	for {
		switch g := f.(type) {
		case osFile:
			return g.File
		case osDir:
			return g.File
		case interface{ Unwrap() File }:
			f = g.Unwrap()
		default:
			return nil
		}
	}
}

// ErrShortWrite is what WriteFull's error wraps when a file took fewer
// bytes than it was given and reported no error.
var ErrShortWrite = io.ErrShortWrite

// WriteFull writes all of p at off, turning a short write without an
// error into one.
func WriteFull(f File, p []byte, off int64) error {
	n, err := f.WriteAt(p, off)
	if err == nil && n < len(p) {
		err = fmt.Errorf("wrote %d of %d bytes at offset %d: %w", n, len(p), off, ErrShortWrite)
	}
	return err
}

// ReadFile returns the whole content of name.
func ReadFile(fs FS, name string) ([]byte, error) {
	f, err := fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 0, 64<<10)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.ReadAt(buf[len(buf):cap(buf)], int64(len(buf)))
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// WriteFileSync writes data as the whole content of a new or truncated
// file name and makes it durable (not its directory entry: see SyncDir).
func WriteFileSync(fs FS, name string, data []byte, perm os.FileMode, sync bool) error {
	f, err := fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	err = WriteFull(f, data, 0)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncDir makes the entries of directory name durable.
func SyncDir(fs FS, name string) error {
	d, err := fs.OpenDir(name)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Truncate sets the size of file name.
func Truncate(fs FS, name string, size int64) error {
	f, err := fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
