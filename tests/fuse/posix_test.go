package fusetest

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emberfs/emberfs/fuse"
)

// The POSIX suite: one test per pjdfstest area, asserting errno values as
// root (in this process) and as unprivileged users (helper processes).

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	var got syscall.Errno
	if err != nil {
		e, ok := err.(syscall.Errno)
		if !ok {
			t.Fatalf("%s: error %v is not an errno", what, err)
		}
		got = e
	}
	if got != want {
		t.Fatalf("%s: errno %d (%v), want %d (%v)", what, int(got), got, int(want), want)
	}
}

func wantAs(t *testing.T, u user, want syscall.Errno, op string, args ...string) {
	t.Helper()
	if got := as(t, u, op, args...); got != want {
		t.Fatalf("uid %d: %s %v: errno %d (%v), want %d (%v)", u.uid, op, args, int(got), got, int(want), want)
	}
}

func lstat(t *testing.T, p string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func mkfile(t *testing.T, p string, mode uint32, uid, gid int) {
	t.Helper()
	fd, err := syscall.Open(p, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, mode)
	if err != nil {
		t.Fatalf("create %s: %v", p, err)
	}
	syscall.Close(fd)
	if err := syscall.Chmod(p, mode); err != nil { // no umask
		t.Fatal(err)
	}
	if err := syscall.Chown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
}

func mkdirOwned(t *testing.T, p string, mode uint32, uid, gid int) {
	t.Helper()
	if err := syscall.Mkdir(p, 0o700); err != nil {
		t.Fatalf("mkdir %s: %v", p, err)
	}
	if err := syscall.Chown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func TestPosixChmod(t *testing.T) {
	m := mount(t, fuse.Options{})
	f := m.path("f")
	mkfile(t, f, 0o644, int(alice.uid), int(alice.gid))
	before := lstat(t, f)
	time.Sleep(10 * time.Millisecond)
	wantErrno(t, "chmod", syscall.Chmod(f, 0o4751), 0)
	st := lstat(t, f)
	if st.Mode&0o7777 != 0o4751 {
		t.Fatalf("mode %o after chmod 4751", st.Mode&0o7777)
	}
	if st.Ctim.Nano() <= before.Ctim.Nano() {
		t.Fatal("chmod did not update ctime")
	}
	wantErrno(t, "chmod missing", syscall.Chmod(m.path("nope"), 0o644), syscall.ENOENT)
	wantErrno(t, "chmod through a file", syscall.Chmod(m.path("f", "x"), 0o644), syscall.ENOTDIR)
	wantErrno(t, "chmod long name", syscall.Chmod(m.path(strings.Repeat("n", 256)), 0o644), syscall.ENAMETOOLONG)
	// chmod follows symlinks.
	if err := syscall.Symlink("f", m.path("l")); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "chmod via symlink", syscall.Chmod(m.path("l"), 0o600), 0)
	if st := lstat(t, f); st.Mode&0o7777 != 0o600 {
		t.Fatalf("chmod through a symlink left mode %o", st.Mode&0o7777)
	}
	wantAs(t, alice, 0, "chmod", f, "640")
	wantAs(t, bob, syscall.EPERM, "chmod", f, "777")
	wantAs(t, nobody, syscall.EPERM, "chmod", f, "777")
	// A non-member's chmod cannot set setgid on a file: the bit is dropped.
	mkfile(t, m.path("g"), 0o644, int(alice.uid), 4242)
	wantAs(t, alice, 0, "chmod", m.path("g"), "2755")
	if st := lstat(t, m.path("g")); st.Mode&0o7777 != 0o755 {
		t.Fatalf("setgid by a non-member: mode %o, want 755", st.Mode&0o7777)
	}
}

func TestPosixChown(t *testing.T) {
	m := mount(t, fuse.Options{})
	f := m.path("f")
	mkfile(t, f, 0o6755, int(alice.uid), int(alice.gid))
	// Root changes owner; chown clears setuid/setgid of a file.
	wantErrno(t, "chown", syscall.Chown(f, int(bob.uid), int(bob.gid)), 0)
	st := lstat(t, f)
	if st.Uid != bob.uid || st.Gid != bob.gid || st.Mode&0o6000 != 0 {
		t.Fatalf("after chown: %d:%d mode %o", st.Uid, st.Gid, st.Mode&0o7777)
	}
	wantErrno(t, "chown back", syscall.Chown(f, int(alice.uid), int(alice.gid)), 0)
	// The owner may not give the file away, nor chgrp to a group it lacks...
	wantAs(t, alice, syscall.EPERM, "chown", f, "2002", "-1")
	wantAs(t, alice, syscall.EPERM, "chown", f, "-1", "4242")
	// ...but may chgrp to a supplementary group (read from /proc by the mount).
	wantAs(t, alice, 0, "chown", f, "-1", "3001")
	if st := lstat(t, f); st.Gid != 3001 {
		t.Fatalf("gid %d after chgrp to a supplementary group", st.Gid)
	}
	wantAs(t, bob, syscall.EPERM, "chown", f, "-1", "2002")
	wantErrno(t, "chown missing", syscall.Chown(m.path("nope"), 1, 1), syscall.ENOENT)
	// lchown changes the symlink itself.
	if err := syscall.Symlink("f", m.path("l")); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "lchown", syscall.Lchown(m.path("l"), 77, 88), 0)
	if st := lstat(t, m.path("l")); st.Uid != 77 || st.Gid != 88 {
		t.Fatalf("lchown: symlink owned by %d:%d", st.Uid, st.Gid)
	}
	if st := lstat(t, f); st.Uid != alice.uid {
		t.Fatal("lchown changed the target")
	}
}

