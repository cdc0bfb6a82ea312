package fuse

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// node is one inode in the kernel's view; its go-fuse Ino is the EmberFS
// inode id, so hard links share one node.
type node struct {
	fs.Inode
	fsys *fileSystem
	// kSize and kMtime (ns) are the size and mtime this mount last gave
	// the kernel for the inode; open compares them with what meta says now
	// (see Open).
	kSize  atomic.Uint64
	kMtime atomic.Int64
}

// noteAttr records what the kernel was told (and now caches).
func (n *node) noteAttr(a *gofuse.Attr) {
	n.kSize.Store(a.Size)
	n.kMtime.Store(int64(a.Mtime)*1e9 + int64(a.Mtimensec))
}

var (
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeStatfser       = (*node)(nil)
	_ fs.NodeGetxattrer     = (*node)(nil)
	_ fs.NodeSetxattrer     = (*node)(nil)
	_ fs.NodeListxattrer    = (*node)(nil)
	_ fs.NodeRemovexattrer  = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
)

func (n *node) id() uint64 { return n.StableAttr().Ino }

func (n *node) self() meta.PathAt { return meta.PathAt{Parent: n.id()} }

func (n *node) child(name string) meta.PathAt { return meta.PathAt{Parent: n.id(), Path: name} }

// newChild returns the node for inode in (an existing one for a known id)
// and fills the entry the kernel caches.
func (n *node) newChild(ctx context.Context, in *meta.Inode, since uint64, out *gofuse.EntryOut) *fs.Inode {
	n.fsys.fillAttr(opCtx(ctx), in, since, &out.Attr)
	child := n.NewInode(ctx, &node{fsys: n.fsys}, fs.StableAttr{Mode: typeMode(in.Type), Ino: in.ID})
	if cn, ok := child.Operations().(*node); ok {
		cn.noteAttr(&out.Attr)
	}
	return child
}

func (n *node) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	since := n.fsys.releases.now()
	in, err := n.fsys.meta.Lookup(opCtx(ctx), n.fsys.creds.user(ctx), n.id(), name)
	if err != nil {
		return nil, n.fsys.errno("lookup", err)
	}
	return n.newChild(ctx, &in, since, out), 0
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	since := n.fsys.releases.now()
	in, err := n.fsys.meta.Stat(opCtx(ctx), root, n.self())
	if err != nil {
		// An open file whose inode is gone (removed by another client):
		// answer from the handle rather than fail fstat.
		if h, ok := fh.(*fileHandle); ok && (errcode.Is(err, errcode.NotFound) || errcode.Is(err, errcode.Stale)) {
			in = h.inode()
			in.Nlink = 0
		} else {
			return n.fsys.errno("getattr", err)
		}
	}
	n.fsys.fillAttr(opCtx(ctx), &in, since, &out.Attr)
	n.noteAttr(&out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *gofuse.SetAttrIn, out *gofuse.AttrOut) syscall.Errno {
	since := n.fsys.releases.now()
	c := opCtx(ctx)
	u := n.fsys.creds.user(ctx)
	if size, ok := in.GetSize(); ok {
		if errno := n.truncate(c, u, fh, size); errno != 0 {
			return errno
		}
	}
	if in.Valid&(gofuse.FATTR_ATIME|gofuse.FATTR_MTIME) != 0 {
		// The times set now must not be overwritten by the length update
		// of a write made before (tar -x, cp -a, rsync: write, close,
		// utimensat; the kernel's RELEASE may come after the SETATTR).
		if errno := n.fsys.errno("setattr", n.fsys.settleLength(n.id())); errno != 0 {
			return errno
		}
	}
	var sa meta.SetAttr
	changed := false
	if m, ok := in.GetMode(); ok {
		sa.Mode, changed = &m, true
	}
	if uid, ok := in.GetUID(); ok {
		sa.UID, changed = &uid, true
	}
	if gid, ok := in.GetGID(); ok {
		sa.GID, changed = &gid, true
	}
	if in.Valid&gofuse.FATTR_ATIME != 0 {
		changed = true
		if in.Valid&gofuse.FATTR_ATIME_NOW != 0 {
			sa.AtimeNow = true
		} else {
			sa.Atime = setTime(time.Unix(int64(in.Atime), int64(in.Atimensec)))
		}
	}
	if in.Valid&gofuse.FATTR_MTIME != 0 {
		changed = true
		if in.Valid&gofuse.FATTR_MTIME_NOW != 0 {
			sa.MtimeNow = true
		} else {
			sa.Mtime = setTime(time.Unix(int64(in.Mtime), int64(in.Mtimensec)))
		}
	}
	var ino meta.Inode
	var err error
	if changed && sa.Mode != nil && u.UID != 0 && sa.UID == nil && sa.GID == nil {
		// The kernel clears setuid/setgid after a write or truncate by
		// someone without CAP_FSETID by sending the file's mode without
		// them, as that caller, who may not be the owner. With
		// default_permissions the kernel has already refused any chmod(2)
		// the caller may not make, so a mode that only drops those bits is
		// that clearing: done as root, as the kernel did it on its own
		// behalf.
		var cur meta.Inode
		if cur, err = n.fsys.meta.Stat(c, root, n.self()); err != nil {
			return n.fsys.errno("setattr", err)
		}
		if dropsOnlySetID(cur.Mode, *sa.Mode) {
			u = root
		}
	}
	if changed {
		ino, err = n.fsys.meta.SetAttr(c, u, n.self(), sa)
	} else {
		ino, err = n.fsys.meta.Stat(c, root, n.self())
	}
	if err != nil {
		return n.fsys.errno("setattr", err)
	}
	n.fsys.fillAttr(c, &ino, since, &out.Attr)
	n.noteAttr(&out.Attr)
	return 0
}

