package meta

import (
	"context"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/kv"
)

// child looks up name in dir after the write+search check every removal and
// rename needs on the directory.
func (t *txn) child(dir *Inode, name, what string) (*Inode, error) {
	if err := checkAccess(t.u, dir, permX, what); err != nil {
		return nil, err
	}
	d, ok, err := t.lookup(dir.ID, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errNoEnt(what)
	}
	if err := checkAccess(t.u, dir, permW, what); err != nil {
		return nil, err
	}
	return t.entryInode(d.ID, what)
}

// Unlink removes a name of a non-directory.
func (s *Server) Unlink(ctx context.Context, u User, p PathAt) error {
	return s.updateAs(ctx, u, func(t *txn) error {
		dir, name, err := t.resolveParent(p)
		if err != nil {
			return err
		}
		what := p.String()
		if isDots(name) {
			return errIsDir(what)
		}
		n, err := t.child(dir, name, what)
		if err != nil {
			return err
		}
		if n.Type == TypeDir {
			return errIsDir(what)
		}
		if err := checkSticky(u, dir, n, what); err != nil {
			return err
		}
		if err := t.removeEntry(dir.ID, name); err != nil {
			return err
		}
		return t.dropLink(n)
	})
}

// Rmdir removes an empty directory.
func (s *Server) Rmdir(ctx context.Context, u User, p PathAt) error {
	return s.updateAs(ctx, u, func(t *txn) error {
		dir, name, err := t.resolveParent(p)
		if err != nil {
			return err
		}
		what := p.String()
		switch name {
		case ".":
			return errInval("rmdir %s: cannot remove '.'", what)
		case "..":
			return errNotEmpty(what)
		}
		n, err := t.child(dir, name, what)
		if err != nil {
			return err
		}
		if n.Type != TypeDir {
			return errNotDir(what)
		}
		if err := checkSticky(u, dir, n, what); err != nil {
			return err
		}
		empty, err := t.dirEmpty(n.ID)
		if err != nil {
			return err
		}
		if !empty {
			return errNotEmpty(what)
		}
		if err := t.adjustSubdirs(dir, -1); err != nil {
			return err
		}
		if err := t.removeEntry(dir.ID, name); err != nil {
			return err
		}
		return t.removeInode(n)
	})
}

// RemoveAll removes p and, if it is a directory, everything below it, in one
// transaction: the directory is detached from the namespace at once and the
// background collector deletes its contents in batches. Non-root callers
// need, as rm -r does, read, write and search permission on every directory
// of the tree (checked on the transaction's snapshot).
func (s *Server) RemoveAll(ctx context.Context, u User, p PathAt) error {
	return s.updateAs(ctx, u, func(t *txn) error {
		dir, name, err := t.resolveParent(p)
		if err != nil {
			return err
		}
		what := p.String()
		if isDots(name) {
			return errInval("remove %s: cannot remove '.' or '..'", what)
		}
		n, err := t.child(dir, name, what)
		if err != nil {
			return err
		}
		if err := checkSticky(u, dir, n, what); err != nil {
			return err
		}
		if n.Type == TypeDir {
			if err := t.adjustSubdirs(dir, -1); err != nil {
				return err
			}
		}
		if err := t.removeEntry(dir.ID, name); err != nil {
			return err
		}
		if n.Type != TypeDir {
			return t.dropLink(n)
		}
		if !u.isRoot() {
			if err := t.checkTreeRemovable(n, what); err != nil {
				return err
			}
		}
		return t.detach(n)
	})
}

// detach takes directory n out of the namespace and queues it for the
// collector. Writing the inode makes concurrent inserts into n (which read
// it) conflict, and the Detached flag refuses later ones.
func (t *txn) detach(n *Inode) error {
	n.Detached, n.Parent, n.Ctime = true, 0, t.now
	if err := t.putInode(n); err != nil {
		return err
	}
	t.s.kickGC()
	return t.tx.Set(gcKey(n.ID), gcEntry{Type: TypeDir}.encode())
}

func (t *txn) checkTreeRemovable(root *Inode, what string) error {
	stack := []*Inode{root}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if err := checkAccess(t.u, d, permR|permW|permX, what); err != nil {
			return err
		}
		b, e := dirRange(d.ID)
		for {
			kvs, err := t.r.GetRange(b, e, kv.RangeOptions{Limit: 1024, Snapshot: true})
			if err != nil {
				return err
			}
			for _, item := range kvs {
				de, err := decodeDentry(item.Value)
				if err != nil {
					return errcode.New(errcode.Internal, "%s: %v", what, err)
				}
				if de.Type == TypeDir {
					v, ok, err := t.r.SnapshotGet(inodeKey(de.ID))
					if err != nil {
						return err
					}
					if ok {
						c, err := decodeInode(de.ID, v)
						if err != nil {
							return errcode.New(errcode.Internal, "%v", err)
						}
						stack = append(stack, c)
					}
				}
			}
			if len(kvs) < 1024 {
				break
			}
			b = append(append([]byte(nil), kvs[len(kvs)-1].Key...), 0)
		}
	}
	return nil
}

// RenameFlags are renameat2 flags.
type RenameFlags uint32

const (
	RenameNoReplace RenameFlags = 1 << 0 // RENAME_NOREPLACE
	RenameExchange  RenameFlags = 1 << 1 // RENAME_EXCHANGE
)

