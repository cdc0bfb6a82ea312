package client

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// Path-based helpers over Meta(). Every call takes the user it acts as
// (meta.Root bypasses permission checks); errors are errcode errors, so
// errcode.ErrnoOf gives the POSIX errno.

// Stat returns the inode p names (following a final symlink unless
// p.NoFollow).
func (c *Client) Stat(ctx context.Context, u meta.User, p meta.PathAt) (meta.Inode, error) {
	n, err := c.mfs.Stat(ctx, u, p)
	if err != nil {
		return n, err
	}
	c.mu.Lock()
	st := c.inodes[n.ID]
	c.mu.Unlock()
	if st != nil && n.Type == meta.TypeFile {
		// Only this client's unfinalized writes add to meta's length; an
		// open reader's view must not hide another client's shrink.
		if size, ok := st.unfinalizedSize(); ok {
			n.Size = uint64(max(int64(n.Size), size))
		}
	}
	return n, nil
}

// ReadDir lists a whole directory (every page), with attributes when
// withStat.
func (c *Client) ReadDir(ctx context.Context, u meta.User, p meta.PathAt, withStat bool) ([]meta.DirEntry, error) {
	var out []meta.DirEntry
	opts := meta.ReadDirOptions{WithStat: withStat}
	for {
		page, err := c.mfs.ReadDir(ctx, u, p, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Entries...)
		if !page.More || len(page.Entries) == 0 {
			return out, nil
		}
		opts.Cursor = page.Entries[len(page.Entries)-1].Name
	}
}

// Mkdir makes a directory (and missing parents when parents).
func (c *Client) Mkdir(ctx context.Context, u meta.User, p meta.PathAt, mode uint32, parents bool) (meta.Inode, error) {
	return c.mfs.Mkdir(ctx, u, p, mode, parents)
}

// Symlink makes a symbolic link at p pointing to target.
func (c *Client) Symlink(ctx context.Context, u meta.User, p meta.PathAt, target string) (meta.Inode, error) {
	return c.mfs.Symlink(ctx, u, p, target)
}

// Mknod makes a FIFO, socket or device node at p (stored as metadata; its
// I/O is the kernel's business on the machine that opens it).
func (c *Client) Mknod(ctx context.Context, u meta.User, p meta.PathAt, typ meta.FileType, mode, rdev uint32) (meta.Inode, error) {
	return c.mfs.Mknod(ctx, u, p, typ, mode, rdev)
}

// Readlink returns a symlink's target.
func (c *Client) Readlink(ctx context.Context, u meta.User, p meta.PathAt) (string, error) {
	p.NoFollow = true
	return c.mfs.Readlink(ctx, u, p)
}

// Link makes newPath another name of the file oldPath names.
func (c *Client) Link(ctx context.Context, u meta.User, oldPath, newPath meta.PathAt) (meta.Inode, error) {
	return c.mfs.Link(ctx, u, oldPath, newPath)
}

// Rename moves src to dst (flags: meta.RenameNoReplace, meta.RenameExchange).
func (c *Client) Rename(ctx context.Context, u meta.User, src, dst meta.PathAt, flags meta.RenameFlags) error {
	return c.mfs.Rename(ctx, u, src, dst, flags)
}

// Remove removes a file, symlink or empty directory, like os.Remove.
func (c *Client) Remove(ctx context.Context, u meta.User, p meta.PathAt) error {
	p.NoFollow = true
	n, err := c.mfs.Stat(ctx, u, p)
	if err != nil {
		return err
	}
	if n.Type == meta.TypeDir {
		return c.mfs.Rmdir(ctx, u, p)
	}
	return c.mfs.Unlink(ctx, u, p)
}

// RemoveAll removes p and everything below it (no error if p is missing).
func (c *Client) RemoveAll(ctx context.Context, u meta.User, p meta.PathAt) error {
	err := c.mfs.RemoveAll(ctx, u, p)
	if errcode.Is(err, errcode.NotFound) {
		return nil
	}
	return err
}

// Truncate sets the length of the file p names.
func (c *Client) Truncate(ctx context.Context, u meta.User, p meta.PathAt, size int64) error {
	if size < 0 {
		return errcode.New(errcode.InvalidArgument, "truncate %s: negative size %d", p, size)
	}
	n, err := c.mfs.Truncate(ctx, u, p, uint64(size))
	if err != nil {
		return err
	}
	c.invalidate(n.ID, size)
	return nil
}

// SetAttr changes mode, owner, times or size of p.
func (c *Client) SetAttr(ctx context.Context, u meta.User, p meta.PathAt, a meta.SetAttr) (meta.Inode, error) {
	n, err := c.mfs.SetAttr(ctx, u, p, a)
	if err == nil && a.Size != nil {
		c.invalidate(n.ID, int64(*a.Size))
	}
	return n, err
}

// WriteFile creates or truncates the file p names and writes data, like
// os.WriteFile.
func (c *Client) WriteFile(ctx context.Context, u meta.User, p meta.PathAt, data []byte, mode uint32) error {
	f, err := c.Open(ctx, u, p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadFile reads the whole file p names, like os.ReadFile.
func (c *Client) ReadFile(ctx context.Context, u meta.User, p meta.PathAt) ([]byte, error) {
	f, err := c.Open(ctx, u, p, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, f.Size())
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}