func TestPosixLink(t *testing.T) {
	m := mount(t, fuse.Options{})
	f := m.path("f")
	mkfile(t, f, 0o644, 0, 0)
	wantErrno(t, "link", syscall.Link(f, m.path("g")), 0)
	a, b := lstat(t, f), lstat(t, m.path("g"))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Fatalf("link: inodes %d/%d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	wantErrno(t, "link onto existing", syscall.Link(f, m.path("g")), syscall.EEXIST)
	wantErrno(t, "link missing", syscall.Link(m.path("nope"), m.path("h")), syscall.ENOENT)
	if err := syscall.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "link a directory", syscall.Link(m.path("d"), m.path("dl")), syscall.EPERM)
	wantErrno(t, "link into a file", syscall.Link(f, m.path("f", "x")), syscall.ENOTDIR)
	// Unprivileged: needs write on the target directory.
	mkdirOwned(t, m.path("ro"), 0o755, 0, 0)
	mkfile(t, m.path("alices"), 0o644, int(alice.uid), int(alice.gid))
	wantAs(t, alice, syscall.EACCES, "link", m.path("alices"), m.path("ro", "x"))
	wantAs(t, alice, 0, "link", m.path("alices"), m.path("alices2"))
	// protected_hardlinks: linking another user's file you cannot write is EPERM.
	if b, _ := os.ReadFile("/proc/sys/fs/protected_hardlinks"); strings.TrimSpace(string(b)) == "1" {
		wantAs(t, alice, syscall.EPERM, "link", f, m.path("x"))
	}
	wantErrno(t, "unlink one name", syscall.Unlink(f), 0)
	if st := lstat(t, m.path("g")); st.Nlink != 1 {
		t.Fatalf("nlink %d after unlinking one of two names", st.Nlink)
	}
}

