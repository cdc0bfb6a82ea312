// Package fusetest runs ordinary tools and a POSIX errno suite (modelled on
// pjdfstest's areas) on a real FUSE mount of EmberFS over the native client
// and a real in-process cluster (3 storage services, replication 3). Tests
// need root and /dev/fuse; every mount is unmounted even when a test fails.
package fusetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/internal/testutil"
)

const mountPrefix = "emberfs-fusetest-"

// helperBin is a world-executable copy of this test binary: the POSIX suite
// runs single system calls in it as unprivileged users (see helper.go).
var helperBin string

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper(os.Args[1:]))
	}
	if os.Getenv(mountHelperEnv) != "" {
		os.Exit(runMountHelper(os.Args[1:]))
	}
	testutil.DetachDeadMounts(mountPrefix)
	bin, removeBin, err := testutil.CopyTestBinary("emberfs-fusehelper-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helperBin = bin
	stop, err := startCluster()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		removeBin()
		os.Exit(1)
	}
	code := m.Run()
	stop()
	removeBin()
	os.Exit(code)
}

// mounted is one mount for one test.
type mounted struct {
	root string // the mount point
	dir  string // this test's own directory in the mount
	srv  *fuse.Server
	be   *recordingBackend
}

// mountSeq names the tests' directories in the shared file system.
var mountSeq atomic.Int64

// mount mounts the test cluster (world-usable root, allow_other by default) through a
// new native client and unmounts it when the test ends, pass or fail. The
// test works in a fresh world-writable sticky directory (like /tmp) there,
// so unprivileged users can work in it too.
func mount(t *testing.T, opts fuse.Options) *mounted {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the FUSE tests need root (mount, allow_other, other uids)")
	}
	cl, err := newClient(t.Context(), fmt.Sprintf("fusetest-%s-%d", t.Name(), os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() }) // after the unmount (cleanups run last-in first-out)
	be := &recordingBackend{Backend: fuse.ClientBackend(cl)}
	root, err := os.MkdirTemp("", mountPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	opts.Logger = testutil.Logger()
	srv, err := fuse.Mount(context.Background(), be, root, opts)
	if err != nil {
		os.Remove(root)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		os.Remove(root)
	})
	if opts.ReadOnly {
		return &mounted{root: root, dir: root, srv: srv, be: be}
	}
	if err := os.Chmod(root, 0o1777); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, fmt.Sprintf("t%d", mountSeq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	return &mounted{root: root, dir: dir, srv: srv, be: be}
}

func (m *mounted) path(parts ...string) string {
	return filepath.Join(append([]string{m.dir}, parts...)...)
}

// sh runs a shell command line (cd-ing in the child, not through Dir, so no
// FUSE request happens between fork and exec in this process).
func sh(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", "set -e\n"+script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s\n%v\n%s", script, err, out)
	}
	return string(out)
}

// user is an unprivileged identity for the POSIX suite.
type user struct {
	uid, gid uint32
	groups   []uint32
}

var (
	nobody = user{uid: 65534, gid: 65534}
	alice  = user{uid: 2001, gid: 2001, groups: []uint32{3001}}
	bob    = user{uid: 2002, gid: 2002}
)

// as runs one operation (see helper.go) as u and returns its errno.
func as(t *testing.T, u user, op string, args ...string) syscall.Errno {
	t.Helper()
	cmd := exec.Command(helperBin, append([]string{op}, args...)...)
	// No 1 s race-detector exit delay in helpers of a -race test binary.
	cmd.Env = append(os.Environ(), helperEnv+"=1", "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper %s %v as uid %d: %v (%s)", op, args, u.uid, err, out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("helper %s %v: bad output %q", op, args, out)
	}
	return syscall.Errno(n)
}
