package meta

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/kv"
)

// SetAttr changes the attributes whose fields are set (nil: unchanged).
// AtimeNow / MtimeNow set the time to the server's clock (utimensat
// UTIME_NOW), which the owner and anyone with write permission may do;
// explicit times need ownership.
type SetAttr struct {
	Mode     *uint32
	UID      *uint32
	GID      *uint32
	Atime    *time.Time
	Mtime    *time.Time
	AtimeNow bool
	MtimeNow bool
	Size     *uint64
}

// SetAttr applies a and returns the new attributes.
func (s *Server) SetAttr(ctx context.Context, u User, p PathAt, a SetAttr) (Inode, error) {
	var out Inode
	var trim *pendingTrim // storage must drop bytes past the new size
	body := func(t *txn) error {
		n, err := t.resolve(p)
		if err != nil {
			return err
		}
		trim = nil
		what := p.String()
		if err := t.foldDirTimes(n); err != nil {
			return err
		}
		if a.Size != nil {
			switch n.Type {
			case TypeDir:
				return errIsDir(what)
			case TypeSymlink:
				return errInval("%s: cannot truncate a symbolic link", what)
			}
			if n.Type.IsSpecial() {
				return errInval("%s: cannot truncate a %s", what, n.Type)
			}
			if err := checkAccess(u, n, permW, what); err != nil {
				return err
			}
			// Storage may hold unfinalized bytes past any length, so even
			// an extend trims.
			if trim, err = t.setLength(n, *a.Size); err != nil {
				return err
			}
			dropSetIDOnWrite(u, n)
		}
		if a.UID != nil || a.GID != nil {
			if err := chown(u, n, a.UID, a.GID, what); err != nil {
				return err
			}
		}
		if a.Mode != nil {
			if !isOwner(u, n) {
				return errPerm("chmod %s: only the owner may change the mode", what)
			}
			m := *a.Mode & ModePerm
			if n.Type != TypeDir && m&ModeSetgid != 0 && !u.isRoot() && !u.inGroup(n.GID) {
				m &^= ModeSetgid
			}
			n.Mode = m
		}
		if a.Atime != nil || a.Mtime != nil {
			if !isOwner(u, n) {
				return errPerm("utimes %s: only the owner may set explicit times", what)
			}
		} else if (a.AtimeNow || a.MtimeNow) && !isOwner(u, n) && !access(u, n, permW) {
			return errAccess(what, "write permission or ownership to touch times")
		}
		switch {
		case a.Atime != nil:
			n.Atime = *a.Atime
		case a.AtimeNow:
			n.Atime = t.now
		}
		switch {
		case a.Mtime != nil:
			n.Mtime = *a.Mtime
		case a.MtimeNow:
			n.Mtime = t.now
		}
		if n.Type != TypeDir || t.now.After(n.Ctime) {
			// A directory's ctime may come from another server's change
			// record (folded above) with a clock ahead of ours: it does
			// not go back.
			n.Ctime = t.now
		}
		out = *n
		return t.putInode(n)
	}
	var err error
	for {
		err = s.transactAs(ctx, u, body)
		var pending trimPendingError
		if !errors.As(err, &pending) {
			break
		}
		// A length past a pending trim's would expose the bytes that trim
		// still has to cut: finish it first, then try again.
		if err = s.settleAny(ctx, pending.inode); err != nil {
			return Inode{}, err
		}
	}
	if err = mapKVError(err); err == nil {
		err = s.settleTrim(ctx, out.ID, trim)
	}
	return out, err
}

// chown applies the POSIX ownership rules: only root changes the owner; the
// owner may change the group to one it belongs to; a change clears the
// setuid and setgid bits of non-directories.
func chown(u User, n *Inode, uid, gid *uint32, what string) error {
	if !u.isRoot() {
		if u.UID != n.UID {
			return errPerm("chown %s: only the owner or root may change ownership", what)
		}
		if uid != nil && *uid != n.UID {
			return errPerm("chown %s: only root may change the owner", what)
		}
		if gid != nil && *gid != n.GID && !u.inGroup(*gid) {
			return errPerm("chown %s: not a member of group %d", what, *gid)
		}
	}
	if uid != nil {
		n.UID = *uid
	}
	if gid != nil {
		n.GID = *gid
	}
	if n.Type != TypeDir {
		n.Mode &^= ModeSetuid | ModeSetgid
	}
	return nil
}

// Truncate sets a file's length (truncate(2)).
func (s *Server) Truncate(ctx context.Context, u User, p PathAt, size uint64) (Inode, error) {
	return s.SetAttr(ctx, u, p, SetAttr{Size: &size})
}

// SetDirLayout changes the layout defaults that new files in directory p
// inherit (owner or root).
func (s *Server) SetDirLayout(ctx context.Context, u User, p PathAt, l Layout) (Inode, error) {
	if l.ChunkSize == 0 || l.StripeSize == 0 {
		return Inode{}, errInval("layout: chunk size and stripe size must be positive")
	}
	if s.cfg.Chains != nil {
		if _, err := s.cfg.Chains.ChainCount(ctx, l.ChainTable); err != nil {
			return Inode{}, err
		}
	}
	var out Inode
	err := s.updateAs(ctx, u, func(t *txn) error {
		n, err := t.resolve(p)
		if err != nil {
			return err
		}
		if n.Type != TypeDir {
			return errNotDir(p.String())
		}
		if !isOwner(u, n) {
			return errPerm("%s: only the owner may change the layout", p)
		}
		n.Layout = Layout{ChainTable: l.ChainTable, ChunkSize: l.ChunkSize, StripeSize: l.StripeSize}
		n.Ctime = t.now
		out = *n
		return t.putInode(n)
	})
	return out, err
}

