package fusetest

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/emberfs/emberfs/fuse"
)

// TestCreateOpensNoClientFile: create-and-close of a new file is one
// metadata call; the client file (with its write session) is opened only
// when the new file is written, and then behaves as any open file.
func TestCreateOpensNoClientFile(t *testing.T) {
	m := mount(t, fuse.Options{})
	before := m.be.openCount()
	for _, name := range []string{"a", "b", "c"} {
		f, err := os.OpenFile(m.path(name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.be.openCount() - before; n != 0 {
		t.Fatalf("create and close of 3 new files opened %d client files, want 0", n)
	}
	if st := lstat(t, m.path("b")); st.Size != 0 || st.Mode != syscall.S_IFREG|0o644 {
		t.Fatalf("new file: size %d mode %o", st.Size, st.Mode)
	}
	// Written after the create: opened on the first write, as root, so a
	// new file whose mode forbids writing can still be written through the
	// descriptor that created it (POSIX).
	f, err := os.OpenFile(m.path("ro"), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o444)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("written after create")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(m.path("ro")); err != nil || string(got) != "written after create" {
		t.Fatalf("read back: %q %v", got, err)
	}
	// O_CREAT of an existing name (no O_EXCL) opens it the ordinary way:
	// O_TRUNC truncates it.
	if err := os.WriteFile(m.path("a"), []byte("abcdef"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("a"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(m.path("a")); err != nil || string(got) != "x" {
		t.Fatalf("after O_CREAT|O_TRUNC of an existing file: %q %v", got, err)
	}
}

// TestCreatedFileSurvivesUnlinkBeforeFirstWrite: a file created here, not
// yet written, whose name is removed while it is open, is still written and
// read through its descriptor: the mount keeps the inode (its pin) and the
// first write opens it by id.
func TestCreatedFileSurvivesUnlinkBeforeFirstWrite(t *testing.T) {
	m := mount(t, fuse.Options{})
	f, err := os.OpenFile(m.path("tmp"), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(m.path("tmp")); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("unlinked but open "), 1000)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatalf("write after unlink: %v", err)
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after unlink: %v (equal %v)", err, bytes.Equal(got, data))
	}
}

// TestCloseToOpenAcrossMounts: with attributes cached for a long time, a
// mount still sees, at open, a file another mount (another client) wrote
// and closed: its whole new length and content, not the length it had
// cached. Without the check at open the kernel cuts reads at the old size.
func TestCloseToOpenAcrossMounts(t *testing.T) {
	a := mount(t, fuse.Options{AttrTimeout: 3600e9, EntryTimeout: 3600e9})
	b := mount(t, fuse.Options{AttrTimeout: 3600e9, EntryTimeout: 3600e9})
	pa := a.path("shared")
	pb := filepath.Join(b.root, filepath.Base(a.dir), "shared")
	// fsync before close: the length reaches meta at fsync, or at close
	// only once the kernel's asynchronous RELEASE has run (docs/fuse.md).
	writeSynced := func(p string, data []byte, flags int) {
		t.Helper()
		f, err := os.OpenFile(p, flags, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	writeSynced(pa, []byte("v1"), os.O_CREATE|os.O_EXCL|os.O_WRONLY)
	if got, err := os.ReadFile(pb); err != nil || string(got) != "v1" {
		t.Fatalf("mount b reads %q %v, want v1", got, err)
	}
	if st := lstat(t, pb); st.Size != 2 { // now cached by b's kernel
		t.Fatalf("size on b %d", st.Size)
	}
	v2 := bytes.Repeat([]byte("version two "), 100)
	writeSynced(pa, v2, os.O_WRONLY)
	got, err := os.ReadFile(pb)
	if err != nil || !bytes.Equal(got, v2) {
		t.Fatalf("mount b reads %d bytes (%v) after a's close, want %d", len(got), err, len(v2))
	}
	if st := lstat(t, pb); st.Size != int64(len(v2)) {
		t.Fatalf("size on b after open: %d, want %d", st.Size, len(v2))
	}
}

// TestXattrAnswers: security.selinux is not supported on the mount (tools
// stop asking); an absent name is ENODATA, remembered, and forgotten when a
// set through the mount adds it.
func TestXattrAnswers(t *testing.T) {
	m := mount(t, fuse.Options{})
	p := m.path("f")
	mkfile(t, p, 0o644, 0, 0)
	buf := make([]byte, 64)
	_, err := syscall.Getxattr(p, "security.selinux", buf)
	wantErrno(t, "getxattr security.selinux", err, syscall.EOPNOTSUPP)
	wantErrno(t, "setxattr security.selinux", syscall.Setxattr(p, "security.selinux", []byte("x"), 0), syscall.EOPNOTSUPP)
	for i := 0; i < 2; i++ { // the second answer comes from the mount's memory
		_, err = syscall.Getxattr(p, "user.k", buf)
		wantErrno(t, "getxattr of an absent name", err, syscall.ENODATA)
	}
	wantErrno(t, "setxattr", syscall.Setxattr(p, "user.k", []byte("v"), 0), 0)
	if n, err := syscall.Getxattr(p, "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Fatalf("getxattr after set: %q %v", buf[:n], err)
	}
	wantErrno(t, "removexattr", syscall.Removexattr(p, "user.k"), 0)
	_, err = syscall.Getxattr(p, "user.k", buf)
	wantErrno(t, "getxattr after remove", err, syscall.ENODATA)
}
