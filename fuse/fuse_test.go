package fuse

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/emberfs/emberfs/service/meta"
)

func TestParseGroups(t *testing.T) {
	status := "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nNgid:\t0\n"
	if got := parseGroups([]byte(status)); !slices.Equal(got, []uint32{4, 24, 27, 1000}) {
		t.Fatalf("groups %v", got)
	}
	if got := parseGroups([]byte("Groups:\t\nX: 1\n")); len(got) != 0 {
		t.Fatalf("empty Groups line gave %v", got)
	}
	if got := parseGroups([]byte("Name: x\n")); got != nil {
		t.Fatalf("no Groups line gave %v", got)
	}
}

func TestCredCacheRereadsOnExpiryAndOtherUser(t *testing.T) {
	dir := t.TempDir()
	write := func(groups string) {
		if err := os.MkdirAll(filepath.Join(dir, "42"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "42", "status"), []byte("Groups:\t"+groups+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(1000, 0)
	c := newCredCache()
	c.procDir, c.now = dir, func() time.Time { return now }
	write("7 8")
	if g := c.groups(42, 1, 1); !slices.Equal(g, []uint32{7, 8}) {
		t.Fatalf("groups %v", g)
	}
	write("9")
	if g := c.groups(42, 1, 1); !slices.Equal(g, []uint32{7, 8}) {
		t.Fatalf("cached groups %v", g)
	}
	if g := c.groups(42, 2, 1); !slices.Equal(g, []uint32{9}) {
		t.Fatalf("a reused thread id of another user must be reread, got %v", g)
	}
	write("10")
	now = now.Add(2 * groupsTTL)
	if g := c.groups(42, 2, 1); !slices.Equal(g, []uint32{10}) {
		t.Fatalf("expired entry not reread: %v", g)
	}
	if g := c.groups(99, 1, 1); g != nil {
		t.Fatalf("a vanished process has groups %v", g)
	}
}

func TestCopyOut(t *testing.T) {
	if n, e := copyOut(nil, []byte("abc")); n != 3 || e != 0 {
		t.Fatalf("size query: %d %v", n, e)
	}
	if _, e := copyOut(make([]byte, 2), []byte("abc")); e != syscall.ERANGE {
		t.Fatalf("short buffer: %v", e)
	}
	buf := make([]byte, 8)
	if n, e := copyOut(buf, []byte("abc")); n != 3 || e != 0 || string(buf[:3]) != "abc" {
		t.Fatalf("copy: %d %v %q", n, e, buf)
	}
}

type sizedFile struct {
	File
	size int64
}

func (f sizedFile) Size() int64 { return f.size }

func TestFillAttrPrefersOpenWriterSize(t *testing.T) {
	fsys := newFileSystem(nil, Options{Logger: slog.Default()})
	in := meta.Inode{ID: 5000, Type: meta.TypeFile, Mode: 0o4755, UID: 3, GID: 4, Nlink: 2, Size: 10}
	var a gofuse.Attr
	fsys.fillAttr(t.Context(), &in, fsys.releases.now(), &a)
	if a.Mode != syscall.S_IFREG|0o4755 || a.Size != 10 || a.Nlink != 2 || a.Uid != 3 || a.Gid != 4 || a.Ino != 5000 {
		t.Fatalf("attr %+v", a)
	}
	r := &fileHandle{fsys: fsys, id: 5000}
	r.cur.Store(&openedFile{sizedFile{size: 1}})
	fsys.register(r)
	fsys.fillAttr(t.Context(), &in, fsys.releases.now(), &a)
	if a.Size != 10 {
		t.Fatalf("a read-only handle changed the size to %d", a.Size)
	}
	w := &fileHandle{fsys: fsys, id: 5000, writable: true}
	w.cur.Store(&openedFile{sizedFile{size: 1 << 20}})
	fsys.register(w)
	lazy := &fileHandle{fsys: fsys, id: 5000, writable: true} // created, not opened: holds no size
	fsys.register(lazy)
	fsys.fillAttr(t.Context(), &in, fsys.releases.now(), &a)
	if a.Size != 1<<20 || a.Blocks != 2048 {
		t.Fatalf("size %d blocks %d with a writer at 1 MiB", a.Size, a.Blocks)
	}
	if pin := fsys.unregister(w); pin != nil {
		t.Fatal("unexpected pin")
	}
	fsys.unregister(r)
	fsys.unregister(lazy)
	if _, ok, releasing := fsys.openSize(5000); ok || releasing != nil {
		t.Fatal("sizes of unregistered handles reported")
	}
	if len(fsys.open) != 0 {
		t.Fatal("open table not emptied")
	}
}

// TestReleaseLog: an attribute read must re-read the size when a handle of
// its own inode was released while it ran, and only then (or when the log
// overflowed and cannot tell).
func TestReleaseLog(t *testing.T) {
	var l releaseLog
	since := l.now()
	if l.releasedSince(7, since) {
		t.Fatal("no release yet, but releasedSince says yes")
	}
	l.add(8)
	if l.releasedSince(7, since) || !l.releasedSince(8, since) {
		t.Fatal("release of inode 8 must count for 8 only")
	}
	after := l.now()
	l.add(7)
	if !l.releasedSince(7, since) || !l.releasedSince(7, after) || l.releasedSince(8, after) {
		t.Fatal("release of inode 7 after the second read not seen")
	}
	for i := 0; i < 300; i++ {
		l.add(9)
	}
	if !l.releasedSince(7, after) {
		t.Fatal("an overflowed log must answer yes")
	}
}

// O_APPEND reaches the client (which asks meta for each append's offset);
// flags the client has no use for do not.
func TestOpenFlagsKeepAppend(t *testing.T) {
	fsys := newFileSystem(nil, Options{Logger: slog.Default()})
	got := fsys.openFlags(syscall.O_WRONLY | syscall.O_APPEND | syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC | syscall.O_NOATIME)
	if got != syscall.O_WRONLY|syscall.O_APPEND|syscall.O_CREAT|syscall.O_EXCL|syscall.O_TRUNC {
		t.Fatalf("flags %#o", got)
	}
	if fsys.fuseOpenFlags(syscall.O_WRONLY|syscall.O_APPEND)&gofuse.FOPEN_DIRECT_IO == 0 {
		t.Fatal("an O_APPEND open must bypass the page cache (its writes land where meta says)")
	}
}