// Rename moves src to dst atomically, across directories, with the POSIX
// replace rules, or swaps them with RenameExchange.
func (s *Server) Rename(ctx context.Context, u User, src, dst PathAt, flags RenameFlags) error {
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return errInval("rename: invalid flags %#x", uint32(flags))
	}
	return s.updateAs(ctx, u, func(t *txn) error {
		sdir, sname, err := t.resolveParent(src)
		if err != nil {
			return err
		}
		ddir, dname, err := t.resolveParent(dst)
		if err != nil {
			return err
		}
		swhat, dwhat := src.String(), dst.String()
		if isDots(sname) || isDots(dname) {
			return errcode.New(errcode.Busy, "rename %s -> %s: '.' and '..' cannot be renamed", swhat, dwhat)
		}
		sn, err := t.child(sdir, sname, swhat)
		if err != nil {
			return err
		}
		if err := checkAccess(u, ddir, permW|permX, dwhat); err != nil {
			return err
		}
		if ddir.Detached {
			return errNoEnt(dwhat)
		}
		dd, dexists, err := t.lookup(ddir.ID, dname)
		if err != nil {
			return err
		}
		if flags&RenameExchange != 0 && !dexists {
			return errNoEnt(dwhat)
		}
		if dexists && flags&RenameNoReplace != 0 {
			return errExist(dwhat)
		}
		if dexists && dd.ID == sn.ID {
			return nil // same file: POSIX says do nothing
		}
		if err := checkSticky(u, sdir, sn, swhat); err != nil {
			return err
		}
		if sn.Type == TypeDir && sdir.ID != ddir.ID {
			if err := t.checkMoveDir(sn, ddir, swhat); err != nil {
				return err
			}
		}
		var dn *Inode
		if dexists {
			if dn, err = t.entryInode(dd.ID, dwhat); err != nil {
				return err
			}
			if err := checkSticky(u, ddir, dn, dwhat); err != nil {
				return err
			}
		}
		if flags&RenameExchange != 0 {
			if dn.Type == TypeDir && sdir.ID != ddir.ID {
				if err := t.checkMoveDir(dn, sdir, dwhat); err != nil {
					return err
				}
			}
			if err := t.moveSubdirs(sdir, ddir, isDir(dn)-isDir(sn)); err != nil {
				return err
			}
			return t.exchange(sdir, sname, sn, ddir, dname, dn)
		}
		if dexists {
			if err := t.replaceTarget(sn, dn, dwhat); err != nil {
				return err
			}
			if dn.Type == TypeDir {
				if err := t.adjustSubdirs(ddir, -1); err != nil {
					return err
				}
				if ddir.ID == sdir.ID {
					sdir.Nlink = ddir.Nlink // one directory, two copies
				}
			}
		}
		if err := t.moveSubdirs(sdir, ddir, -isDir(sn)); err != nil {
			return err
		}
		if err := t.removeEntry(sdir.ID, sname); err != nil {
			return err
		}
		if err := t.insertEntry(ddir.ID, dname, sn); err != nil {
			return err
		}
		if sn.Type == TypeDir {
			sn.Parent = ddir.ID
		}
		sn.Ctime = t.now
		return t.putInode(sn)
	})
}

func isDir(n *Inode) int {
	if n != nil && n.Type == TypeDir {
		return 1
	}
	return 0
}

// moveSubdirs applies a rename's change to the link counts of its two
// directories: delta subdirectories for sdir and -delta for ddir (nothing
// when they are one directory).
func (t *txn) moveSubdirs(sdir, ddir *Inode, delta int) error {
	if delta == 0 || sdir.ID == ddir.ID {
		return nil
	}
	if err := t.adjustSubdirs(sdir, delta); err != nil {
		return err
	}
	return t.adjustSubdirs(ddir, -delta)
}

// checkMoveDir refuses to move directory n into dst if dst is n or below
// it, by reading dst's parent chain up to the root. The reads make any
// concurrent rename that changes that chain conflict with this one.
func (t *txn) checkMoveDir(n, dst *Inode, what string) error {
	if !t.u.isRoot() && !access(t.u, n, permW) {
		return errAccess(what, "write permission on the directory to move it")
	}
	cur := dst
	for steps := 0; ; steps++ {
		if cur.ID == n.ID {
			return errInval("rename %s: cannot move a directory into itself or below", what)
		}
		if cur.ID == RootID {
			return nil
		}
		if cur.Parent == 0 || steps > 1<<16 {
			return errNoEnt(what)
		}
		up, err := t.inode(cur.Parent)
		if err != nil {
			return err
		}
		cur = up
	}
}

// replaceTarget applies the POSIX rules for renaming sn over dn and drops dn.
func (t *txn) replaceTarget(sn, dn *Inode, what string) error {
	switch {
	case sn.Type == TypeDir && dn.Type != TypeDir:
		return errNotDir(what)
	case sn.Type != TypeDir && dn.Type == TypeDir:
		return errIsDir(what)
	case dn.Type == TypeDir:
		empty, err := t.dirEmpty(dn.ID)
		if err != nil {
			return err
		}
		if !empty {
			return errNotEmpty(what)
		}
		return t.removeInode(dn)
	}
	return t.dropLink(dn)
}

func (t *txn) exchange(sdir *Inode, sname string, sn *Inode, ddir *Inode, dname string, dn *Inode) error {
	if err := t.tx.Set(dentryKey(sdir.ID, sname), dentry{ID: dn.ID, Type: dn.Type}.encode()); err != nil {
		return err
	}
	if err := t.tx.Set(dentryKey(ddir.ID, dname), dentry{ID: sn.ID, Type: sn.Type}.encode()); err != nil {
		return err
	}
	if err := t.dirChanged(sdir.ID); err != nil {
		return err
	}
	if err := t.dirChanged(ddir.ID); err != nil {
		return err
	}
	if sn.Type == TypeDir {
		sn.Parent = ddir.ID
	}
	if dn.Type == TypeDir {
		dn.Parent = sdir.ID
	}
	sn.Ctime, dn.Ctime = t.now, t.now
	if err := t.putInode(sn); err != nil {
		return err
	}
	return t.putInode(dn)
}