// dropsOnlySetID reports whether mode to is mode from without its setuid
// or setgid bit (or both, or neither: meta may have cleared them already
// for the truncate that made the kernel send this), all else equal.
func dropsOnlySetID(from, to uint32) bool {
	const setID = syscall.S_ISUID | syscall.S_ISGID
	from, to = from&meta.ModePerm, to&meta.ModePerm
	return from&^setID == to&^setID && to&setID&^from == 0
}

// truncate changes a file's size: through the handle for ftruncate (the
// kernel has checked it is open for writing), else as the caller through
// the metadata service, then through any handle this mount has open for
// writing so that its view of the size (and buffered data) follows.
func (n *node) truncate(ctx context.Context, u meta.User, fh fs.FileHandle, size uint64) syscall.Errno {
	if h, ok := fh.(*fileHandle); ok && h.writable {
		f, err := h.file(ctx)
		if err != nil {
			return n.fsys.errno("truncate", err)
		}
		return n.fsys.errno("truncate", f.Truncate(int64(size)))
	}
	var f File // a file of this mount open for writing (not a lazy one: it holds nothing)
	if h := n.fsys.writableHandle(n.id()); h != nil {
		f = h.opened()
	}
	if f != nil {
		if err := f.Flush(); err != nil {
			return n.fsys.errno("truncate", err)
		}
	}
	if _, err := n.fsys.meta.Truncate(ctx, u, n.self(), size); err != nil {
		return n.fsys.errno("truncate", err)
	}
	if f != nil {
		return n.fsys.errno("truncate", f.Truncate(int64(size)))
	}
	return 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	since := n.fsys.releases.now()
	in, err := n.fsys.meta.Mkdir(opCtx(ctx), n.fsys.creds.user(ctx), n.child(name), mode&meta.ModePerm, false)
	if err != nil {
		return nil, n.fsys.errno("mkdir", err)
	}
	return n.newChild(ctx, &in, since, out), 0
}

// Mknod creates FIFOs, sockets and device nodes (metadata only: the kernel
// serves their I/O locally and never asks the mount) and regular files.
func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	since := n.fsys.releases.now()
	if t := mode & syscall.S_IFMT; t != 0 && t != syscall.S_IFREG {
		typ, ok := meta.FileTypeOfMode(mode)
		if !ok || !typ.IsSpecial() {
			return nil, syscall.EINVAL
		}
		in, err := n.fsys.meta.Mknod(opCtx(ctx), n.fsys.creds.user(ctx), n.child(name), typ, mode&meta.ModePerm, dev)
		if err != nil {
			return nil, n.fsys.errno("mknod", err)
		}
		return n.newChild(ctx, &in, since, out), 0
	}
	res, err := n.fsys.meta.Create(opCtx(ctx), n.fsys.creds.user(ctx), n.child(name),
		meta.CreateOptions{Mode: mode & meta.ModePerm, Exclusive: true})
	if err != nil {
		return nil, n.fsys.errno("mknod", err)
	}
	return n.newChild(ctx, &res.Inode, since, out), 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *gofuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	since := n.fsys.releases.now()
	h, in, errno := n.fsys.createFile(opCtx(ctx), n.fsys.creds.user(ctx), n.child(name), flags|syscall.O_CREAT, mode&meta.ModePerm)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return n.newChild(ctx, &in, since, out), h, n.fsys.fuseOpenFlags(flags), 0
}

