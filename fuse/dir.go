package fuse

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/emberfs/emberfs/service/meta"
)

// readdirPage is how many entries one metadata call returns.
const readdirPage = 512

// dirHandle is one opendir(3): it pages through the directory with stats,
// so readdirplus (ls -l, find) answers each entry's lookup from the page
// instead of one metadata call per entry. Offsets are entry positions;
// entries read so far are kept so telldir/seekdir can go back.
type dirHandle struct {
	n       *node
	entries []dirent
	next    int // position of the next entry to return
	cursor  string
	more    bool
	stats   map[string]*meta.Inode // stats of the current page, for readdirplus lookups
	since   uint64                 // fsys.releases before the page was read
}

type dirent struct {
	name string
	ino  uint64
	mode uint32
}

var (
	_ fs.FileReaddirenter   = (*dirHandle)(nil)
	_ fs.FileSeekdirer      = (*dirHandle)(nil)
	_ fs.FileLookuper       = (*dirHandle)(nil)
	_ fs.FileReleasedirer   = (*dirHandle)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
)

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	in, err := n.fsys.meta.Stat(opCtx(ctx), root, n.self())
	if err != nil {
		return nil, 0, n.fsys.errno("opendir", err)
	}
	if in.Type != meta.TypeDir {
		return nil, 0, syscall.ENOTDIR
	}
	parent := in.Parent
	if parent == 0 {
		parent = in.ID
	}
	d := &dirHandle{n: n, more: true, entries: []dirent{
		{name: ".", ino: in.ID, mode: syscall.S_IFDIR},
		{name: "..", ino: parent, mode: syscall.S_IFDIR},
	}}
	return d, 0, 0
}

func (d *dirHandle) fill(ctx context.Context) syscall.Errno {
	d.since = d.n.fsys.releases.now()
	page, err := d.n.fsys.meta.ReadDir(opCtx(ctx), d.n.fsys.creds.user(ctx), d.n.self(),
		meta.ReadDirOptions{Cursor: d.cursor, Limit: readdirPage, WithStat: true})
	if err != nil {
		return d.n.fsys.errno("readdir", err)
	}
	d.stats = make(map[string]*meta.Inode, len(page.Entries))
	for _, e := range page.Entries {
		d.entries = append(d.entries, dirent{name: e.Name, ino: e.ID, mode: typeMode(e.Type)})
		if e.Inode != nil {
			d.stats[e.Name] = e.Inode
		}
		d.cursor = e.Name
	}
	d.more = page.More && len(page.Entries) > 0
	return 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*gofuse.DirEntry, syscall.Errno) {
	if d.next >= len(d.entries) && d.more {
		if errno := d.fill(ctx); errno != 0 {
			return nil, errno
		}
	}
	if d.next >= len(d.entries) {
		return nil, 0
	}
	e := d.entries[d.next]
	d.next++
	return &gofuse.DirEntry{Name: e.name, Ino: e.ino, Mode: e.mode, Off: uint64(d.next)}, 0
}

// Seekdir moves to a position returned earlier (0 restarts and rereads:
// rewinddir must show entries created since opendir).
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		d.entries, d.next, d.cursor, d.more, d.stats = d.entries[:2], 0, "", true, nil
		return 0
	}
	if off > uint64(len(d.entries)) {
		return syscall.EINVAL
	}
	d.next = int(off)
	return 0
}

// Lookup answers readdirplus from the page's stats when it has them.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if in, ok := d.stats[name]; ok {
		return d.n.newChild(ctx, in, d.since, out), 0
	}
	return d.n.Lookup(ctx, name, out)
}

func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}
