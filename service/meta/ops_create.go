package meta

import (
	"context"
	"errors"
	"math/rand/v2"

	"github.com/emberfs/emberfs/internal/errcode"
)

// CreateOptions are the open(2) flags that matter to create.
type CreateOptions struct {
	Mode      uint32 // permission bits (umask already applied by the client)
	Exclusive bool   // O_EXCL
	Truncate  bool   // O_TRUNC
	Read      bool   // opened for reading
	Write     bool   // opened for writing: starts a write session
	ClientID  string // required with Write
	Layout    *Layout
}

// OpenOptions are the open(2) flags that matter to open.
type OpenOptions struct {
	Read     bool
	Write    bool
	Truncate bool
	ClientID string // required with Write
}

// OpenResult is an open file: its inode and, when opened for writing, the
// write session to pass to Fsync and Close.
type OpenResult struct {
	Inode   Inode
	Session uint64
	Created bool
}

// newInode fills the fields every new inode shares: owner, group (inherited
// from a setgid directory) and times.
func (t *txn) newInode(id uint64, typ FileType, mode uint32, dir *Inode) *Inode {
	n := &Inode{ID: id, Type: typ, Mode: mode & ModePerm, UID: t.u.UID, GID: t.u.GID, Nlink: 1,
		Atime: t.now, Mtime: t.now, Ctime: t.now}
	if dir.Mode&ModeSetgid != 0 {
		n.GID = dir.GID
		if typ == TypeDir {
			n.Mode |= ModeSetgid
		}
	}
	if typ != TypeDir && n.Mode&ModeSetgid != 0 && !t.u.isRoot() && !t.u.inGroup(n.GID) {
		n.Mode &^= ModeSetgid
	}
	return n
}

func checkInsert(u User, dir *Inode, what string) error {
	if dir.Detached {
		return errNoEnt(what)
	}
	return checkAccess(u, dir, permW|permX, what)
}

// freeName is the preamble of every operation that adds a new name (mkdir,
// symlink, link): it resolves p's parent and checks that the name is free
// and that the caller may insert into the directory. Create does its own,
// since an existing name is not an error there.
func (t *txn) freeName(p PathAt) (dir *Inode, name string, err error) {
	dir, name, err = t.resolveParent(p)
	if err != nil {
		return nil, "", err
	}
	what := p.String()
	if isDots(name) {
		return nil, "", errExist(what)
	}
	if _, exists, err := t.lookup(dir.ID, name); err != nil {
		return nil, "", err
	} else if exists {
		return nil, "", errExist(what)
	}
	if err := checkInsert(t.u, dir, what); err != nil {
		return nil, "", err
	}
	return dir, name, nil
}