func TestPosixMkdir(t *testing.T) {
	m := mount(t, fuse.Options{})
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	d := m.path("d")
	wantErrno(t, "mkdir", syscall.Mkdir(d, 0o777), 0)
	if st := lstat(t, d); st.Mode&syscall.S_IFMT != syscall.S_IFDIR || st.Mode&0o7777 != 0o755 {
		t.Fatalf("mkdir 777 with umask 022: mode %o", st.Mode)
	}
	wantErrno(t, "mkdir existing", syscall.Mkdir(d, 0o755), syscall.EEXIST)
	wantErrno(t, "mkdir missing parent", syscall.Mkdir(m.path("x", "y"), 0o755), syscall.ENOENT)
	mkfile(t, m.path("f"), 0o644, 0, 0)
	wantErrno(t, "mkdir under a file", syscall.Mkdir(m.path("f", "y"), 0o755), syscall.ENOTDIR)
	wantErrno(t, "mkdir long name", syscall.Mkdir(m.path(strings.Repeat("n", 256)), 0o755), syscall.ENAMETOOLONG)
	wantErrno(t, "mkdir 255-byte name", syscall.Mkdir(m.path(strings.Repeat("n", 255)), 0o755), 0)
	wantAs(t, alice, syscall.EACCES, "mkdir", m.path("d", "a"), "755")
	wantAs(t, alice, 0, "mkdir", m.path("a"), "750")
	if st := lstat(t, m.path("a")); st.Uid != alice.uid || st.Gid != alice.gid {
		t.Fatalf("new directory owned by %d:%d, want alice", st.Uid, st.Gid)
	}
	// A setgid directory passes on its group and the bit.
	mkdirOwned(t, m.path("sg"), 0o2777, 0, 4242)
	wantAs(t, alice, 0, "mkdir", m.path("sg", "sub"), "755")
	if st := lstat(t, m.path("sg", "sub")); st.Gid != 4242 || st.Mode&syscall.S_ISGID == 0 {
		t.Fatalf("subdirectory of a setgid directory: gid %d mode %o", st.Gid, st.Mode&0o7777)
	}
}

func TestPosixMkfifo(t *testing.T) {
	m := mount(t, fuse.Options{})
	// FIFOs and device nodes are metadata (tests/posix compares them with ext4).
	wantErrno(t, "mkfifo", syscall.Mkfifo(m.path("p"), 0o644), 0)
	wantErrno(t, "mknod chr", syscall.Mknod(m.path("c"), syscall.S_IFCHR|0o644, 0x0101), 0)
	if st := lstat(t, m.path("c")); st.Mode != syscall.S_IFCHR|0o644 || st.Rdev != 0x0101 {
		t.Fatalf("mknod S_IFCHR: mode %o rdev %#x", st.Mode, st.Rdev)
	}
	wantAs(t, alice, syscall.EPERM, "mknod-chr", m.path("c2"))
	wantErrno(t, "mknod reg", syscall.Mknod(m.path("r"), syscall.S_IFREG|0o640, 0), 0)
	if st := lstat(t, m.path("r")); st.Mode != syscall.S_IFREG|0o640 && st.Mode != syscall.S_IFREG|0o600 {
		t.Fatalf("mknod S_IFREG: mode %o", st.Mode)
	}
	if st := lstat(t, m.path("p")); st.Mode != syscall.S_IFIFO|0o644 {
		t.Fatalf("mkfifo: mode %o", st.Mode)
	}
}

