package vfs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs/faultfs"
)

func TestReadFileLargerThanItsFirstBuffer(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	want := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes
	if err := vfs.WriteFileSync(vfs.Default, p, want, 0o644, true); err != nil {
		t.Fatal(err)
	}
	got, err := vfs.ReadFile(vfs.Default, p)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadFile: %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
	if _, err := vfs.ReadFile(vfs.Default, p+"x"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadFile of a missing file: %v", err)
	}
}

func TestLockIsExclusive(t *testing.T) {
	p := filepath.Join(t.TempDir(), "LOCK")
	l, err := vfs.Default.Lock(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vfs.Default.Lock(p); !errors.Is(err, vfs.ErrLocked) {
		t.Fatalf("second lock: %v, want ErrLocked", err)
	}
	l.Close()
	l2, err := vfs.Default.Lock(p)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.Close()
}

func TestOSFileUnwrapsWrappers(t *testing.T) {
	root := t.TempDir()
	ffs, err := faultfs.New(vfs.Default, root, faultfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ffs.OpenFile(filepath.Join(root, "f"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	osf := vfs.OSFile(f)
	if osf == nil || osf.Fd() != f.Fd() {
		t.Fatalf("OSFile of a faultfs file: %v", osf)
	}
}

func TestWriteFullCatchesShortWrites(t *testing.T) {
	root := t.TempDir()
	ffs, err := faultfs.New(vfs.Default, root, faultfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ffs.OpenFile(filepath.Join(root, "f"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ffs.Add(faultfs.Rule{Ops: faultfs.OpWrite, Times: 1, Action: faultfs.ShortWrite})
	if err := vfs.WriteFull(f, []byte("0123456789"), 0); !errors.Is(err, vfs.ErrShortWrite) {
		t.Fatalf("WriteFull over a short write: %v", err)
	}
	if err := vfs.WriteFull(f, []byte("0123456789"), 0); err != nil {
		t.Fatalf("WriteFull: %v", err)
	}
}
