package meta

import (
	"context"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/kv"
)

// FSStat is the answer of StatFS.
type FSStat struct {
	Capacity        uint64 // bytes; 0 when storage is not attached
	Free            uint64
	InodesAllocated uint64 // inode ids handed out so far (an upper bound on inodes)
}

// StatFS reports capacity (from storage, when it can tell) and inode usage.
func (s *Server) StatFS(ctx context.Context) (FSStat, error) {
	var st FSStat
	if cr, ok := s.cfg.Chunks.(CapacityReporter); ok {
		total, free, err := cr.Capacity(ctx)
		if err != nil {
			return st, errcode.New(errcode.Unavailable, "statfs: storage capacity: %v", err)
		}
		st.Capacity, st.Free = total, free
	}
	err := s.view(ctx, Root, func(t *txn) error {
		v, ok, err := t.r.Get(keyIDNext)
		if err == nil && ok && len(v) == 8 {
			st.InodesAllocated = be64(v) - firstDynamicID + 1
		}
		return err
	})
	return st, err
}

// Stat returns the inode p names (lstat with p.NoFollow).
func (s *Server) Stat(ctx context.Context, u User, p PathAt) (Inode, error) {
	var out Inode
	err := s.view(ctx, u, func(t *txn) error {
		n, err := t.resolve(p)
		if err == nil {
			err = t.withDirTimes(n)
			out = *n
		}
		return err
	})
	return out, err
}

// BatchStat returns the inodes with the given ids from one snapshot; a
// missing id gives a nil entry.
func (s *Server) BatchStat(ctx context.Context, ids []uint64) ([]*Inode, error) {
	out := make([]*Inode, len(ids))
	err := s.view(ctx, Root, func(t *txn) error {
		for i, id := range ids {
			n, ok, err := t.inodeOK(id)
			if err != nil {
				return err
			}
			if ok {
				if err := t.withDirTimes(n); err != nil {
					return err
				}
				out[i] = n
			}
		}
		return nil
	})
	return out, err
}

// BatchStatPaths stats several paths in one snapshot; errs[i] is the
// failure (nil on success) for paths[i].
func (s *Server) BatchStatPaths(ctx context.Context, u User, paths []PathAt) ([]Inode, []error, error) {
	out := make([]Inode, len(paths))
	errs := make([]error, len(paths))
	err := s.view(ctx, u, func(t *txn) error {
		for i, p := range paths {
			n, err := t.resolve(p)
			if err != nil {
				var e *errcode.Error
				if !asErrcode(err, &e) || e.Code == errcode.Internal {
					return err
				}
				errs[i] = err
				continue
			}
			if err := t.withDirTimes(n); err != nil {
				return err
			}
			out[i] = *n
		}
		return nil
	})
	return out, errs, err
}

// Lookup returns the entry name of directory parent without following a
// final symlink (FUSE lookup).
func (s *Server) Lookup(ctx context.Context, u User, parent uint64, name string) (Inode, error) {
	if !isDots(name) {
		if err := checkName(name); err != nil {
			return Inode{}, err
		}
	}
	var out Inode
	err := s.view(ctx, u, func(t *txn) error {
		dir, err := t.inode(parent)
		if err != nil {
			return err
		}
		n, err := t.walk(dir, []string{name}, false, At(parent, name).String())
		if err == nil {
			err = t.withDirTimes(n)
			out = *n
		}
		return err
	})
	return out, err
}

// Readlink returns a symlink's target.
func (s *Server) Readlink(ctx context.Context, u User, p PathAt) (string, error) {
	p.NoFollow = true
	var out string
	err := s.view(ctx, u, func(t *txn) error {
		n, err := t.resolve(p)
		if err != nil {
			return err
		}
		if n.Type != TypeSymlink {
			return errInval("%s: not a symbolic link", p)
		}
		out = n.Target
		return nil
	})
	return out, err
}

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name  string
	ID    uint64
	Type  FileType
	Inode *Inode // with ReadDirOptions.WithStat
}

// ReadDirOptions pages a listing: Cursor is the last name of the previous
// page ("" for the first), Limit the page size (default 1024, at most 8192).
type ReadDirOptions struct {
	Cursor   string
	Limit    int
	WithStat bool
}

// DirPage is one page of a listing; More says whether entries follow.
type DirPage struct {
	Entries []DirEntry
	More    bool
}

// ReadDir lists directory p in name order, one page per snapshot. Because
// the cursor is a name, not a position, paging stays correct while the
// directory changes: every entry present throughout the listing appears
// exactly once, in order; entries added or removed meanwhile may or may not.
func (s *Server) ReadDir(ctx context.Context, u User, p PathAt, opts ReadDirOptions) (DirPage, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = 1024
	}
	limit = min(limit, 8192)
	var page DirPage
	err := s.view(ctx, u, func(t *txn) error {
		page = DirPage{}
		dir, err := t.resolve(p)
		if err != nil {
			return err
		}
		if dir.Type != TypeDir {
			return errNotDir(p.String())
		}
		if err := checkAccess(u, dir, permR, p.String()); err != nil {
			return err
		}
		begin, end := dirRange(dir.ID)
		if opts.Cursor != "" {
			begin = append(dentryKey(dir.ID, opts.Cursor), 0)
		}
		kvs, err := t.r.GetRange(begin, end, kv.RangeOptions{Limit: limit + 1})
		if err != nil {
			return err
		}
		if len(kvs) > limit {
			kvs, page.More = kvs[:limit], true
		}
		prefix := len(dirPrefix(dir.ID))
		for _, e := range kvs {
			d, err := decodeDentry(e.Value)
			if err != nil {
				return errcode.New(errcode.Internal, "%s: %v", p, err)
			}
			de := DirEntry{Name: string(e.Key[prefix:]), ID: d.ID, Type: d.Type}
			if opts.WithStat {
				n, ok, err := t.inodeOK(d.ID)
				if err != nil {
					return err
				}
				if ok {
					if err := t.withDirTimes(n); err != nil {
						return err
					}
					de.Inode = n
				}
			}
			page.Entries = append(page.Entries, de)
		}
		return nil
	})
	return page, err
}
