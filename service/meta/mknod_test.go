package meta

import (
	"context"
	"syscall"
	"testing"
)

// TestMknodSpecialFiles: FIFOs and sockets by anyone allowed to insert,
// device nodes by root only; stat shows type, mode, owner and device
// number; they link, rename and unlink like files, cannot be truncated or
// opened through meta as files, and fsck counts their links.
func TestMknodSpecialFiles(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.s.Mkdir(ctx, Root, P("/d"), 0o777, false)
	noErr(t, err)
	for _, c := range []struct {
		path string
		typ  FileType
		rdev uint32
	}{{"/d/fifo", TypeFIFO, 0}, {"/d/sock", TypeSocket, 0}, {"/d/chr", TypeCharDev, 0x103}, {"/d/blk", TypeBlockDev, 0x801}} {
		n, err := e.s.Mknod(ctx, Root, P(c.path), c.typ, 0o640, c.rdev)
		noErr(t, err)
		st, err := e.s.Stat(ctx, Root, P(c.path))
		noErr(t, err)
		if n.Type != c.typ || st.Type != c.typ || st.Rdev != c.rdev || st.Mode != 0o640 || st.Nlink != 1 {
			t.Fatalf("%s: mknod %+v stat %+v", c.path, n, st)
		}
	}
	_, err = e.s.Mknod(ctx, alice, P("/d/afifo"), TypeFIFO, 0o600, 0)
	noErr(t, err)
	st, err := e.s.Stat(ctx, Root, P("/d/afifo"))
	noErr(t, err)
	if st.UID != alice.UID || st.Rdev != 0 {
		t.Fatalf("fifo by alice: %+v", st)
	}
	wantErrno(t, ignore(e.s.Mknod(ctx, alice, P("/d/adev"), TypeCharDev, 0o600, 1)), syscall.EPERM, "device by a user")
	wantErrno(t, ignore(e.s.Mknod(ctx, Root, P("/d/fifo"), TypeFIFO, 0o600, 0)), syscall.EEXIST, "mknod over a name")
	wantErrno(t, ignore(e.s.Mknod(ctx, Root, P("/d/reg"), TypeFile, 0o600, 0)), syscall.EINVAL, "mknod of a regular file")
	wantErrno(t, ignore(e.s.Truncate(ctx, Root, P("/d/fifo"), 0)), syscall.EINVAL, "truncate a fifo")
	_, err = e.s.Link(ctx, Root, P("/d/chr"), P("/d/chr2"))
	noErr(t, err)
	noErr(t, e.s.Rename(ctx, Root, P("/d/sock"), P("/d/sock2"), 0))
	st, err = e.s.Stat(ctx, Root, P("/d/chr2"))
	noErr(t, err)
	if st.Nlink != 2 || st.Rdev != 0x103 {
		t.Fatalf("linked device: %+v", st)
	}
	fsckClean(t, e.s, e.chunks)
	for _, p := range []string{"/d/fifo", "/d/sock2", "/d/chr", "/d/chr2", "/d/blk", "/d/afifo"} {
		noErr(t, e.s.Unlink(ctx, Root, P(p)))
	}
	noErr(t, e.s.Rmdir(ctx, Root, P("/d")))
	drainGC(t, e.s)
	fsckClean(t, e.s, e.chunks)
}