func TestPosixOpen(t *testing.T) {
	m := mount(t, fuse.Options{})
	f := m.path("f")
	mkfile(t, f, 0o600, 0, 0)
	if err := os.WriteFile(f, []byte("0123456789"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := syscall.Open(f, syscall.O_CREAT|syscall.O_EXCL|syscall.O_RDWR, 0o644)
	wantErrno(t, "O_EXCL on existing", err, syscall.EEXIST)
	_, err = syscall.Open(m.path("nope"), syscall.O_RDONLY, 0)
	wantErrno(t, "open missing", err, syscall.ENOENT)
	_, err = syscall.Open(m.path("f", "x"), syscall.O_RDONLY, 0)
	wantErrno(t, "open through a file", err, syscall.ENOTDIR)
	if err := syscall.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = syscall.Open(m.path("d"), syscall.O_RDWR, 0)
	wantErrno(t, "open a directory for writing", err, syscall.EISDIR)
	_, err = syscall.Open(f, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	wantErrno(t, "O_DIRECTORY on a file", err, syscall.ENOTDIR)
	if err := syscall.Symlink("f", m.path("l")); err != nil {
		t.Fatal(err)
	}
	_, err = syscall.Open(m.path("l"), syscall.O_RDONLY|syscall.O_NOFOLLOW, 0)
	wantErrno(t, "O_NOFOLLOW on a symlink", err, syscall.ELOOP)
	_, err = syscall.Open(m.path(strings.Repeat("n", 256)), syscall.O_CREAT|syscall.O_RDWR, 0o644)
	wantErrno(t, "create long name", err, syscall.ENAMETOOLONG)
	// O_TRUNC empties the file.
	fd, err := syscall.Open(f, syscall.O_WRONLY|syscall.O_TRUNC, 0)
	wantErrno(t, "O_TRUNC", err, 0)
	syscall.Close(fd)
	if st := lstat(t, f); st.Size != 0 {
		t.Fatalf("size %d after O_TRUNC", st.Size)
	}
	// Permissions as other users.
	wantAs(t, alice, syscall.EACCES, "open", f, "r")
	wantAs(t, alice, syscall.EACCES, "open", f, "w")
	if err := syscall.Chmod(f, 0o604); err != nil {
		t.Fatal(err)
	}
	wantAs(t, alice, 0, "open", f, "r")
	wantAs(t, alice, syscall.EACCES, "open", f, "rw")
	mkdirOwned(t, m.path("ro"), 0o755, 0, 0)
	wantAs(t, alice, syscall.EACCES, "open", m.path("ro", "new"), "w,creat", "644")
	mkdirOwned(t, m.path("nox"), 0o766, 0, 0)
	mkfile(t, m.path("nox", "f"), 0o666, 0, 0)
	wantAs(t, alice, syscall.EACCES, "open", m.path("nox", "f"), "r")
	// Group access through a supplementary group.
	mkfile(t, m.path("grp"), 0o060, 0, 3001)
	wantAs(t, alice, 0, "open", m.path("grp"), "rw")
	wantAs(t, bob, syscall.EACCES, "open", m.path("grp"), "r")
}

func TestPosixRename(t *testing.T) {
	m := mount(t, fuse.Options{})
	mkfile(t, m.path("a"), 0o644, 0, 0)
	mkfile(t, m.path("b"), 0o644, 0, 0)
	ia := lstat(t, m.path("a")).Ino
	wantErrno(t, "rename over a file", syscall.Rename(m.path("a"), m.path("b")), 0)
	if lstat(t, m.path("b")).Ino != ia {
		t.Fatal("rename over a file: target is not the moved inode")
	}
	wantErrno(t, "rename missing", syscall.Rename(m.path("a"), m.path("c")), syscall.ENOENT)
	for _, d := range []string{"d1", "d2", "d3"} {
		if err := syscall.Mkdir(m.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mkfile(t, m.path("d2", "x"), 0o644, 0, 0)
	wantErrno(t, "dir over non-empty dir", syscall.Rename(m.path("d1"), m.path("d2")), syscall.ENOTEMPTY)
	wantErrno(t, "file over dir", syscall.Rename(m.path("b"), m.path("d1")), syscall.EISDIR)
	wantErrno(t, "dir over file", syscall.Rename(m.path("d1"), m.path("b")), syscall.ENOTDIR)
	wantErrno(t, "dir into itself", syscall.Rename(m.path("d2"), m.path("d2", "sub")), syscall.EINVAL)
	wantErrno(t, "dir over empty dir", syscall.Rename(m.path("d1"), m.path("d3")), 0)
	wantErrno(t, "dir across dirs", syscall.Rename(m.path("d3"), m.path("d2", "moved")), 0)
	if st := lstat(t, m.path("d2", "moved")); st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Fatal("moved directory is not a directory")
	}
	// renameat2 flags.
	mkfile(t, m.path("c"), 0o644, 0, 0)
	err := unix.Renameat2(unix.AT_FDCWD, m.path("b"), unix.AT_FDCWD, m.path("c"), unix.RENAME_NOREPLACE)
	wantErrno(t, "RENAME_NOREPLACE onto existing", err, syscall.EEXIST)
	err = unix.Renameat2(unix.AT_FDCWD, m.path("b"), unix.AT_FDCWD, m.path("e"), unix.RENAME_NOREPLACE)
	wantErrno(t, "RENAME_NOREPLACE onto free name", err, 0)
	ie, ic := lstat(t, m.path("e")).Ino, lstat(t, m.path("c")).Ino
	err = unix.Renameat2(unix.AT_FDCWD, m.path("e"), unix.AT_FDCWD, m.path("c"), unix.RENAME_EXCHANGE)
	wantErrno(t, "RENAME_EXCHANGE", err, 0)
	if lstat(t, m.path("e")).Ino != ic || lstat(t, m.path("c")).Ino != ie {
		t.Fatal("RENAME_EXCHANGE did not swap the entries")
	}
	err = unix.Renameat2(unix.AT_FDCWD, m.path("e"), unix.AT_FDCWD, m.path("zz"), unix.RENAME_EXCHANGE)
	wantErrno(t, "RENAME_EXCHANGE with a missing target", err, syscall.ENOENT)
	err = unix.Renameat2(unix.AT_FDCWD, m.path("e"), unix.AT_FDCWD, m.path("zz"), unix.RENAME_WHITEOUT)
	wantErrno(t, "RENAME_WHITEOUT", err, syscall.EINVAL)
	// Sticky directory: only the entry's owner (or the directory's) may move it.
	mkdirOwned(t, m.path("sticky"), 0o1777, 0, 0)
	mkfile(t, m.path("sticky", "alices"), 0o644, int(alice.uid), int(alice.gid))
	wantAs(t, bob, syscall.EPERM, "rename", m.path("sticky", "alices"), m.path("sticky", "bobs"))
	wantAs(t, alice, 0, "rename", m.path("sticky", "alices"), m.path("sticky", "mine"))
	mkdirOwned(t, m.path("ro"), 0o755, 0, 0)
	wantAs(t, alice, syscall.EACCES, "rename", m.path("sticky", "mine"), m.path("ro", "x"))
}

func TestPosixRmdir(t *testing.T) {
	m := mount(t, fuse.Options{})
	if err := syscall.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	mkfile(t, m.path("d", "f"), 0o644, 0, 0)
	wantErrno(t, "rmdir non-empty", syscall.Rmdir(m.path("d")), syscall.ENOTEMPTY)
	wantErrno(t, "rmdir a file", syscall.Rmdir(m.path("d", "f")), syscall.ENOTDIR)
	wantErrno(t, "rmdir missing", syscall.Rmdir(m.path("nope")), syscall.ENOENT)
	wantErrno(t, "rmdir .", syscall.Rmdir(m.path("d")+"/."), syscall.EINVAL)
	wantErrno(t, "unlink", syscall.Unlink(m.path("d", "f")), 0)
	wantErrno(t, "rmdir empty", syscall.Rmdir(m.path("d")), 0)
	if _, err := os.Lstat(m.path("d")); !os.IsNotExist(err) {
		t.Fatalf("directory still there after rmdir: %v", err)
	}
	mkdirOwned(t, m.path("sticky"), 0o1777, 0, 0)
	mkdirOwned(t, m.path("sticky", "alices"), 0o755, int(alice.uid), int(alice.gid))
	wantAs(t, bob, syscall.EPERM, "rmdir", m.path("sticky", "alices"))
	wantAs(t, alice, 0, "rmdir", m.path("sticky", "alices"))
	mkdirOwned(t, m.path("ro"), 0o755, 0, 0)
	mkdirOwned(t, m.path("ro", "sub"), 0o777, 0, 0)
	wantAs(t, alice, syscall.EACCES, "rmdir", m.path("ro", "sub"))
}

func TestPosixSymlink(t *testing.T) {
	m := mount(t, fuse.Options{})
	wantErrno(t, "symlink", syscall.Symlink("some/where", m.path("l")), 0)
	buf := make([]byte, 64)
	n, err := syscall.Readlink(m.path("l"), buf)
	if err != nil || string(buf[:n]) != "some/where" {
		t.Fatalf("readlink: %q %v", buf[:n], err)
	}
	st := lstat(t, m.path("l"))
	if st.Mode&syscall.S_IFMT != syscall.S_IFLNK || st.Size != int64(len("some/where")) {
		t.Fatalf("symlink lstat: mode %o size %d", st.Mode, st.Size)
	}
	wantErrno(t, "symlink onto existing", syscall.Symlink("x", m.path("l")), syscall.EEXIST)
	wantErrno(t, "symlink in missing dir", syscall.Symlink("x", m.path("nope", "l")), syscall.ENOENT)
	_, err = os.Stat(m.path("l"))
	if !os.IsNotExist(err) {
		t.Fatalf("stat through a dangling symlink: %v", err)
	}
	wantErrno(t, "symlink loop", syscall.Symlink("loop", m.path("loop")), 0)
	_, err = syscall.Open(m.path("loop"), syscall.O_RDONLY, 0)
	wantErrno(t, "open a symlink loop", err, syscall.ELOOP)
	_, err = syscall.Readlink(m.path("nope"), buf)
	wantErrno(t, "readlink missing", err, syscall.ENOENT)
	mkfile(t, m.path("f"), 0o644, 0, 0)
	_, err = syscall.Readlink(m.path("f"), buf)
	wantErrno(t, "readlink a file", err, syscall.EINVAL)
	mkdirOwned(t, m.path("ro"), 0o755, 0, 0)
	wantAs(t, alice, syscall.EACCES, "symlink", "x", m.path("ro", "l"))
	wantAs(t, alice, 0, "symlink", "x", m.path("al"))
	if st := lstat(t, m.path("al")); st.Uid != alice.uid {
		t.Fatalf("symlink owned by %d, want alice", st.Uid)
	}
}

func TestPosixTruncate(t *testing.T) {
	m := mount(t, fuse.Options{})
	f := m.path("f")
	if err := os.WriteFile(f, []byte("hello world"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "truncate grow", syscall.Truncate(f, 1<<20), 0)
	if st := lstat(t, f); st.Size != 1<<20 {
		t.Fatalf("size %d after growing truncate", st.Size)
	}
	wantErrno(t, "truncate shrink", syscall.Truncate(f, 5), 0)
	if b, err := os.ReadFile(f); err != nil || string(b) != "hello" {
		t.Fatalf("after truncate to 5: %q %v", b, err)
	}
	// ftruncate through an open handle, then read through another.
	fh, err := os.OpenFile(f, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(2); err != nil {
		t.Fatal(err)
	}
	if st, _ := fh.Stat(); st.Size() != 2 {
		t.Fatalf("fstat size %d after ftruncate 2", st.Size())
	}
	fh.Close()
	if b, _ := os.ReadFile(f); string(b) != "he" {
		t.Fatalf("after ftruncate: %q", b)
	}
	if err := syscall.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "truncate a directory", syscall.Truncate(m.path("d"), 0), syscall.EISDIR)
	wantErrno(t, "truncate missing", syscall.Truncate(m.path("nope"), 0), syscall.ENOENT)
	wantErrno(t, "truncate negative", syscall.Truncate(f, -1), syscall.EINVAL)
	wantAs(t, alice, syscall.EACCES, "truncate", f, "0")
	if err := syscall.Chmod(f, 0o666); err != nil {
		t.Fatal(err)
	}
	wantAs(t, alice, 0, "truncate", f, "1")
	if st := lstat(t, f); st.Size != 1 {
		t.Fatalf("size %d after alice's truncate", st.Size)
	}
}

func TestPosixUnlink(t *testing.T) {
	m := mount(t, fuse.Options{})
	f := m.path("f")
	if err := os.WriteFile(f, []byte("still here"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "unlink missing", syscall.Unlink(m.path("nope")), syscall.ENOENT)
	if err := syscall.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "unlink a directory", syscall.Unlink(m.path("d")), syscall.EISDIR)
	wantErrno(t, "unlink through a file", syscall.Unlink(m.path("f", "x")), syscall.ENOTDIR)
	// Unlinked while open (read-only): stays readable until closed.
	r, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "unlink open file", syscall.Unlink(f), 0)
	if _, err := os.Lstat(f); !os.IsNotExist(err) {
		t.Fatalf("name still there after unlink: %v", err)
	}
	testCluster.Meta.Server().CollectGarbage(t.Context(), 1000) // a removal would drop the data now
	buf := make([]byte, 64)
	n, err := r.ReadAt(buf, 0)
	if string(buf[:n]) != "still here" {
		t.Fatalf("reading an unlinked open file: %q %v", buf[:n], err)
	}
	r.Close()
	// Unlinked while open for writing: writes and reads go on.
	w, err := os.OpenFile(m.path("w"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "unlink file open for writing", syscall.Unlink(m.path("w")), 0)
	if _, err := w.WriteAt([]byte("written after unlink"), 0); err != nil {
		t.Fatal(err)
	}
	n, _ = w.ReadAt(buf, 0)
	if string(buf[:n]) != "written after unlink" {
		t.Fatalf("read back from unlinked file: %q", buf[:n])
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(w.Fd()), &st); err != nil || st.Nlink != 0 {
		t.Fatalf("fstat of an unlinked file: nlink %d err %v", st.Nlink, err)
	}
	w.Close()
	// Permissions.
	mkdirOwned(t, m.path("sticky"), 0o1777, 0, 0)
	mkfile(t, m.path("sticky", "alices"), 0o666, int(alice.uid), int(alice.gid))
	wantAs(t, bob, syscall.EPERM, "unlink", m.path("sticky", "alices"))
	wantAs(t, alice, 0, "unlink", m.path("sticky", "alices"))
	mkdirOwned(t, m.path("ro"), 0o755, 0, 0)
	mkfile(t, m.path("ro", "f"), 0o666, 0, 0)
	wantAs(t, alice, syscall.EACCES, "unlink", m.path("ro", "f"))
}

func TestPosixUtimensat(t *testing.T) {
	m := mount(t, fuse.Options{})
	f := m.path("f")
	mkfile(t, f, 0o644, int(alice.uid), int(alice.gid))
	ts := []unix.Timespec{{Sec: 1000, Nsec: 5}, {Sec: 2000, Nsec: 7}}
	wantErrno(t, "utimensat", unix.UtimesNanoAt(unix.AT_FDCWD, f, ts, 0), 0)
	st := lstat(t, f)
	if st.Atim.Sec != 1000 || st.Atim.Nsec != 5 || st.Mtim.Sec != 2000 || st.Mtim.Nsec != 7 {
		t.Fatalf("times after utimensat: atime %v mtime %v", st.Atim, st.Mtim)
	}
	// UTIME_OMIT leaves a time alone.
	ts2 := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: 3000}}
	wantErrno(t, "utimensat omit", unix.UtimesNanoAt(unix.AT_FDCWD, f, ts2, 0), 0)
	if st := lstat(t, f); st.Atim.Sec != 1000 || st.Mtim.Sec != 3000 {
		t.Fatalf("UTIME_OMIT: atime %d mtime %d", st.Atim.Sec, st.Mtim.Sec)
	}
	wantErrno(t, "utimensat missing", unix.UtimesNanoAt(unix.AT_FDCWD, m.path("nope"), ts, 0), syscall.ENOENT)
	// Symlink itself with AT_SYMLINK_NOFOLLOW.
	if err := syscall.Symlink("f", m.path("l")); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "lutimes", unix.UtimesNanoAt(unix.AT_FDCWD, m.path("l"), []unix.Timespec{{Sec: 42}, {Sec: 43}}, unix.AT_SYMLINK_NOFOLLOW), 0)
	if st := lstat(t, m.path("l")); st.Mtim.Sec != 43 {
		t.Fatalf("symlink mtime %d after lutimes", st.Mtim.Sec)
	}
	if st := lstat(t, f); st.Mtim.Sec != 3000 {
		t.Fatal("lutimes changed the target")
	}
	// Explicit times: owner or root. "now": also anyone who may write.
	wantAs(t, alice, 0, "utimens", f, "5000")
	wantAs(t, bob, syscall.EPERM, "utimens", f, "6000")
	wantAs(t, bob, syscall.EACCES, "utimens-now", f)
	if err := syscall.Chmod(f, 0o666); err != nil {
		t.Fatal(err)
	}
	before := lstat(t, f).Mtim.Sec
	wantAs(t, bob, 0, "utimens-now", f)
	wantAs(t, bob, syscall.EPERM, "utimens", f, "6000")
	if after := lstat(t, f).Mtim.Sec; after <= before || after < time.Now().Unix()-60 {
		t.Fatalf("UTIME_NOW by a writer: mtime %d (was %d)", after, before)
	}
}

func TestXattrs(t *testing.T) {
	m := mount(t, fuse.Options{})
	f := m.path("f")
	mkfile(t, f, 0o644, int(alice.uid), int(alice.gid))
	wantErrno(t, "setxattr", unix.Setxattr(f, "user.k", []byte("v1"), 0), 0)
	wantErrno(t, "XATTR_CREATE on existing", unix.Setxattr(f, "user.k", []byte("v2"), unix.XATTR_CREATE), syscall.EEXIST)
	wantErrno(t, "XATTR_REPLACE on missing", unix.Setxattr(f, "user.other", []byte("v"), unix.XATTR_REPLACE), syscall.ENODATA)
	wantErrno(t, "XATTR_REPLACE", unix.Setxattr(f, "user.k", []byte("value-2"), unix.XATTR_REPLACE), 0)
	buf := make([]byte, 64)
	n, err := unix.Getxattr(f, "user.k", buf)
	if err != nil || string(buf[:n]) != "value-2" {
		t.Fatalf("getxattr: %q %v", buf[:n], err)
	}
	if n, err := unix.Getxattr(f, "user.k", nil); err != nil || n != len("value-2") {
		t.Fatalf("getxattr size query: %d %v", n, err)
	}
	_, err = unix.Getxattr(f, "user.k", make([]byte, 2))
	wantErrno(t, "getxattr small buffer", err, syscall.ERANGE)
	_, err = unix.Getxattr(f, "user.missing", buf)
	wantErrno(t, "getxattr missing", err, syscall.ENODATA)
	wantErrno(t, "setxattr 2", unix.Setxattr(f, "user.j", []byte{}, 0), 0)
	n, err = unix.Listxattr(f, buf)
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	if err != nil || len(names) != 2 || !strings.Contains(string(buf[:n]), "user.k\x00") {
		t.Fatalf("listxattr: %q %v", buf[:n], err)
	}
	wantErrno(t, "removexattr", unix.Removexattr(f, "user.k"), 0)
	wantErrno(t, "removexattr again", unix.Removexattr(f, "user.k"), syscall.ENODATA)
	wantErrno(t, "unsupported namespace", unix.Setxattr(f, "bogus.k", []byte("v"), 0), syscall.EOPNOTSUPP)
	// user.* follows the file's permission bits.
	wantAs(t, bob, 0, "getxattr", f, "user.j")
	wantAs(t, bob, syscall.EACCES, "setxattr", f, "user.b", "x")
	wantAs(t, alice, 0, "setxattr", f, "user.a", "x")
}

func TestStatfsAndReaddir(t *testing.T) {
	m := mount(t, fuse.Options{})
	var st unix.Statfs_t
	if err := unix.Statfs(m.dir, &st); err != nil {
		t.Fatal(err)
	}
	// Capacity comes from the storage targets (through mgmtd and meta).
	if st.Blocks == 0 || st.Namelen != 255 || st.Bsize != 4096 || st.Bavail > st.Bfree || st.Bfree > st.Blocks || st.Ffree > st.Files {
		t.Fatalf("statfs: %+v", st)
	}
	// More entries than one metadata page, listed with and without stats.
	const n = 1300
	if err := os.Mkdir(m.path("big"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(m.path("big", "f"+strings.Repeat("x", i%7)+"-"+strconv.Itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir(m.path("big"))
	if err != nil || len(ents) != n {
		t.Fatalf("readdir: %d entries, %v", len(ents), err)
	}
	out := sh(t, `ls -la '`+m.path("big")+`' | tail -n +2 | wc -l`)
	if strings.TrimSpace(out) != strconv.Itoa(n+2) {
		t.Fatalf("ls -la lists %s lines, want %d (with . and ..)", strings.TrimSpace(out), n+2)
	}
}
