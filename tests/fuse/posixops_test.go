package fusetest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/service/meta"
)

// errnoCase is one system call and the errno Linux gives for it on ext4.
// Each runs in a fresh directory prepared by setup, on the mount and on a
// local directory of this machine (ext4 here): both must give want, so a
// wrong expectation fails as surely as a wrong answer.
type errnoCase struct {
	name string
	op   func(d string) error
	want syscall.Errno
}

// mountDiffers are the intended differences from ext4 (docs/fuse.md):
// what the mount answers instead of errnoCase.want.
var mountDiffers = map[string]syscall.Errno{}

// errnoSetup makes, in d: file f (5 bytes), empty dir e, dir n holding
// file n/x, symlink loop l1 -> l2 -> l1, symlink s -> f.
func errnoSetup(t *testing.T, d string) {
	t.Helper()
	for _, err := range []error{
		os.WriteFile(filepath.Join(d, "f"), []byte("hello"), 0o644),
		os.Mkdir(filepath.Join(d, "e"), 0o755),
		os.Mkdir(filepath.Join(d, "n"), 0o755),
		os.WriteFile(filepath.Join(d, "n", "x"), nil, 0o644),
		os.Symlink("l2", filepath.Join(d, "l1")),
		os.Symlink("l1", filepath.Join(d, "l2")),
		os.Symlink("f", filepath.Join(d, "s")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func openClose(p string, flags int) error {
	fd, err := unix.Open(p, flags, 0o644)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

func errnoCases(other string) []errnoCase {
	j := filepath.Join
	long := strings.Repeat("n", 256)
	name255 := strings.Repeat("m", 255)
	deep := strings.Repeat("a/", 2100) // > PATH_MAX (4096)
	return []errnoCase{
		// NAME_MAX and PATH_MAX.
		{"create 255-byte name", func(d string) error { return openClose(j(d, name255), unix.O_CREAT|unix.O_WRONLY) }, 0},
		{"create 256-byte name", func(d string) error { return openClose(j(d, long), unix.O_CREAT|unix.O_WRONLY) }, unix.ENAMETOOLONG},
		{"stat 256-byte name", func(d string) error { var st unix.Stat_t; return unix.Lstat(j(d, long), &st) }, unix.ENAMETOOLONG},
		{"mkdir 256-byte name", func(d string) error { return unix.Mkdir(j(d, long), 0o755) }, unix.ENAMETOOLONG},
		{"symlink to a 256-byte name", func(d string) error { return unix.Symlink("f", j(d, long)) }, unix.ENAMETOOLONG},
		{"rename to a 256-byte name", func(d string) error { return unix.Rename(j(d, "f"), j(d, long)) }, unix.ENAMETOOLONG},
		{"path over PATH_MAX", func(d string) error { return openClose(j(d, deep, "f"), unix.O_RDONLY) }, unix.ENAMETOOLONG},
		{"symlink target of 4096 bytes", func(d string) error { return unix.Symlink(strings.Repeat("t", 4096), j(d, "big")) }, unix.ENAMETOOLONG},
		{"symlink target of 4095 bytes", func(d string) error { return unix.Symlink(strings.Repeat("t", 4095), j(d, "big")) }, 0},
		// ELOOP.
		{"open a symlink loop", func(d string) error { return openClose(j(d, "l1"), unix.O_RDONLY) }, unix.ELOOP},
		{"stat through a symlink loop", func(d string) error { var st unix.Stat_t; return unix.Stat(j(d, "l1", "x"), &st) }, unix.ELOOP},
		{"O_NOFOLLOW on a symlink", func(d string) error { return openClose(j(d, "s"), unix.O_RDONLY|unix.O_NOFOLLOW) }, unix.ELOOP},
		// EXDEV: another file system (local, or another mount of this one).
		{"rename to another file system", func(d string) error { return unix.Rename(j(d, "f"), j(other, "moved")) }, unix.EXDEV},
		{"link to another file system", func(d string) error { return unix.Link(j(d, "f"), j(other, "linked")) }, unix.EXDEV},
		// ENOTEMPTY.
		{"rmdir non-empty", func(d string) error { return unix.Rmdir(j(d, "n")) }, unix.ENOTEMPTY},
		{"rename dir over non-empty dir", func(d string) error { return unix.Rename(j(d, "e"), j(d, "n")) }, unix.ENOTEMPTY},
		{"rename dir over empty dir", func(d string) error { return unix.Rename(j(d, "n"), j(d, "e")) }, 0},
		// EISDIR / ENOTDIR, every mix.
		{"rename file over dir", func(d string) error { return unix.Rename(j(d, "f"), j(d, "e")) }, unix.EISDIR},
		{"rename dir over file", func(d string) error { return unix.Rename(j(d, "e"), j(d, "f")) }, unix.ENOTDIR},
		{"rename symlink over dir", func(d string) error { return unix.Rename(j(d, "s"), j(d, "e")) }, unix.EISDIR},
		{"rename dir into itself", func(d string) error { return unix.Rename(j(d, "n"), j(d, "n", "sub")) }, unix.EINVAL},
		{"rename dir to file/x", func(d string) error { return unix.Rename(j(d, "e"), j(d, "f", "x")) }, unix.ENOTDIR},
		{"rename file with trailing slash", func(d string) error { return unix.Rename(j(d, "f")+"/", j(d, "g")) }, unix.ENOTDIR},
		{"exchange file and dir", func(d string) error {
			return unix.Renameat2(unix.AT_FDCWD, j(d, "f"), unix.AT_FDCWD, j(d, "e"), unix.RENAME_EXCHANGE)
		}, 0},
		{"noreplace onto dir", func(d string) error {
			return unix.Renameat2(unix.AT_FDCWD, j(d, "f"), unix.AT_FDCWD, j(d, "e"), unix.RENAME_NOREPLACE)
		}, unix.EEXIST},
		{"exchange and noreplace together", func(d string) error {
			return unix.Renameat2(unix.AT_FDCWD, j(d, "f"), unix.AT_FDCWD, j(d, "e"), unix.RENAME_EXCHANGE|unix.RENAME_NOREPLACE)
		}, unix.EINVAL},
		{"unlink dir", func(d string) error { return unix.Unlink(j(d, "e")) }, unix.EISDIR},
		{"rmdir file", func(d string) error { return unix.Rmdir(j(d, "f")) }, unix.ENOTDIR},
		{"rmdir symlink", func(d string) error { return unix.Rmdir(j(d, "s")) }, unix.ENOTDIR},
		{"open dir for writing", func(d string) error { return openClose(j(d, "e"), unix.O_WRONLY) }, unix.EISDIR},
		{"open dir with O_CREAT", func(d string) error { return openClose(j(d, "e"), unix.O_CREAT|unix.O_RDONLY) }, unix.EISDIR},
		{"O_DIRECTORY on a file", func(d string) error { return openClose(j(d, "f"), unix.O_RDONLY|unix.O_DIRECTORY) }, unix.ENOTDIR},
		{"file as a path component", func(d string) error { return openClose(j(d, "f", "x"), unix.O_RDONLY) }, unix.ENOTDIR},
		{"mkdir under a file", func(d string) error { return unix.Mkdir(j(d, "f", "x"), 0o755) }, unix.ENOTDIR},
		{"create under a file", func(d string) error { return openClose(j(d, "f", "x"), unix.O_CREAT|unix.O_WRONLY) }, unix.ENOTDIR},
		{"file with trailing slash", func(d string) error { var st unix.Stat_t; return unix.Stat(j(d, "f")+"/", &st) }, unix.ENOTDIR},
		{"hard link to a dir", func(d string) error { return unix.Link(j(d, "e"), j(d, "e2")) }, unix.EPERM},
		{"mkdir over a file", func(d string) error { return unix.Mkdir(j(d, "f"), 0o755) }, unix.EEXIST},
		{"rmdir .", func(d string) error { return unix.Rmdir(d + "/e/.") }, unix.EINVAL},
		{"rmdir ..", func(d string) error { return unix.Rmdir(d + "/n/..") }, unix.ENOTEMPTY},
		{"read a dir", func(d string) error {
			fd, err := unix.Open(j(d, "e"), unix.O_RDONLY, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			_, err = unix.Read(fd, make([]byte, 8))
			return err
		}, unix.EISDIR},
		{"truncate a dir", func(d string) error { return unix.Truncate(j(d, "e"), 0) }, unix.EISDIR},
		{"O_TMPFILE", func(d string) error { return openClose(d, unix.O_TMPFILE|unix.O_RDWR) }, 0},
	}
}

// TestErrnoCasesMatchLocalFS runs errnoCases on the mount and on a local
// directory.
func TestErrnoCasesMatchLocalFS(t *testing.T) {
	m := mount(t, fuse.Options{})
	local := t.TempDir()
	otherForMount := t.TempDir() // a local dir: another file system than the mount
	otherForLocal := m.dir       // the mount: another file system than the local dir
	var diffs []string
	for i, c := range errnoCases("") {
		results := map[string]syscall.Errno{}
		for _, where := range []struct{ name, base, other string }{{"mount", m.dir, otherForMount}, {"local", local, otherForLocal}} {
			d := filepath.Join(where.base, fmt.Sprintf("case%d", i))
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			errnoSetup(t, d)
			cs := errnoCases(where.other)
			err := cs[i].op(d)
			var got syscall.Errno
			if err != nil {
				e, ok := err.(syscall.Errno)
				if !ok {
					t.Fatalf("%s on %s: %v is not an errno", c.name, where.name, err)
				}
				got = e
			}
			results[where.name] = got
		}
		wantMount := c.want
		if e, ok := mountDiffers[c.name]; ok {
			wantMount = e
		}
		if results["mount"] != wantMount || results["local"] != c.want {
			diffs = append(diffs, fmt.Sprintf("%s: mount %v (%d), local %v (%d), want %v (%d) on the mount and %v (%d) locally",
				c.name, results["mount"], results["mount"], results["local"], results["local"], wantMount, wantMount, c.want, c.want))
		}
	}
	if len(diffs) > 0 {
		t.Fatalf("errno cases differ:\n%s", strings.Join(diffs, "\n"))
	}
	// The exchange of a file and a directory really swapped them.
	for _, base := range []string{m.dir, local} {
		for i, c := range errnoCases("") {
			if c.name != "exchange file and dir" {
				continue
			}
			d := filepath.Join(base, fmt.Sprintf("case%d", i))
			if st, err := os.Lstat(filepath.Join(d, "f")); err != nil || !st.IsDir() {
				t.Fatalf("%s: after RENAME_EXCHANGE f is not a directory (%v)", base, err)
			}
			if b, err := os.ReadFile(filepath.Join(d, "e")); err != nil || string(b) != "hello" {
				t.Fatalf("%s: after RENAME_EXCHANGE e holds %q, %v; want the file's bytes", base, b, err)
			}
		}
	}
}

// Appends through two mounts (two clients), two descriptors on each, and
// a third, native client, all at once: every record lands whole and none
// is overwritten.
func TestAppendFromTwoMounts(t *testing.T) {
	a := mount(t, fuse.Options{})
	b := mount(t, fuse.Options{})
	rel, err := filepath.Rel(a.root, a.path("log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.path("log"), []byte("head\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	const writers, records, size = 5, 100, 32
	paths := []string{a.path("log"), filepath.Join(b.root, rel), a.path("log"), filepath.Join(b.root, rel)}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	native, err := newClient(t.Context(), "fusetest-append-native")
	if err != nil {
		t.Fatal(err)
	}
	defer native.Close()
	nf, err := native.Open(t.Context(), meta.Root, meta.P("/"+rel), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := range records {
			rec := fmt.Sprintf("w%d r%03d", writers-1, r)
			rec += strings.Repeat(".", size-1-len(rec)) + "\n"
			if _, err := nf.WriteAt([]byte(rec), 0); err != nil { // the offset is ignored
				errs <- err
				return
			}
		}
		errs <- nf.Close()
	}()
	for w := range writers - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.OpenFile(paths[w], os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for r := range records {
				rec := fmt.Sprintf("w%d r%03d", w, r)
				rec += strings.Repeat(".", size-1-len(rec)) + "\n"
				if _, err := f.WriteString(rec); err != nil {
					errs <- err
					return
				}
			}
			errs <- f.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(filepath.Join(b.root, rel))
	if err != nil {
		t.Fatal(err)
	}
	if want := 5 + writers*records*size; len(data) != want {
		t.Fatalf("file is %d bytes after %d appends, want %d (appends overwrote each other or left gaps)", len(data), writers*records, want)
	}
	if !bytes.HasPrefix(data, []byte("head\n")) {
		t.Fatalf("the first line was overwritten: %q", data[:16])
	}
	seen := map[string]bool{}
	for off := 5; off < len(data); off += size {
		rec := string(data[off : off+size])
		if !strings.HasSuffix(rec, "\n") || strings.Count(rec, "\n") != 1 || !strings.HasPrefix(rec, "w") {
			t.Fatalf("record at %d is torn: %q", off, rec)
		}
		if seen[rec] {
			t.Fatalf("record %q appears twice", rec)
		}
		seen[rec] = true
	}
	if len(seen) != writers*records {
		t.Fatalf("%d distinct records, want %d", len(seen), writers*records)
	}
}

// fallocate: mode 0 extends, KEEP_SIZE alone changes nothing, PUNCH_HOLE
// zeros a range (seen by another mount reading storage with O_DIRECT),
// ZERO_RANGE zeros and extends, other modes are EOPNOTSUPP.
func TestFallocate(t *testing.T) {
	a := mount(t, fuse.Options{})
	b := mount(t, fuse.Options{})
	const mib = 1 << 20
	fill := bytes.Repeat([]byte{0xab}, 3*mib)
	if err := os.WriteFile(a.path("f"), fill, 0o644); err != nil {
		t.Fatal(err)
	}
	f := openRW(t, a.path("f"))
	fd := int(f.Fd())
	size := func() int64 {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		return st.Size
	}
	wantErrno(t, "fallocate 0..5 MiB", unix.Fallocate(fd, 0, 0, 5*mib), 0)
	if s := size(); s != 5*mib {
		t.Fatalf("size after fallocate to 5 MiB: %d", s)
	}
	wantErrno(t, "fallocate KEEP_SIZE to 8 MiB", unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, 8*mib), 0)
	if s := size(); s != 5*mib {
		t.Fatalf("size after KEEP_SIZE fallocate: %d, want 5 MiB", s)
	}
	wantErrno(t, "punch hole", unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, mib, 100), 0)
	wantErrno(t, "zero range to 6 MiB", unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 4*mib+mib/2, 3*mib/2), 0)
	if s := size(); s != 6*mib {
		t.Fatalf("size after ZERO_RANGE to 6 MiB: %d", s)
	}
	wantErrno(t, "punch hole without KEEP_SIZE", unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE, 0, 1), syscall.EOPNOTSUPP)
	wantErrno(t, "collapse range", unix.Fallocate(fd, unix.FALLOC_FL_COLLAPSE_RANGE, 0, 4096), syscall.EOPNOTSUPP)
	wantErrno(t, "insert range", unix.Fallocate(fd, unix.FALLOC_FL_INSERT_RANGE, 0, 4096), syscall.EOPNOTSUPP)
	ro, err := os.Open(a.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "fallocate on a read-only descriptor", unix.Fallocate(int(ro.Fd()), 0, 0, 1), syscall.EBADF)
	ro.Close()
	f.Close()

	want := make([]byte, 6*mib)
	copy(want, fill)
	clear(want[mib : mib+100])
	rel, err := filepath.Rel(a.root, a.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(b.root, rel)); err != nil || st.Size() != int64(len(want)) {
		t.Fatalf("other mount: stat %v, %v; want size %d", st, err, len(want))
	}
	got := readWhole(t, filepath.Join(b.root, rel), syscall.O_DIRECT, len(want))
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("other mount: byte %d is %#x, want %#x (punched [1 MiB, +100) and everything past 3 MiB must be zero)", i, got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// A --read-only mount reads, and every change fails with EROFS.
func TestReadOnlyMount(t *testing.T) {
	rw := mount(t, fuse.Options{})
	if err := os.WriteFile(rw.path("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(rw.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	ro := mount(t, fuse.Options{ReadOnly: true})
	rel, err := filepath.Rel(rw.root, rw.dir)
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(ro.root, rel)
	wantErrno(t, "read-only mount: statfs flags", func() error {
		var st unix.Statfs_t
		if err := unix.Statfs(d, &st); err != nil {
			return err
		}
		if st.Flags&unix.ST_RDONLY == 0 {
			return fmt.Errorf("statfs flags %#x lack ST_RDONLY", st.Flags)
		}
		return nil
	}(), 0)
	if b, err := os.ReadFile(filepath.Join(d, "f")); err != nil || string(b) != "data" {
		t.Fatalf("read through the read-only mount: %q %v", b, err)
	}
	j := filepath.Join
	for _, c := range []struct {
		name string
		err  error
	}{
		{"create", openClose(j(d, "new"), unix.O_CREAT|unix.O_WRONLY)},
		{"open for writing", openClose(j(d, "f"), unix.O_WRONLY)},
		{"truncate", unix.Truncate(j(d, "f"), 0)},
		{"mkdir", unix.Mkdir(j(d, "d2"), 0o755)},
		{"rmdir", unix.Rmdir(j(d, "d"))},
		{"unlink", unix.Unlink(j(d, "f"))},
		{"rename", unix.Rename(j(d, "f"), j(d, "g"))},
		{"symlink", unix.Symlink("f", j(d, "s"))},
		{"link", unix.Link(j(d, "f"), j(d, "h"))},
		{"chmod", unix.Chmod(j(d, "f"), 0o600)},
		{"chown", unix.Chown(j(d, "f"), 1, 1)},
		{"utimes", unix.UtimesNano(j(d, "f"), []unix.Timespec{{Sec: 1}, {Sec: 1}})},
		{"setxattr", unix.Setxattr(j(d, "f"), "user.k", []byte("v"), 0)},
		{"mkfifo", unix.Mkfifo(j(d, "p"), 0o644)},
	} {
		wantErrno(t, "read-only mount: "+c.name, c.err, syscall.EROFS)
	}
	if b, err := os.ReadFile(rw.path("f")); err != nil || string(b) != "data" {
		t.Fatalf("file changed behind the read-only mount: %q %v", b, err)
	}
}

// Extended attribute namespaces and limits, as root and as a user, on the
// mount and on a local directory.
func TestXattrNamespacesAndLimits(t *testing.T) {
	m := mount(t, fuse.Options{})
	// Not t.TempDir: its parent is private, and other users work here too.
	local, err := os.MkdirTemp("", "emberfs-xattr-local-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(local) })
	if err := os.Chmod(local, 0o1777); err != nil {
		t.Fatal(err)
	}
	var n int
	for _, base := range []string{m.dir, local} {
		f := filepath.Join(base, "xf")
		mkfile(t, f, 0o666, int(alice.uid), int(alice.gid))
		if err := os.Symlink("xf", filepath.Join(base, "xs")); err != nil {
			t.Fatal(err)
		}
		where := "mount"
		if base == local {
			where = "local"
		}
		wantErrno(t, where+": trusted. as root", unix.Setxattr(f, "trusted.k", []byte("v"), 0), 0)
		wantErrno(t, where+": 255-byte name", unix.Setxattr(f, "user."+strings.Repeat("k", 250), []byte("v"), 0), 0)
		wantErrno(t, where+": 256-byte name", unix.Setxattr(f, "user."+strings.Repeat("k", 251), []byte("v"), 0), syscall.ERANGE)
		wantErrno(t, where+": value over 64 KiB", unix.Setxattr(f, "user.big", make([]byte, 65537), 0), syscall.E2BIG)
		wantErrno(t, where+": unknown namespace", unix.Setxattr(f, "nope.k", []byte("v"), 0), syscall.EOPNOTSUPP)
		wantErrno(t, where+": user. on a symlink", unix.Lsetxattr(filepath.Join(base, "xs"), "user.k", []byte("v"), 0), syscall.EPERM)
		// As an unprivileged user (alice owns the file, bob does not).
		wantAs(t, alice, 0, "setxattr", f, "user.a", "x")
		wantAs(t, alice, syscall.EPERM, "setxattr", f, "trusted.a", "x")
		wantAs(t, alice, syscall.ENODATA, "getxattr", f, "trusted.k")
		wantAs(t, alice, syscall.EPERM, "setxattr", f, "security.a", "x")
		wantAs(t, bob, 0, "setxattr", f, "user.b", "x") // mode 0666: anyone may write
	}
	// Values up to 64 KiB are kept whole on the mount (ext4 without
	// ea_inode stops at one block: docs/fuse.md).
	f := m.path("xf")
	big := bytes.Repeat([]byte("v"), 65536)
	wantErrno(t, "64 KiB value", unix.Setxattr(f, "user.big", big, 0), 0)
	buf := make([]byte, 70000)
	n, err = unix.Getxattr(f, "user.big", buf)
	if err != nil || !bytes.Equal(buf[:n], big) {
		t.Fatalf("64 KiB value read back: %d bytes, %v", n, err)
	}
	// trusted. names are listed to root only.
	n, err = unix.Listxattr(f, buf)
	if err != nil || !strings.Contains(string(buf[:n]), "trusted.k\x00") {
		t.Fatalf("root's listxattr misses trusted.k: %q %v", buf[:n], err)
	}
}

// O_TMPFILE: a file without a name, written, then linked into place; one
// opened with O_EXCL cannot be linked; an unlinked one leaves nothing.
// The same steps run on the mount and on a local directory.
func TestTmpfile(t *testing.T) {
	m := mount(t, fuse.Options{})
	for _, d := range []string{m.dir, t.TempDir()} {
		fd, err := unix.Open(d, unix.O_TMPFILE|unix.O_RDWR, 0o640)
		if err != nil {
			t.Fatalf("%s: O_TMPFILE: %v", d, err)
		}
		// Closed when the test ends even if it fails: a descriptor of the
		// mount still open when the process exits would flush through a
		// server that exits with it.
		closeAtEnd(t, fd)
		if _, err := unix.Write(fd, []byte("secret")); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Nlink != 0 || st.Size != 6 || st.Mode&0o777 != 0o640 {
			t.Fatalf("%s: fstat of the O_TMPFILE file: %+v %v; want nlink 0, size 6, mode 0640", d, st, err)
		}
		if names := sh(t, "ls -A '"+d+"'"); names != "" {
			t.Fatalf("%s: the O_TMPFILE file has a name: %q", d, names)
		}
		wantErrno(t, d+": linkat of the O_TMPFILE file",
			unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, filepath.Join(d, "linked"), unix.AT_SYMLINK_FOLLOW), 0)
		closeNow(fd)
		if b, err := os.ReadFile(filepath.Join(d, "linked")); err != nil || string(b) != "secret" {
			t.Fatalf("%s: the linked O_TMPFILE file holds %q, %v", d, b, err)
		}
		if st, err := os.Lstat(filepath.Join(d, "linked")); err != nil || st.Sys().(*syscall.Stat_t).Nlink != 1 {
			t.Fatalf("%s: linked file: %v %v, want 1 link", d, st, err)
		}
		fd, err = unix.Open(d, unix.O_TMPFILE|unix.O_RDWR|unix.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, fd)
		wantErrno(t, d+": linkat of an O_TMPFILE|O_EXCL file",
			unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, filepath.Join(d, "no"), unix.AT_SYMLINK_FOLLOW), syscall.ENOENT)
		closeNow(fd)
		if names := strings.Fields(sh(t, "ls -A '"+d+"'")); len(names) != 1 || names[0] != "linked" {
			t.Fatalf("%s: entries %q, want only linked", d, names)
		}
	}
}

// open descriptors closeAtEnd registered and closeNow has not closed.
var (
	openFDsMu sync.Mutex
	openFDs   = map[int]bool{}
)

func closeAtEnd(t *testing.T, fd int) {
	openFDsMu.Lock()
	openFDs[fd] = true
	openFDsMu.Unlock()
	t.Cleanup(func() { closeNow(fd) })
}

// closeNow closes fd once (a number closed before may be reused).
func closeNow(fd int) {
	openFDsMu.Lock()
	defer openFDsMu.Unlock()
	if openFDs[fd] {
		delete(openFDs, fd)
		unix.Close(fd)
	}
}
