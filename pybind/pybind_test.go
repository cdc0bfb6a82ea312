package pybind

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"
	"unsafe"

	"github.com/emberfs/emberfs/internal/errcode"

	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/localcluster/clustertest"
)

// connectTestCluster starts a one-node cluster (64 KiB chunks, no fsync)
// and returns a root client on it; both close when the test ends.
func connectTestCluster(t *testing.T) *Client {
	t.Helper()
	lc := clustertest.Start(t, localcluster.Options{Storage: 1, Replicas: 1, TargetsPerNode: 1, ChunkSize: 1 << 16})
	var e Err
	c := Connect(lc.MgmtdAddr(), lc.Token(), &e)
	if err := e.err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(&Err{}) })
	c.SetUser(0, 0)
	return c
}

// Truncate by path (Python's os.truncate-style emberfs.Client.truncate)
// must drop the client's cached bytes of the file, as the native client's
// own Truncate does: a later read must see the new length and zeros, not
// the bytes cached before (issue 13, hole 11).
func TestTruncateByPathDropsTheClientCache(t *testing.T) {
	c := connectTestCluster(t)
	var e Err
	var err error

	old := bytes.Repeat([]byte("a"), 100)
	f := c.Open("/f", os.O_RDWR|os.O_CREATE, 0o644, &e)
	err = e.err()
	if err != nil {
		t.Fatal(err)
	}
	if n := f.WriteFrom(uintptr(unsafe.Pointer(&old[0])), len(old), 0, &e); n != len(old) || e.err() != nil {
		t.Fatalf("write: %d, %v", n, e.err())
	}
	if f.Close(&e); e.err() != nil {
		t.Fatal(err)
	}
	// A handle open across the truncate, on the same client: POSIX says it
	// sees the truncate at once.
	r := c.Open("/f", os.O_RDONLY, 0, &e)
	err = e.err()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(&e)
	read := func() []byte {
		t.Helper()
		buf := make([]byte, 200)
		var re Err
		n := r.ReadInto(uintptr(unsafe.Pointer(&buf[0])), len(buf), 0, &re)
		err := re.err()
		if err != nil && n == 0 {
			t.Fatal(err)
		}
		return buf[:n]
	}
	if got := read(); !bytes.Equal(got, old) { // now cached
		t.Fatalf("read back %q", got)
	}
	if c.Truncate("/f", 0, &e); e.err() != nil {
		t.Fatal(err)
	}
	if got := read(); len(got) != 0 {
		t.Fatalf("after truncate to 0 by path: read %d bytes (%q), want none", len(got), got)
	}
	if c.Truncate("/f", 100, &e); e.err() != nil {
		t.Fatal(err)
	}
	if got := read(); !bytes.Equal(got, make([]byte, 100)) {
		t.Fatalf("after truncate to 0 and to 100 by path: read %q, want 100 zero bytes", got)
	}
}

// Failures reach Python as data in Err: errno, code and message, and a
// success clears what an earlier failure left (issue 13, hole 13).
func TestErrCarriesErrnoAsData(t *testing.T) {
	var e Err
	if c := Connect("", "tok", &e); c != nil || e.Errno != int(syscall.EINVAL) || e.Code != int(errcode.InvalidArgument) || e.Message == "" {
		t.Fatalf("connect with no address: client %v, err %+v", c, e)
	}
	e.set(errors.New("plain error without a code"))
	if e.Errno != int(syscall.EIO) || e.Code != int(errcode.Internal) {
		t.Fatalf("an error without a code: %+v, want EIO", e)
	}
	e.set(errcode.WithErrno(errcode.PermissionDenied, syscall.EPERM, "owner only"))
	if e.Errno != int(syscall.EPERM) || e.Code != int(errcode.PermissionDenied) {
		t.Fatalf("explicit errno lost: %+v", e)
	}
	if got := errcode.ErrnoOf(e.err()); got != syscall.EPERM {
		t.Fatalf("round trip to a Go error: errno %v", got)
	}
	e.set(nil)
	if e != (Err{}) {
		t.Fatalf("success left %+v", e)
	}
	var none *Err
	defer func() {
		if recover() == nil {
			t.Fatal("a failure with no Err to report it passed silently")
		}
	}()
	none.set(errors.New("x"))
}
