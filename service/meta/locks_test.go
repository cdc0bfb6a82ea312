package meta

import (
	"syscall"
	"testing"
	"time"
)

func lk(client string, owner uint64, typ LockType, start, end uint64) FileLock {
	return FileLock{Client: client, Owner: owner, Type: typ, Start: start, End: end, Pid: uint32(owner)}
}

func setLock(e *testEnv, ino uint64, l FileLock) error {
	_, err := e.s.Lock(ctx, Root, LockRequest{Inode: ino, Lock: l})
	return err
}

func testLock(t *testing.T, e *testEnv, ino uint64, l FileLock) *FileLock {
	t.Helper()
	res, err := e.s.Lock(ctx, Root, LockRequest{Inode: ino, Lock: l, Test: true})
	noErr(t, err)
	return res.Conflict
}

func TestLocksConflictSplitAndMerge(t *testing.T) {
	e := newEnv(t)
	ino := must2(e.s.Create(ctx, Root, P("/f"), CreateOptions{Mode: 0o644})).Inode.ID
	// a read-locks [0,99]; b may read-lock it too, not write-lock it.
	wantErrno(t, setLock(e, ino, lk("A", 1, LockRead, 0, 99)), 0, "a read lock")
	wantErrno(t, setLock(e, ino, lk("B", 1, LockRead, 50, 150)), 0, "b overlapping read lock")
	wantErrno(t, setLock(e, ino, lk("B", 1, LockWrite, 90, 95)), syscall.EAGAIN, "b write over a's read")
	// The same owner number on another client is another owner.
	wantErrno(t, setLock(e, ino, lk("B", 2, LockWrite, 200, LockToEOF)), 0, "b2 write to EOF")
	if c := testLock(t, e, ino, lk("A", 1, LockWrite, 1000, 1000)); c == nil || c.Client != "B" || c.Owner != 2 || c.Type != LockWrite || c.Start != 200 || c.End != LockToEOF {
		t.Fatalf("test of a write at 1000: conflict %+v, want B/2 write [200,EOF]", c)
	}
	// a upgrades the middle of its read lock to a write lock: the range
	// splits (b's read [50,150] is in the way, so first b unlocks).
	wantErrno(t, setLock(e, ino, lk("B", 1, LockUnlock, 0, LockToEOF)), 0, "b unlock all")
	wantErrno(t, setLock(e, ino, lk("A", 1, LockWrite, 40, 59)), 0, "a write in the middle of its read")
	if c := testLock(t, e, ino, lk("C", 1, LockRead, 0, 39)); c != nil {
		t.Fatalf("read [0,39] blocked by %+v; a holds only a read lock there", c)
	}
	if c := testLock(t, e, ino, lk("C", 1, LockRead, 45, 45)); c == nil || c.Start != 40 || c.End != 59 || c.Type != LockWrite {
		t.Fatalf("read at 45: conflict %+v, want a's write [40,59]", c)
	}
	// Unlocking the middle leaves two read pieces, and re-locking it merges them.
	wantErrno(t, setLock(e, ino, lk("A", 1, LockUnlock, 40, 59)), 0, "a unlock middle")
	if c := testLock(t, e, ino, lk("C", 1, LockWrite, 40, 59)); c != nil {
		t.Fatalf("write [40,59] blocked by %+v after the unlock", c)
	}
	wantErrno(t, setLock(e, ino, lk("A", 1, LockRead, 40, 59)), 0, "a read middle again")
	if c := testLock(t, e, ino, lk("C", 1, LockWrite, 0, 150)); c == nil || c.Start != 0 || c.End != 99 {
		t.Fatalf("write [0,150]: conflict %+v, want a's merged read [0,99]", c)
	}
	// flock and fcntl locks do not see each other.
	fl := FileLock{Client: "C", Owner: 9, Flock: true, Type: LockWrite}
	wantErrno(t, setLock(e, ino, fl), 0, "flock exclusive beside fcntl locks")
	fl2 := FileLock{Client: "D", Owner: 9, Flock: true, Type: LockRead}
	wantErrno(t, setLock(e, ino, fl2), syscall.EAGAIN, "flock shared against exclusive")
	// Bad requests name what is wrong.
	wantErrno(t, setLock(e, ino, lk("", 1, LockRead, 0, 1)), syscall.EINVAL, "no client")
	wantErrno(t, setLock(e, ino, lk("A", 1, LockRead, 5, 1)), syscall.EINVAL, "start after end")
	wantErrno(t, setLock(e, ino, lk("A", 1, 7, 0, 1)), syscall.EINVAL, "bad type")
	wantErrno(t, setLock(e, 999999, lk("A", 1, LockRead, 0, 1)), syscall.ESTALE, "no such inode")
	// The file's removal takes its locks along.
	noErr(t, e.s.Unlink(ctx, Root, P("/f")))
	fsckClean(t, e.s, e.chunks)
}

