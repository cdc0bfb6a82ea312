package faultfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
)

func newFS(t *testing.T) (*FS, string) {
	t.Helper()
	root := t.TempDir()
	f, err := New(vfs.Default, root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return f, root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func create(t *testing.T, f *FS, name string) vfs.File {
	t.Helper()
	h, err := f.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	must(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

// image writes a crash image and returns the content of rel in it (nil,
// false when the file is absent).
func image(t *testing.T, f *FS, mode CrashMode, seed uint64, rel string) ([]byte, bool) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "img")
	must(t, f.CrashImage(dst, mode, seed))
	b, err := os.ReadFile(filepath.Join(dst, rel))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false
	}
	must(t, err)
	return b, true
}

func wantImage(t *testing.T, f *FS, mode CrashMode, rel string, want string, present bool) {
	t.Helper()
	got, ok := image(t, f, mode, 1, rel)
	if ok != present || (present && string(got) != want) {
		t.Fatalf("%s image: %s = %q (present %v), want %q (present %v)", mode, rel, got, ok, want, present)
	}
}

func TestRuleFiresOnTheChosenCall(t *testing.T) {
	f, root := newFS(t)
	a, b := create(t, f, filepath.Join(root, "a")), create(t, f, filepath.Join(root, "b"))
	i := f.Add(Rule{Ops: OpWrite, Path: "a", After: 1, Times: 1, Err: syscall.ENOSPC})
	if _, err := a.WriteAt([]byte("x"), 0); err != nil {
		t.Fatalf("first write (let through): %v", err)
	}
	if _, err := b.WriteAt([]byte("x"), 0); err != nil {
		t.Fatalf("write to another path: %v", err)
	}
	_, err := a.WriteAt([]byte("y"), 1)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("second write: %v, want ENOSPC", err)
	}
	if _, err := a.WriteAt([]byte("z"), 1); err != nil {
		t.Fatalf("third write (rule spent): %v", err)
	}
	if n := f.Fired(i); n != 1 {
		t.Fatalf("rule fired %d times, want 1", n)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "a")); string(got) != "xz" {
		t.Fatalf("file a = %q, want %q (the failed write must not happen)", got, "xz")
	}
	if n := f.Count(OpWrite); n != 4 {
		t.Fatalf("Count(OpWrite) = %d, want 4", n)
	}
}

func TestShortAndPartialWrites(t *testing.T) {
	f, root := newFS(t)
	h := create(t, f, filepath.Join(root, "a"))
	f.Add(Rule{Ops: OpWrite, Times: 1, Action: ShortWrite})
	n, err := h.WriteAt([]byte("abcdefgh"), 0)
	if n != 4 || err != nil {
		t.Fatalf("short write returned %d, %v; want 4, nil", n, err)
	}
	if err := vfs.WriteFull(h, []byte("12345678"), 0); err != nil {
		t.Fatalf("write after the rule is spent: %v", err)
	}
	f.ClearRules()
	f.Add(Rule{Ops: OpWrite, Times: 1, Action: ShortWrite})
	if err := vfs.WriteFull(h, []byte("abcdefgh"), 0); !errors.Is(err, vfs.ErrShortWrite) {
		t.Fatalf("WriteFull over a short write: %v, want ErrShortWrite", err)
	}
	f.Add(Rule{Ops: OpWrite, Times: 1, Action: PartialWrite, Err: syscall.ENOSPC})
	n, err = h.WriteAt([]byte("ABCDEFGH"), 0)
	if n != 4 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("partial write returned %d, %v; want 4, ENOSPC", n, err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "a")); string(got) != "ABCD5678" {
		t.Fatalf("file = %q, want %q", got, "ABCD5678")
	}
}

func TestCrashStopsEverything(t *testing.T) {
	f, root := newFS(t)
	h := create(t, f, filepath.Join(root, "a"))
	must(t, vfs.WriteFull(h, []byte("one"), 0))
	f.Add(Rule{Ops: OpSync, Action: CrashAfter})
	if err := h.Sync(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("sync with crash-after: %v, want ErrCrashed", err)
	}
	if !f.Crashed() {
		t.Fatal("not crashed")
	}
	if _, err := h.WriteAt([]byte("two"), 0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("write after the crash: %v", err)
	}
	if _, err := f.Stat(filepath.Join(root, "a")); !errors.Is(err, ErrCrashed) {
		t.Fatalf("stat after the crash: %v", err)
	}
	// The sync happened (crash after it), the directory entry was never
	// synced: strict POSIX loses the file, a process crash keeps it.
	wantImage(t, f, LoseUnsynced, "a", "", false)
	wantImage(t, f, KeepUnsynced, "a", "one", true)

	g, root2 := newFS(t)
	h2 := create(t, g, filepath.Join(root2, "a"))
	must(t, vfs.SyncDir(g, root2))
	must(t, vfs.WriteFull(h2, []byte("one"), 0))
	g.Add(Rule{Ops: OpSync, Action: CrashBefore})
	if err := h2.Sync(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("sync with crash-before: %v", err)
	}
	wantImage(t, g, LoseUnsynced, "a", "", true)
}

