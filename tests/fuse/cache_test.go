package fusetest

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"testing"
	"unsafe"

	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/service/meta"
)

// readWhole reads p through a fresh descriptor opened with flags.
func readWhole(t *testing.T, p string, flags, n int) []byte {
	t.Helper()
	f, err := os.OpenFile(p, flags, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// O_DIRECT wants an aligned buffer.
	raw := make([]byte, n+4096)
	buf := raw[(4096-int(uintptr(unsafe.Pointer(&raw[0])))%4096)%4096:][:n]
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return buf
}

// A file unchanged since its last open keeps the kernel's page cache
// (FOPEN_KEEP_CACHE): reading it again reaches EmberFS not at all. A
// change by another client (which moves the mtime at close) makes the
// next open drop the cache and read the new bytes; O_DIRECT opens never
// use the cache and pass O_DIRECT on to the client.
func TestPageCacheKeptAcrossOpens(t *testing.T) {
	m := mount(t, fuse.Options{})
	p := m.path("kept")
	const n = 256 << 10
	data := bytes.Repeat([]byte("0123456789abcdef"), n/16)
	// Another client writes the file: a write through the mount would be
	// finalized by the kernel's asynchronous RELEASE, which may move the
	// mtime between the two reads below (correctly dropping the cache).
	other, err := newClient(t.Context(), fmt.Sprintf("fusetest-other-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.WriteFile(t.Context(), meta.User{}, meta.P(p[len(m.root):]), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readWhole(t, p, os.O_RDONLY, n); !bytes.Equal(got, data) {
		t.Fatal("first read: wrong bytes")
	}
	before := m.be.readCalls()
	if got := readWhole(t, p, os.O_RDONLY, n); !bytes.Equal(got, data) {
		t.Fatal("second read: wrong bytes")
	}
	if r := m.be.readCalls() - before; r != 0 {
		t.Fatalf("reading an unchanged file again made %d reads to EmberFS, want 0 (page cache kept)", r)
	}

	// The other client overwrites in place (same size) and closes.
	f, err := other.Open(t.Context(), meta.User{}, meta.P(p[len(m.root):]), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	changed := bytes.ToUpper(data)
	if _, err := f.WriteAt(changed, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	before = m.be.readCalls()
	if got := readWhole(t, p, os.O_RDONLY, n); !bytes.Equal(got, changed) {
		t.Fatal("read after another client's change: stale bytes")
	}
	if m.be.readCalls() == before {
		t.Fatal("the changed file was served from the page cache")
	}

	before = m.be.readCalls()
	if got := readWhole(t, p, os.O_RDONLY|syscall.O_DIRECT, n); !bytes.Equal(got, changed) {
		t.Fatal("O_DIRECT read: wrong bytes")
	}
	if m.be.lastOpenFlags()&syscall.O_DIRECT == 0 {
		t.Fatal("O_DIRECT was not passed to the client")
	}
	if m.be.readCalls() == before {
		t.Fatal("an O_DIRECT read was served from the page cache")
	}
}