// A client whose lease expires loses its locks: the next lock operation
// on the file ignores and drops them.
func TestLocksOfExpiredClientAreDropped(t *testing.T) {
	e := newEnv(t)
	ino := must2(e.s.Create(ctx, Root, P("/f"), CreateOptions{Mode: 0o644})).Inode.ID
	wantErrno(t, setLock(e, ino, lk("dead", 1, LockWrite, 0, LockToEOF)), 0, "dead's lock")
	wantErrno(t, setLock(e, ino, lk("live", 1, LockWrite, 0, 0)), syscall.EAGAIN, "live while dead's lease holds")
	e.clock.Advance(40 * time.Second)
	noErr(t, ignore(e.s.RenewClient(ctx, "live")))
	wantErrno(t, setLock(e, ino, lk("live", 1, LockWrite, 0, 0)), syscall.EAGAIN, "live after 40 s (lease 60 s)")
	e.clock.Advance(40 * time.Second)
	wantErrno(t, setLock(e, ino, lk("live", 1, LockWrite, 0, 0)), 0, "live after dead's lease expired")
	if c := testLock(t, e, ino, lk("other", 1, LockWrite, 5, 5)); c != nil {
		t.Fatalf("a lock of the expired client is still reported: %+v", c)
	}
}

func TestReserveAppend(t *testing.T) {
	e := newEnv(t)
	a := must2(e.s.Create(ctx, Root, P("/log"), CreateOptions{Mode: 0o644, Write: true, ClientID: "a"}))
	b := must2(e.s.Open(ctx, Root, P("/log"), OpenOptions{Write: true, ClientID: "b"}))
	id := a.Inode.ID
	// Storage already holds 10 bytes written without O_APPEND: appends go after them.
	e.chunks.write(id, 10)
	off1 := must2(e.s.ReserveAppend(ctx, Root, id, a.Session, 5))
	off2 := must2(e.s.ReserveAppend(ctx, Root, id, b.Session, 7))
	off3 := must2(e.s.ReserveAppend(ctx, Root, id, a.Session, 1))
	if off1 != 10 || off2 != 15 || off3 != 22 {
		t.Fatalf("append offsets %d %d %d, want 10 15 22", off1, off2, off3)
	}
	if n := must2(e.s.Stat(ctx, Root, P("/log"))); n.Size != 23 {
		t.Fatalf("size after appends %d, want 23", n.Size)
	}
	_, err := e.s.ReserveAppend(ctx, Root, id, 12345, 1)
	wantErrno(t, err, syscall.EBADF, "append without a session")
	noErr(t, ignore(e.s.Mkdir(ctx, Root, P("/d"), 0o755, false)))
	d := must2(e.s.Stat(ctx, Root, P("/d")))
	_, err = e.s.ReserveAppend(ctx, Root, d.ID, a.Session, 1)
	wantErrno(t, err, syscall.EINVAL, "append to a directory")
}

// A file unlinked while open may be linked again (O_TMPFILE through FUSE);
// once its last session is closed it is gone.
func TestLinkUnlinkedOpenFile(t *testing.T) {
	e := newEnv(t)
	s := e.s
	o := must2(s.Create(ctx, Root, P("/tmp1"), CreateOptions{Mode: 0o600, Write: true, ClientID: "c"}))
	noErr(t, s.Unlink(ctx, Root, P("/tmp1")))
	n := must2(s.Link(ctx, Root, PathAt{Parent: o.Inode.ID}, P("/named")))
	if n.Nlink != 1 {
		t.Fatalf("nlink after linking the unlinked open file: %d", n.Nlink)
	}
	noErr(t, ignore(s.Close(ctx, Root, CloseOptions{Inode: o.Inode.ID, Session: o.Session})))
	if got := must2(s.Stat(ctx, Root, P("/named"))); got.ID != o.Inode.ID {
		t.Fatalf("/named is inode %d, want %d", got.ID, o.Inode.ID)
	}
	// Without a session the unlinked inode is gone: nothing to link.
	o2 := must2(s.Create(ctx, Root, P("/tmp2"), CreateOptions{Mode: 0o600, Write: true, ClientID: "c"}))
	noErr(t, s.Unlink(ctx, Root, P("/tmp2")))
	noErr(t, ignore(s.Close(ctx, Root, CloseOptions{Inode: o2.Inode.ID, Session: o2.Session})))
	_, err := s.Link(ctx, Root, PathAt{Parent: o2.Inode.ID}, P("/late"))
	if err == nil {
		t.Fatal("linked a closed, unlinked file")
	}
	drainGC(t, s)
	fsckClean(t, s, e.chunks)
}