func TestCrashImageFollowsSyncs(t *testing.T) {
	root := t.TempDir()
	must(t, os.WriteFile(filepath.Join(root, "old"), []byte("before New"), 0o644))
	f, err := New(vfs.Default, root, Options{SkipRealSync: true})
	must(t, err)
	wantImage(t, f, LoseUnsynced, "old", "before New", true)

	d := filepath.Join(root, "d")
	must(t, f.Mkdir(d, 0o755))
	p := filepath.Join(d, "f")
	h := create(t, f, p)
	must(t, vfs.WriteFull(h, []byte("hello"), 0))
	dst := filepath.Join(t.TempDir(), "img")
	must(t, f.CrashImage(dst, LoseUnsynced, 1))
	if _, err := os.Stat(filepath.Join(dst, "d")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory made without syncing its parent survives a crash: %v", err)
	}
	wantImage(t, f, KeepUnsynced, "d/f", "hello", true)

	must(t, h.Sync())
	wantImage(t, f, LoseUnsynced, "d/f", "", false) // entry not durable yet
	must(t, vfs.SyncDir(f, root))
	wantImage(t, f, LoseUnsynced, "d/f", "", false) // d is durable, its entry f is not
	must(t, vfs.SyncDir(f, d))
	wantImage(t, f, LoseUnsynced, "d/f", "hello", true)

	must(t, vfs.WriteFull(h, []byte(" world"), 5))
	wantImage(t, f, LoseUnsynced, "d/f", "hello", true)
	wantImage(t, f, KeepUnsynced, "d/f", "hello world", true)
	must(t, h.Sync())
	wantImage(t, f, LoseUnsynced, "d/f", "hello world", true)

	// Replace by rename: old content until the directory is synced.
	tmp := filepath.Join(d, "tmp")
	ht := create(t, f, tmp)
	must(t, vfs.WriteFull(ht, []byte("new"), 0))
	must(t, ht.Sync())
	must(t, f.Rename(tmp, p))
	wantImage(t, f, LoseUnsynced, "d/f", "hello world", true)
	wantImage(t, f, KeepUnsynced, "d/f", "new", true)
	must(t, vfs.SyncDir(f, d))
	wantImage(t, f, LoseUnsynced, "d/f", "new", true)
	wantImage(t, f, LoseUnsynced, "d/tmp", "", false)

	must(t, f.Remove(p))
	wantImage(t, f, LoseUnsynced, "d/f", "new", true)
	wantImage(t, f, KeepUnsynced, "d/f", "", false)
}

func TestTearKeepsLosesAndTears(t *testing.T) {
	f, root := newFS(t)
	p := filepath.Join(root, "a")
	h := create(t, f, p)
	must(t, vfs.WriteFull(h, []byte("hello"), 0))
	must(t, h.Sync())
	must(t, vfs.SyncDir(f, root))
	tail := bytes.Repeat([]byte{'x'}, 100)
	must(t, vfs.WriteFull(h, tail, 5))
	var lost, kept, torn int
	for seed := uint64(0); seed < 40; seed++ {
		b, ok := image(t, f, TearUnsynced, seed, "a")
		if !ok || !bytes.HasPrefix(b, []byte("hello")) || !bytes.Equal(b[5:], tail[:len(b)-5]) {
			t.Fatalf("seed %d: image %q is no state a crash could leave", seed, b)
		}
		switch len(b) {
		case 5:
			lost++
		case 105:
			kept++
		default:
			torn++
		}
	}
	if lost == 0 || kept == 0 || torn == 0 {
		t.Fatalf("40 seeds gave %d lost, %d kept, %d torn; want each at least once", lost, kept, torn)
	}
}

func TestOutsideRootRefused(t *testing.T) {
	f, _ := newFS(t)
	if _, err := f.OpenFile(filepath.Join(t.TempDir(), "x"), os.O_RDWR|os.O_CREATE, 0o644); err == nil {
		t.Fatal("opened a file outside the root")
	}
}