// Create creates (or, without Exclusive, opens) a regular file.
func (s *Server) Create(ctx context.Context, u User, p PathAt, opts CreateOptions) (OpenResult, error) {
	if opts.Write && opts.ClientID == "" {
		return OpenResult{}, errInval("create %s: a write open needs a client id", p)
	}
	ids, err := s.ids.alloc(ctx, 1)
	if err != nil {
		return OpenResult{}, err
	}
	guess := s.lastTable.Load()
	if opts.Layout != nil {
		guess = opts.Layout.ChainTable
	}
	counts := chainCounts{}
	if err := counts.fetch(ctx, s, guess); err != nil && opts.Layout != nil {
		return OpenResult{}, err // the caller's own table; a stale guess is just dropped
	}
	var res OpenResult
	var trim *pendingTrim
	body := func(t *txn) error {
		res, trim = OpenResult{}, nil
		dir, name, err := t.resolveParent(p)
		if err != nil {
			return err
		}
		what := p.String()
		if isDots(name) {
			if opts.Exclusive {
				return errExist(what)
			}
			return errIsDir(what)
		}
		d, exists, err := t.lookup(dir.ID, name)
		if err != nil {
			return err
		}
		if exists {
			if err := checkAccess(u, dir, permX, what); err != nil {
				return err
			}
			if opts.Exclusive {
				return errExist(what)
			}
			n, err := t.inode(d.ID)
			if err != nil {
				return err
			}
			if n.Type == TypeSymlink {
				if n, err = t.walk(dir, []string{name}, true, what); err != nil {
					return err
				}
			}
			res.Inode, res.Session, trim, err = t.openInode(n, OpenOptions{Read: opts.Read, Write: opts.Write, Truncate: opts.Truncate, ClientID: opts.ClientID}, what)
			return err
		}
		if err := checkInsert(u, dir, what); err != nil {
			return err
		}
		n := t.newInode(ids[0], TypeFile, opts.Mode, dir)
		base := dir.Layout
		if opts.Layout != nil {
			base = *opts.Layout
		}
		if n.Layout, err = t.chooseLayout(base, counts); err != nil {
			return err
		}
		if err := t.putInode(n); err != nil {
			return err
		}
		if err := t.insertEntry(dir.ID, name, n); err != nil {
			return err
		}
		if opts.Write || holdsData(n, opts.ClientID) {
			if res.Session, err = t.openSession(n.ID, opts.ClientID); err != nil {
				return err
			}
		}
		res.Inode, res.Created = *n, true
		return nil
	}
	for {
		err = s.transactAs(ctx, u, body)
		var need needChainCount
		if !errors.As(err, &need) || counts[need.table] != 0 {
			break
		}
		if err = counts.fetch(ctx, s, need.table); err != nil {
			return OpenResult{}, err
		}
	}
	err = mapKVError(err)
	if err == nil && res.Created {
		s.lastTable.Store(res.Inode.Layout.ChainTable)
	}
	if err == nil {
		err = s.settleTrim(ctx, res.Inode.ID, trim)
	}
	return res, err
}

// Open opens an existing file or directory.
func (s *Server) Open(ctx context.Context, u User, p PathAt, opts OpenOptions) (OpenResult, error) {
	if opts.Write && opts.ClientID == "" {
		return OpenResult{}, errInval("open %s: a write open needs a client id", p)
	}
	var res OpenResult
	var trim *pendingTrim
	err := s.updateAs(ctx, u, func(t *txn) error {
		res, trim = OpenResult{}, nil
		n, err := t.resolve(p)
		if err != nil {
			return err
		}
		res.Inode, res.Session, trim, err = t.openInode(n, opts, p.String())
		return err
	})
	if err == nil {
		err = s.settleTrim(ctx, res.Inode.ID, trim)
	}
	return res, err
}

// openInode checks access and applies O_TRUNC and the write session. The
// trim it returns (O_TRUNC's, or one left pending by an earlier truncate
// when opening for writing) must be finished after the commit, before the
// caller gets the file: a writer must not start on chunks that still hold
// bytes a truncate removed.
func (t *txn) openInode(n *Inode, opts OpenOptions, what string) (Inode, uint64, *pendingTrim, error) {
	switch n.Type {
	case TypeDir:
		if opts.Write || opts.Truncate {
			return Inode{}, 0, nil, errIsDir(what)
		}
	case TypeSymlink:
		return Inode{}, 0, nil, errcode.New(errcode.Loop, "%s: is a symbolic link (O_NOFOLLOW)", what)
	}
	var want uint32
	if opts.Read {
		want |= permR
	}
	if opts.Write || opts.Truncate {
		want |= permW
	}
	if err := checkAccess(t.u, n, want, what); err != nil {
		return Inode{}, 0, nil, err
	}
	var trim *pendingTrim
	var err error
	if opts.Truncate {
		if trim, err = t.setLength(n, 0); err != nil {
			return Inode{}, 0, nil, err
		}
		dropSetIDOnWrite(t.u, n)
		if err := t.putInode(n); err != nil {
			return Inode{}, 0, nil, err
		}
	} else if opts.Write && t.s.cfg.Chunks != nil {
		if trim, err = t.pendingTrimOf(n.ID); err != nil {
			return Inode{}, 0, nil, err
		}
		// Claimed here when free, so that the caller runs it right after
		// the commit; otherwise the caller waits for its runner.
		if trim != nil && trim.claimable(t.now) {
			trim.claim(t.now)
			if err := t.tx.Set(trimKey(n.ID), trim.encode()); err != nil {
				return Inode{}, 0, nil, err
			}
		}
	}
	var sess uint64
	if opts.Write || holdsData(n, opts.ClientID) {
		if sess, err = t.openSession(n.ID, opts.ClientID); err != nil {
			return Inode{}, 0, nil, err
		}
	}
	return *n, sess, trim, nil
}