// Open opens the file through the client, which reads the inode from meta.
// The kernel keeps attributes for AttrTimeout and cuts reads at the size
// it caches, so when the size or mtime differ from what this mount last told
// it (another client wrote the file), the kernel's attributes and pages of
// the inode are dropped before open returns: every open sees what was
// closed before it began (close-to-open consistency), whatever the timeout.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	h, errno := n.fsys.openFile(opCtx(ctx), n.fsys.creds.user(ctx), n.self(), flags&^(syscall.O_CREAT|syscall.O_EXCL), 0)
	if errno != 0 {
		return nil, 0, errno
	}
	var a gofuse.Attr
	in := h.inode()
	n.fsys.fillAttr(opCtx(ctx), &in, n.fsys.releases.now(), &a)
	if a.Size != n.kSize.Load() || int64(a.Mtime)*1e9+int64(a.Mtimensec) != n.kMtime.Load() {
		// ENOENT: the kernel holds no attributes of it; nothing to drop.
		if errno := n.NotifyContent(0, 0); errno != 0 && errno != syscall.ENOENT {
			n.fsys.log.Warn("cannot drop the kernel's cached attributes", "inode", n.id(), "errno", errno)
		}
		n.noteAttr(&a)
	}
	return h, n.fsys.fuseOpenFlags(flags), 0
}

// Fsync on a node without a file handle (fsync of a directory): every
// namespace change is already durable when its call returns.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if h, ok := fh.(*fileHandle); ok {
		return h.Fsync(ctx, flags)
	}
	return 0
}

// childIno is the inode id the kernel knows under name, 0 if none.
func (n *node) childIno(name string) uint64 {
	if c := n.GetChild(name); c != nil {
		return c.StableAttr().Ino
	}
	return 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	c := opCtx(ctx)
	if id := n.childIno(name); id != 0 {
		n.fsys.pinIfOpen(c, id)
	}
	return n.fsys.errno("unlink", n.fsys.meta.Unlink(c, n.fsys.creds.user(ctx), n.child(name)))
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.fsys.errno("rmdir", n.fsys.meta.Rmdir(opCtx(ctx), n.fsys.creds.user(ctx), n.child(name)))
}

const (
	renameNoReplace = 1 // RENAME_NOREPLACE
	renameExchange  = 2 // RENAME_EXCHANGE
)

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags&^(renameNoReplace|renameExchange) != 0 {
		return syscall.EINVAL // RENAME_WHITEOUT: overlayfs only
	}
	var mf meta.RenameFlags
	if flags&renameNoReplace != 0 {
		mf |= meta.RenameNoReplace
	}
	if flags&renameExchange != 0 {
		mf |= meta.RenameExchange
	}
	np := newParent.EmbeddedInode()
	c := opCtx(ctx)
	if flags&renameExchange == 0 {
		if dn, ok := newParent.(*node); ok {
			if id := dn.childIno(newName); id != 0 {
				n.fsys.pinIfOpen(c, id) // rename over an open file removes a name of it
			}
		}
	}
	dst := meta.PathAt{Parent: np.StableAttr().Ino, Path: newName}
	return n.fsys.errno("rename", n.fsys.meta.Rename(c, n.fsys.creds.user(ctx), n.child(name), dst, mf))
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	since := n.fsys.releases.now()
	src := meta.PathAt{Parent: target.EmbeddedInode().StableAttr().Ino, NoFollow: true}
	in, err := n.fsys.meta.Link(opCtx(ctx), n.fsys.creds.user(ctx), src, n.child(name))
	if err != nil {
		return nil, n.fsys.errno("link", err)
	}
	return n.newChild(ctx, &in, since, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	since := n.fsys.releases.now()
	in, err := n.fsys.meta.Symlink(opCtx(ctx), n.fsys.creds.user(ctx), n.child(name), target)
	if err != nil {
		return nil, n.fsys.errno("symlink", err)
	}
	return n.newChild(ctx, &in, since, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.fsys.meta.Readlink(opCtx(ctx), n.fsys.creds.user(ctx), n.self())
	if err != nil {
		return nil, n.fsys.errno("readlink", err)
	}
	return []byte(t), 0
}

// Statfs reports capacity in 4 KiB blocks. Inodes have no fixed limit, so
// the free count is reported as a large constant (df shows usage, not a cap).
func (n *node) Statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	st, err := n.fsys.meta.StatFS(opCtx(ctx))
	if err != nil {
		return n.fsys.errno("statfs", err)
	}
	const bsize = 4096
	const freeInodes = 1 << 32
	*out = gofuse.StatfsOut{
		Blocks:  st.Capacity / bsize,
		Bfree:   st.Free / bsize,
		Bavail:  st.Free / bsize,
		Files:   st.InodesAllocated + freeInodes,
		Ffree:   freeInodes,
		Bsize:   bsize,
		NameLen: meta.MaxNameLen,
		Frsize:  bsize,
	}
	return 0
}

