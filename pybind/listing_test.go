package pybind

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// ReadDirStat carries every entry's stat with the listing, over more than
// one page, in the same order as the names, equal to what Lstat says.
func TestReadDirStatMatchesLstat(t *testing.T) {
	c := connectTestCluster(t)
	var e Err

	must := func(what string) {
		t.Helper()
		if err := e.err(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	c.Mkdir("/d", 0o755, false, &e)
	must("mkdir")
	// More than one page (1024) of entries, of every type.
	const dirs = 1030
	for i := 0; i < dirs; i++ {
		c.Mkdir(fmt.Sprintf("/d/sub%04d", i), 0o700, false, &e)
		must("mkdir sub")
	}
	data := []byte("twelve bytes")
	f := c.Open("/d/file", os.O_WRONLY|os.O_CREATE, 0o640, &e)
	must("create")
	f.WriteFrom(uintptr(unsafe.Pointer(&data[0])), len(data), 0, &e)
	must("write")
	f.Close(&e)
	must("close")
	c.Symlink("file", "/d/link", &e)
	must("symlink")

	l := c.ReadDirStat("/d", &e)
	must("readdirstat")
	if l.Len() != dirs+2 {
		t.Fatalf("Len %d, want %d", l.Len(), dirs+2)
	}
	names := strings.Split(strings.TrimSuffix(l.Names(), "/"), "/")
	if len(names) != l.Len() {
		t.Fatalf("%d names for %d entries", len(names), l.Len())
	}
	buf := make([]byte, l.Len()*StatFields*8)
	l.CopyStats(uintptr(unsafe.Pointer(&buf[0])), len(buf)-8, &e)
	if e.Errno != int(syscall.EINVAL) {
		t.Fatalf("a stats buffer one value short: %+v, want EINVAL", e)
	}
	e = Err{}
	l.CopyStats(uintptr(unsafe.Pointer(&buf[0])), len(buf), &e)
	must("copystats")
	for i, name := range names {
		v := func(k int) int64 { return int64(binary.LittleEndian.Uint64(buf[(i*StatFields+k)*8:])) }
		want := c.Lstat("/d/"+name, &e)
		must("lstat " + name)
		got := Stat{Ino: uint64(v(0)), Mode: int(v(1)), Nlink: int(v(2)), Uid: int(v(3)), Gid: int(v(4)),
			Size: v(5), AtimeNs: v(6), MtimeNs: v(7), CtimeNs: v(8)}
		if got != *want || v(9) != 1 {
			t.Fatalf("entry %s: listing says %+v (has %d), lstat says %+v", name, got, v(9), *want)
		}
	}
	if names[0] != "file" || names[1] != "link" || names[2] != "sub0000" || names[dirs+1] != fmt.Sprintf("sub%04d", dirs-1) {
		t.Fatalf("not in name order: %q ... %q", names[:3], names[dirs+1])
	}
	if v := int64(binary.LittleEndian.Uint64(buf[5*8:])); v != int64(len(data)) {
		t.Fatalf("file size in listing %d, want %d", v, len(data))
	}

	if c.ReadDirStat("/missing", &e); e.Errno != int(syscall.ENOENT) {
		t.Fatalf("missing dir: %+v, want ENOENT", e)
	}
	e = Err{}
	if c.ReadDirStat("/d/file", &e); e.Errno != int(syscall.ENOTDIR) {
		t.Fatalf("a file: %+v, want ENOTDIR", e)
	}
	e = Err{}
	empty := c.ReadDirStat("/d/sub0000", &e)
	must("empty dir")
	if empty.Len() != 0 || empty.Names() != "" {
		t.Fatalf("empty dir: %d entries, names %q", empty.Len(), empty.Names())
	}
}