// holdsData reports whether a read-only open of n gets a session too: a
// named client opening a file does, so that the file's data outlives an
// unlink (by any client) until this open is closed, as POSIX promises
// (issue 13, hole 8). An anonymous read open holds nothing.
func holdsData(n *Inode, client string) bool { return client != "" && n.Type == TypeFile }

// openSession records a session (a write open, or a named client's read
// open: both keep an unlinked file's data until closed). It writes the inode's session marker
// so that a concurrent unlink, which reads the marker before deciding the
// file is not open, conflicts; opens do not read it, so they never conflict
// with each other. Setting the client lease is a blind write, also conflict-free.
func (t *txn) openSession(id uint64, client string) (uint64, error) {
	sess := rand.Uint64() | 1
	if err := t.tx.Set(sessionKey(id, sess), session{Client: client, Created: t.now}.encode()); err != nil {
		return 0, err
	}
	if err := t.touchMarker(sessionPrefix(id)); err != nil {
		return 0, err
	}
	return sess, t.tx.Set(clientKey(client), appendBE64(nil, uint64(t.now.Add(t.s.cfg.ClientTTL).UnixNano())))
}

// Mkdir creates a directory; with parents it creates missing ancestors and
// succeeds if the directory exists (mkdir -p).
func (s *Server) Mkdir(ctx context.Context, u User, p PathAt, mode uint32, parents bool) (Inode, error) {
	if parents {
		return s.mkdirAll(ctx, u, p, mode)
	}
	return s.createNode(ctx, u, p, func(t *txn, id uint64, dir *Inode) (*Inode, error) {
		return t.mkdirInode(id, mode, dir), t.adjustSubdirs(dir, +1)
	})
}

// createNode allocates an inode id and, in one transaction, puts the inode
// build makes under the free name p: what Mkdir, Symlink and Mknod share.
func (s *Server) createNode(ctx context.Context, u User, p PathAt, build func(t *txn, id uint64, dir *Inode) (*Inode, error)) (Inode, error) {
	ids, err := s.ids.alloc(ctx, 1)
	if err != nil {
		return Inode{}, err
	}
	var out Inode
	err = s.updateAs(ctx, u, func(t *txn) error {
		dir, name, err := t.freeName(p)
		if err != nil {
			return err
		}
		n, err := build(t, ids[0], dir)
		if err != nil {
			return err
		}
		if err := t.putInode(n); err != nil {
			return err
		}
		out = *n
		return t.insertEntry(dir.ID, name, n)
	})
	return out, err
}

func (t *txn) mkdirInode(id uint64, mode uint32, dir *Inode) *Inode {
	n := t.newInode(id, TypeDir, mode, dir)
	n.Nlink = 2
	n.subdirsCounted = true
	n.Parent = dir.ID
	n.Layout = Layout{ChainTable: dir.Layout.ChainTable, ChunkSize: dir.Layout.ChunkSize, StripeSize: dir.Layout.StripeSize}
	return n
}

