package fusetest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/internal/testutil"
)

// eventually bounds waits for things that happen "after a while" (a dead
// client's lease running out); nothing asserts on how fast.
const eventually = 60 * time.Second

func openRW(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func fcntlLock(f *os.File, cmd int, typ int16, start, length int64) error {
	l := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: length}
	return unix.FcntlFlock(f.Fd(), cmd, &l)
}

func getLock(t *testing.T, f *os.File, cmd int, typ int16, start, length int64) unix.Flock_t {
	t.Helper()
	l := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: length}
	if err := unix.FcntlFlock(f.Fd(), cmd, &l); err != nil {
		t.Fatalf("F_GETLK: %v", err)
	}
	return l
}

// Locks taken through one mount hold against another mount of the same
// file system (another client), for fcntl, OFD and flock locks, and go
// when their holder closes.
func TestLocksAcrossMounts(t *testing.T) {
	a := mount(t, fuse.Options{})
	b := mount(t, fuse.Options{})
	rel, err := filepath.Rel(a.root, a.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	fa := openRW(t, a.path("f"))
	fb := openRW(t, filepath.Join(b.root, rel))

	// fcntl: a write-locks [10,19]; b cannot write-lock 15, can lock 20+.
	wantErrno(t, "a F_SETLK write [10,19]", fcntlLock(fa, unix.F_SETLK, unix.F_WRLCK, 10, 10), 0)
	wantErrno(t, "b F_SETLK write at 15", fcntlLock(fb, unix.F_SETLK, unix.F_WRLCK, 15, 1), syscall.EAGAIN)
	wantErrno(t, "b F_SETLK write [20,EOF]", fcntlLock(fb, unix.F_SETLK, unix.F_WRLCK, 20, 0), 0)
	got := getLock(t, fb, unix.F_GETLK, unix.F_RDLCK, 0, 15)
	if got.Type != unix.F_WRLCK || got.Start != 10 || got.Len != 10 || int(got.Pid) != os.Getpid() {
		t.Fatalf("b F_GETLK [0,14]: %+v, want a's write lock [10,19] by pid %d", got, os.Getpid())
	}
	if got := getLock(t, fb, unix.F_GETLK, unix.F_WRLCK, 0, 10); got.Type != unix.F_UNLCK {
		t.Fatalf("b F_GETLK [0,9]: %+v, want F_UNLCK (free)", got)
	}
	// F_SETLKW on b waits until a unlocks.
	done := make(chan error, 1)
	go func() { done <- fcntlLock(fb, unix.F_SETLKW, unix.F_WRLCK, 12, 1) }()
	select {
	case err := <-done:
		t.Fatalf("b F_SETLKW returned (%v) while a holds the range", err)
	case <-time.After(300 * time.Millisecond):
	}
	wantErrno(t, "a unlock", fcntlLock(fa, unix.F_SETLK, unix.F_UNLCK, 0, 0), 0)
	select {
	case err := <-done:
		wantErrno(t, "b F_SETLKW after a's unlock", err, 0)
	case <-time.After(eventually):
		t.Fatal("b F_SETLKW still waiting after a unlocked")
	}
	// A process's fcntl locks go when it closes any descriptor of the file.
	wantErrno(t, "a F_SETLK again at 12", fcntlLock(fa, unix.F_SETLK, unix.F_WRLCK, 12, 1), syscall.EAGAIN)
	fb2, err := os.Open(filepath.Join(b.root, rel))
	if err != nil {
		t.Fatal(err)
	}
	fb2.Close() // this process's other descriptor: drops b's locks too
	wantErrno(t, "a F_SETLK after b's process closed a descriptor", fcntlLock(fa, unix.F_SETLK, unix.F_WRLCK, 12, 1), 0)
	wantErrno(t, "a unlock all", fcntlLock(fa, unix.F_SETLK, unix.F_UNLCK, 0, 0), 0)

	// OFD locks belong to the open file description: two opens in one
	// process on one mount conflict, and closing one frees its lock.
	fa2 := openRW(t, a.path("f"))
	wantErrno(t, "OFD lock fa", fcntlLock(fa, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0), 0)
	wantErrno(t, "OFD lock fa2 (same process, other description)", fcntlLock(fa2, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0), syscall.EAGAIN)
	wantErrno(t, "OFD lock through mount b", fcntlLock(fb, unix.F_OFD_SETLK, unix.F_RDLCK, 5, 1), syscall.EAGAIN)
	if got := getLock(t, fb, unix.F_OFD_GETLK, unix.F_RDLCK, 0, 0); got.Type != unix.F_WRLCK {
		t.Fatalf("F_OFD_GETLK through b: %+v, want a write lock", got)
	}
	fa.Close()
	// The kernel sends RELEASE after close(2) returns: the lock goes soon
	// after, not at once (docs/fuse.md).
	eventuallyOK(t, "OFD lock fa2 after fa closed", func() error { return fcntlLock(fa2, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0) }, syscall.EAGAIN)
	wantErrno(t, "OFD unlock fa2", fcntlLock(fa2, unix.F_OFD_SETLK, unix.F_UNLCK, 0, 0), 0)

	// flock: exclusive against exclusive and shared, across mounts; shared
	// with shared; released at close.
	ga, gb := openRW(t, a.path("g")), openRW(t, filepath.Join(b.root, filepath.Dir(rel), "g"))
	wantErrno(t, "flock a LOCK_EX", unix.Flock(int(ga.Fd()), unix.LOCK_EX|unix.LOCK_NB), 0)
	wantErrno(t, "flock b LOCK_EX", unix.Flock(int(gb.Fd()), unix.LOCK_EX|unix.LOCK_NB), syscall.EWOULDBLOCK)
	wantErrno(t, "flock b LOCK_SH", unix.Flock(int(gb.Fd()), unix.LOCK_SH|unix.LOCK_NB), syscall.EWOULDBLOCK)
	// flock and fcntl locks do not interact (as on Linux).
	wantErrno(t, "fcntl on a flocked file", fcntlLock(gb, unix.F_SETLK, unix.F_WRLCK, 0, 0), 0)
	wantErrno(t, "fcntl unlock", fcntlLock(gb, unix.F_SETLK, unix.F_UNLCK, 0, 0), 0)
	ga.Close()
	eventuallyOK(t, "flock b LOCK_SH after a closed", func() error { return unix.Flock(int(gb.Fd()), unix.LOCK_SH|unix.LOCK_NB) }, syscall.EWOULDBLOCK)
	ga2 := openRW(t, a.path("g"))
	wantErrno(t, "flock a LOCK_SH beside b's shared", unix.Flock(int(ga2.Fd()), unix.LOCK_SH|unix.LOCK_NB), 0)
	wantErrno(t, "flock a LOCK_EX beside b's shared", unix.Flock(int(ga2.Fd()), unix.LOCK_EX|unix.LOCK_NB), syscall.EWOULDBLOCK)
	wantErrno(t, "flock b LOCK_UN", unix.Flock(int(gb.Fd()), unix.LOCK_UN), 0)
	wantErrno(t, "flock a LOCK_EX after b's unlock", unix.Flock(int(ga2.Fd()), unix.LOCK_EX|unix.LOCK_NB), 0)
}

// eventuallyOK retries op while it fails with the errno busy, until it
// succeeds (or fails otherwise, or a minute passes: test failure).
func eventuallyOK(t *testing.T, what string, op func() error, busy syscall.Errno) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for {
		err := op()
		if err == nil {
			return
		}
		if err != busy || time.Now().After(deadline) {
			t.Fatalf("%s: %v (want success; %v only for a while)", what, err, busy)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mountHelperEnv switches the test binary into a helper process for
// TestLockReleasedWhenMountDies: "mount MGMTD TOKEN DIR" mounts the cluster
// at DIR, prints "mounted" and serves until killed (a mount process);
// "hold FILE1 FILE2" takes an fcntl write lock on FILE1 and a flock on
// FILE2, prints "locked" and waits to be killed (a program using the mount).
// They are separate processes, as `emberfs mount` and its users are: a
// process that serves a mount and holds files on it cannot exit once
// killed (its exit flushes those files through the server it no longer
// runs).
const mountHelperEnv = "EMBERFS_FUSE_MOUNT_HELPER"

func runMountHelper(args []string) int {
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "mount helper: %s: %v\n", what, err)
		return 1
	}
	switch {
	case len(args) == 4 && args[0] == "mount":
		ctx := context.Background()
		cl, err := client.New(ctx, client.Config{MgmtdAddrs: []string{args[1]}, Token: args[2],
			ClientID: fmt.Sprintf("mount-helper-%d", os.Getpid()), Logger: testutil.Logger()})
		if err != nil {
			return fail("client", err)
		}
		if _, err := fuse.Mount(ctx, fuse.ClientBackend(cl), args[3], fuse.Options{Logger: testutil.Logger()}); err != nil {
			return fail("mount", err)
		}
		fmt.Println("mounted")
	case len(args) == 3 && args[0] == "hold":
		f, err := os.OpenFile(args[1], os.O_RDWR, 0)
		if err != nil {
			return fail("open", err)
		}
		if err := fcntlLock(f, unix.F_SETLK, unix.F_WRLCK, 0, 0); err != nil {
			return fail("fcntl lock", err)
		}
		g, err := os.OpenFile(args[2], os.O_RDWR, 0)
		if err != nil {
			return fail("open", err)
		}
		if err := unix.Flock(int(g.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			return fail("flock", err)
		}
		fmt.Println("locked")
	default:
		return fail("arguments", fmt.Errorf("want mount MGMTD TOKEN DIR or hold FILE1 FILE2, got %q", args))
	}
	select {}
}

// startHelper runs the test binary as a helper process (see
// mountHelperEnv), waits for it to print want, and returns it; it is
// SIGKILLed when the test ends.
func startHelper(t *testing.T, want string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(helperBin, args...)
	cmd.Env = append(os.Environ(), mountHelperEnv+"=1", "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	select {
	case l := <-lines:
		if l != want {
			t.Fatalf("helper %v said %q, want %q", args, l, want)
		}
	case <-time.After(eventually):
		t.Fatalf("helper %v did not say %q within %v", args, want, eventually)
	}
	return cmd
}

// A mount process SIGKILLed while programs hold locks through it: its
// client's lease runs out (clientTTL) and another mount then gets them.
func TestLockReleasedWhenMountDies(t *testing.T) {
	m := mount(t, fuse.Options{})
	for _, name := range []string{"fcntl", "flock"} {
		if err := os.WriteFile(m.path(name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	relDir, err := filepath.Rel(m.root, m.dir)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", mountPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The dead server's mount: force aborts what still waits on it.
		_ = syscall.Unmount(dir, syscall.MNT_FORCE|syscall.MNT_DETACH)
		os.Remove(dir)
	})
	mounter := startHelper(t, "mounted", "mount", testCluster.MgmtdAddr(), testCluster.Token(), dir)
	holder := startHelper(t, "locked", "hold", filepath.Join(dir, relDir, "fcntl"), filepath.Join(dir, relDir, "flock"))

	f, g := openRW(t, m.path("fcntl")), openRW(t, m.path("flock"))
	wantErrno(t, "fcntl lock held through the live mount", fcntlLock(f, unix.F_SETLK, unix.F_WRLCK, 0, 0), syscall.EAGAIN)
	if got := getLock(t, f, unix.F_GETLK, unix.F_WRLCK, 0, 0); got.Type != unix.F_WRLCK || int(got.Pid) != holder.Process.Pid {
		t.Fatalf("F_GETLK: %+v, want a write lock of pid %d", got, holder.Process.Pid)
	}
	wantErrno(t, "flock held through the live mount", unix.Flock(int(g.Fd()), unix.LOCK_EX|unix.LOCK_NB), syscall.EWOULDBLOCK)

	// The mount process dies; the holder lives on (its descriptors now
	// fail with ENOTCONN), so nothing closes the locks: only the lease.
	if err := mounter.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = mounter.Wait()
	deadline := time.Now().Add(eventually)
	for {
		errF := fcntlLock(f, unix.F_SETLK, unix.F_WRLCK, 0, 0)
		errG := unix.Flock(int(g.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errF == nil && errG == nil {
			break
		}
		for _, err := range []error{errF, errG} {
			if err != nil && err != syscall.EAGAIN {
				t.Fatalf("locking after the mount died: %v (want success, or EAGAIN until its lease ends)", err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("locks taken through the killed mount still held %v after its death (client lease %v): fcntl %v, flock %v", eventually, clientTTL, errF, errG)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