// Xattrs follow the getxattr(2) size protocol: an empty buffer asks for the
// size, a short one is ERANGE.
// security.selinux is not kept per file (see selinuxXattr); names found
// absent are remembered for a while (see missingXattrs).
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr == selinuxXattr {
		return 0, syscall.EOPNOTSUPP
	}
	if n.fsys.xattrs.known(n.id(), attr) {
		return 0, syscall.ENODATA
	}
	gen := n.fsys.xattrs.generation()
	v, err := n.fsys.meta.GetXattr(opCtx(ctx), n.fsys.creds.user(ctx), n.self(), attr)
	if err != nil {
		errno := n.fsys.errno("getxattr", err)
		if errno == syscall.ENODATA {
			n.fsys.xattrs.add(n.id(), attr, gen)
		}
		return 0, errno
	}
	return copyOut(dest, v)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.fsys.meta.ListXattr(opCtx(ctx), n.fsys.creds.user(ctx), n.self())
	if err != nil {
		return 0, n.fsys.errno("listxattr", err)
	}
	var b strings.Builder
	for _, name := range names {
		b.WriteString(name)
		b.WriteByte(0)
	}
	return copyOut(dest, []byte(b.String()))
}

func copyOut(dest, v []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if attr == selinuxXattr {
		return syscall.EOPNOTSUPP
	}
	defer n.fsys.xattrs.forget(n.id())
	// XATTR_CREATE and XATTR_REPLACE have the values of meta.XattrCreate/Replace.
	err := n.fsys.meta.SetXattr(opCtx(ctx), n.fsys.creds.user(ctx), n.self(), attr, data, int(flags&(meta.XattrCreate|meta.XattrReplace)))
	return n.fsys.errno("setxattr", err)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	defer n.fsys.xattrs.forget(n.id())
	return n.fsys.errno("removexattr", n.fsys.meta.RemoveXattr(opCtx(ctx), n.fsys.creds.user(ctx), n.self(), attr))
}

// tmpfilePrefix names the entry an O_TMPFILE file has for the instant
// between its create and its unlink (Tmpfile).
const tmpfilePrefix = ".emberfs-tmpfile-"

// Tmpfile serves open(O_TMPFILE): a file without a name that lives while
// it is open and may be linked into place later (linkat through
// /proc/self/fd, or AT_EMPTY_PATH). Meta creates files under names only,
// so the file is created under a random hidden name, opened through the
// client (its session keeps the inode once it has no name) and unlinked
// before Tmpfile returns. A crash of this mount in between leaves the
// hidden name behind (docs/fuse.md).
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *gofuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	since := n.fsys.releases.now()
	c := opCtx(ctx)
	u := n.fsys.creds.user(ctx)
	name := fmt.Sprintf("%s%016x", tmpfilePrefix, rand.Uint64())
	res, err := n.fsys.meta.Create(c, u, n.child(name), meta.CreateOptions{Mode: mode & meta.ModePerm, Exclusive: true})
	if err != nil {
		return nil, nil, 0, n.fsys.errno("tmpfile", err)
	}
	f := n.fsys.openFlags(flags) &^ (syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC)
	file, err := n.fsys.openClient(c, root, meta.PathAt{Parent: res.Inode.ID}, f, 0)
	// The name goes whether or not the open worked: its session, if any,
	// keeps the inode.
	if uerr := n.fsys.meta.Unlink(c, root, n.child(name)); err == nil && uerr != nil {
		_ = file.Close()
		err = uerr
	}
	if err != nil {
		return nil, nil, 0, n.fsys.errno("tmpfile", err)
	}
	h := n.fsys.registerOpened(file, f)
	in := file.Inode()
	in.Nlink = 0
	return n.newChild(ctx, &in, since, out), h, n.fsys.fuseOpenFlags(flags), 0
}