func (s *Server) mkdirAll(ctx context.Context, u User, p PathAt, mode uint32) (Inode, error) {
	comps, err := splitPath(p.Path)
	if err != nil {
		return Inode{}, err
	}
	ids, err := s.ids.alloc(ctx, len(comps))
	if err != nil {
		return Inode{}, err
	}
	var out Inode
	err = s.updateAs(ctx, u, func(t *txn) error {
		cur, _, _, err := t.start(p)
		if err != nil {
			return err
		}
		what := p.String()
		for i, name := range comps {
			if cur.Type != TypeDir {
				return errNotDir(what)
			}
			if isDots(name) {
				if cur, err = t.walk(cur, []string{name}, true, what); err != nil {
					return err
				}
				continue
			}
			if err := checkName(name); err != nil {
				return err
			}
			if err := checkAccess(u, cur, permX, what); err != nil {
				return err
			}
			_, exists, err := t.lookup(cur.ID, name)
			if err != nil {
				return err
			}
			if exists {
				next, err := t.walk(cur, []string{name}, true, what)
				if err != nil {
					return err
				}
				if next.Type != TypeDir {
					if i == len(comps)-1 {
						return errExist(what)
					}
					return errNotDir(what)
				}
				cur = next
				continue
			}
			if err := checkInsert(u, cur, what); err != nil {
				return err
			}
			n := t.mkdirInode(ids[i], mode, cur)
			if err := t.putInode(n); err != nil {
				return err
			}
			if err := t.adjustSubdirs(cur, +1); err != nil {
				return err
			}
			if err := t.insertEntry(cur.ID, name, n); err != nil {
				return err
			}
			cur = n
		}
		out = *cur
		return nil
	})
	return out, err
}

// Symlink creates a symbolic link to target.
func (s *Server) Symlink(ctx context.Context, u User, p PathAt, target string) (Inode, error) {
	if target == "" {
		return Inode{}, errNoEnt("symlink with an empty target")
	}
	if err := checkPath(target); err != nil {
		return Inode{}, err
	}
	return s.createNode(ctx, u, p, func(t *txn, id uint64, dir *Inode) (*Inode, error) {
		n := t.newInode(id, TypeSymlink, 0o777, dir)
		n.Target, n.Size = target, uint64(len(target))
		return n, nil
	})
}

// Mknod creates a FIFO, socket or device node (mknod(2); regular files
// are Create's). Only root creates device nodes (CAP_MKNOD), as on Linux.
func (s *Server) Mknod(ctx context.Context, u User, p PathAt, typ FileType, mode, rdev uint32) (Inode, error) {
	if !typ.IsSpecial() {
		return Inode{}, errInval("mknod %s: type %s is not a FIFO, socket or device node", p, typ)
	}
	if (typ == TypeCharDev || typ == TypeBlockDev) && !u.isRoot() {
		return Inode{}, errPerm("mknod %s: only root may create device nodes", p)
	}
	return s.createNode(ctx, u, p, func(t *txn, id uint64, dir *Inode) (*Inode, error) {
		n := t.newInode(id, typ, mode, dir)
		if typ == TypeCharDev || typ == TypeBlockDev {
			n.Rdev = rdev
		}
		return n, nil
	})
}

// Link creates newPath as another name of oldPath (which is not followed if
// it is a symlink, as on Linux).
func (s *Server) Link(ctx context.Context, u User, oldPath, newPath PathAt) (Inode, error) {
	oldPath.NoFollow = true
	var out Inode
	err := s.updateAs(ctx, u, func(t *txn) error {
		src, err := t.resolve(oldPath)
		if err != nil {
			return err
		}
		if src.Type == TypeDir {
			return errPerm("link %s: hard links to directories are not allowed", oldPath)
		}
		dir, name, err := t.freeName(newPath)
		if err != nil {
			return err
		}
		if src.Nlink == 0 {
			// An inode whose last name is gone lives on only while it is
			// open; such a file may get a name again (an O_TMPFILE file
			// linked into place: the kernel allows that only for O_TMPFILE
			// files opened without O_EXCL). Reading the session marker
			// makes this conflict with the last close removing it.
			open := false
			if src.Type == TypeFile {
				if open, err = t.hasSessions(src.ID); err != nil {
					return err
				}
			}
			if !open {
				return errNoEnt(oldPath.String())
			}
		}
		if src.Nlink >= MaxLinks {
			return errcode.New(errcode.TooManyLinks, "link %s: file already has %d links", oldPath, src.Nlink)
		}
		src.Nlink++
		src.Ctime = t.now
		if err := t.putInode(src); err != nil {
			return err
		}
		out = *src
		return t.insertEntry(dir.ID, name, src)
	})
	return out, err
}
