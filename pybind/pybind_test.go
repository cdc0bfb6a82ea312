package pybind

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
)

// Truncate by path (Python's os.truncate-style emberfs.Client.truncate)
// must drop the client's cached bytes of the file, as the native client's
// own Truncate does: a later read must see the new length and zeros, not
// the bytes cached before (issue 13, hole 11).
func TestTruncateByPathDropsTheClientCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lc, err := localcluster.Start(ctx, localcluster.Options{Dir: t.TempDir(), Storage: 1, Replicas: 1, TargetsPerNode: 1,
		ChunkSize: 1 << 16, NoSync: true, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close(context.Background())
	if err := lc.WaitHealthy(ctx, 1); err != nil {
		t.Fatal(err)
	}
	c, err := Connect(lc.MgmtdAddr(), lc.Token())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetUser(0, 0)

	old := bytes.Repeat([]byte("a"), 100)
	f, err := c.Open("/f", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.WriteFrom(uintptr(unsafe.Pointer(&old[0])), len(old), 0); n != len(old) || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// A handle open across the truncate, on the same client: POSIX says it
	// sees the truncate at once.
	r, err := c.Open("/f", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	read := func() []byte {
		t.Helper()
		buf := make([]byte, 200)
		n, err := r.ReadInto(uintptr(unsafe.Pointer(&buf[0])), len(buf), 0)
		if err != nil && n == 0 {
			t.Fatal(err)
		}
		return buf[:n]
	}
	if got := read(); !bytes.Equal(got, old) { // now cached
		t.Fatalf("read back %q", got)
	}
	if err := c.Truncate("/f", 0); err != nil {
		t.Fatal(err)
	}
	if got := read(); len(got) != 0 {
		t.Fatalf("after truncate to 0 by path: read %d bytes (%q), want none", len(got), got)
	}
	if err := c.Truncate("/f", 100); err != nil {
		t.Fatal(err)
	}
	if got := read(); !bytes.Equal(got, make([]byte, 100)) {
		t.Fatalf("after truncate to 0 and to 100 by path: read %q, want 100 zero bytes", got)
	}
}