// Xattr flags (setxattr(2)).
const (
	XattrCreate  = 1 // fail with EEXIST if the attribute exists
	XattrReplace = 2 // fail with ENODATA if it does not
)

// xattrAccess checks name and the caller's right to read or write it:
// user.* follows the file's permission bits (and exists only on files and
// directories), trusted.* and writes to security.* need root.
func xattrAccess(u User, n *Inode, name string, write bool, what string) error {
	if name == "" || len(name) > MaxXattrName {
		return errcode.New(errcode.OutOfRange, "xattr name of %d bytes (must be 1..%d)", len(name), MaxXattrName)
	}
	switch {
	case strings.HasPrefix(name, "user."):
		if n.Type != TypeFile && n.Type != TypeDir {
			if write {
				return errPerm("%s: user xattrs exist only on files and directories", what)
			}
			return errNoData(name)
		}
		want := uint32(permR)
		if write {
			want = permW
		}
		return checkAccess(u, n, want, what)
	case strings.HasPrefix(name, "trusted."):
		if !u.isRoot() {
			if write {
				return errPerm("%s: trusted xattrs need root", what)
			}
			return errNoData(name)
		}
	case strings.HasPrefix(name, "security."):
		if write && !u.isRoot() {
			return errPerm("%s: security xattrs need root", what)
		}
	default:
		return errcode.WithErrno(errcode.NotSupported, syscall.EOPNOTSUPP, "xattr %q: unsupported namespace", name)
	}
	return nil
}

// GetXattr returns the value of attribute name.
func (s *Server) GetXattr(ctx context.Context, u User, p PathAt, name string) ([]byte, error) {
	var out []byte
	err := s.view(ctx, u, func(t *txn) error {
		n, err := t.resolve(p)
		if err != nil {
			return err
		}
		if err := xattrAccess(u, n, name, false, p.String()); err != nil {
			return err
		}
		v, ok, err := t.r.Get(xattrKey(n.ID, name))
		if err != nil {
			return err
		}
		if !ok {
			return errNoData(name)
		}
		out = v
		return nil
	})
	return out, err
}

// SetXattr sets attribute name (flags: XattrCreate, XattrReplace).
func (s *Server) SetXattr(ctx context.Context, u User, p PathAt, name string, value []byte, flags int) error {
	if len(value) > MaxXattrValue {
		return errcode.WithErrno(errcode.InvalidArgument, syscall.E2BIG, "xattr %q: value of %d bytes exceeds %d", name, len(value), MaxXattrValue)
	}
	if flags&^(XattrCreate|XattrReplace) != 0 || flags == XattrCreate|XattrReplace {
		return errInval("setxattr: invalid flags %#x", flags)
	}
	return s.updateAs(ctx, u, func(t *txn) error {
		n, err := t.resolve(p)
		if err != nil {
			return err
		}
		if err := xattrAccess(u, n, name, true, p.String()); err != nil {
			return err
		}
		k := xattrKey(n.ID, name)
		_, exists, err := t.r.Get(k)
		if err != nil {
			return err
		}
		if exists && flags&XattrCreate != 0 {
			return errExist("xattr " + name)
		}
		if !exists && flags&XattrReplace != 0 {
			return errNoData(name)
		}
		if err := t.tx.Set(k, append([]byte(nil), value...)); err != nil {
			return err
		}
		n.Ctime = t.now
		return t.putInode(n)
	})
}

// ListXattr returns the attribute names the caller may see.
func (s *Server) ListXattr(ctx context.Context, u User, p PathAt) ([]string, error) {
	var out []string
	err := s.view(ctx, u, func(t *txn) error {
		out = nil
		n, err := t.resolve(p)
		if err != nil {
			return err
		}
		pre := xattrPrefix(n.ID)
		kvs, err := t.r.GetRange(pre, kv.PrefixEnd(pre), kv.RangeOptions{})
		if err != nil {
			return err
		}
		for _, e := range kvs {
			name := string(e.Key[len(pre):])
			if strings.HasPrefix(name, "trusted.") && !u.isRoot() {
				continue
			}
			out = append(out, name)
		}
		return nil
	})
	return out, err
}

// RemoveXattr removes attribute name.
func (s *Server) RemoveXattr(ctx context.Context, u User, p PathAt, name string) error {
	return s.updateAs(ctx, u, func(t *txn) error {
		n, err := t.resolve(p)
		if err != nil {
			return err
		}
		if err := xattrAccess(u, n, name, true, p.String()); err != nil {
			return err
		}
		k := xattrKey(n.ID, name)
		if _, ok, err := t.r.Get(k); err != nil {
			return err
		} else if !ok {
			return errNoData(name)
		}
		if err := t.tx.Clear(k); err != nil {
			return err
		}
		n.Ctime = t.now
		return t.putInode(n)
	})
}
