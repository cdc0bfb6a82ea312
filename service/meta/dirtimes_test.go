package meta

import (
	"context"
	"testing"
	"time"

	"github.com/emberfs/emberfs/service/kv"
)

// TestDirTimesMaxMergedAcrossServers: two meta servers over one engine
// whose clocks disagree record entry changes of one directory; its mtime
// and ctime are the latest of them whatever the order the records were
// written in, an explicit older mtime set afterwards wins, and a later
// change moves them again.
func TestDirTimesMaxMergedAcrossServers(t *testing.T) {
	a := newEnv(t)
	b := newEnvOn(t, a.kv, a.chunks)
	ctx := context.Background()
	base := a.clock.Now()
	b.clock.Advance(-time.Hour) // b's clock is an hour behind a's
	dir, err := a.s.Mkdir(ctx, Root, P("/d"), 0o755, false)
	noErr(t, err)
	a.clock.Advance(10 * time.Second)
	_, err = a.s.Create(ctx, Root, P("/d/f"), CreateOptions{Mode: 0o644, Exclusive: true})
	noErr(t, err)
	_, err = b.s.Create(ctx, Root, P("/d/g"), CreateOptions{Mode: 0o644, Exclusive: true})
	noErr(t, err)
	want := base.Add(10 * time.Second)
	for _, s := range []*Server{a.s, b.s} {
		st, err := s.Stat(ctx, Root, P("/d"))
		noErr(t, err)
		if !st.Mtime.Equal(want) || !st.Ctime.Equal(want) {
			t.Fatalf("after creates at %v (a) and %v (b): mtime %v ctime %v, want both %v", want, b.clock.Now(), st.Mtime, st.Ctime, want)
		}
	}
	if !dir.Mtime.Equal(base) {
		t.Fatalf("mkdir returned mtime %v, want %v", dir.Mtime, base)
	}
	// Every way of reading a directory's attributes merges the records.
	ino, err := a.s.Lookup(ctx, Root, RootID, "d")
	noErr(t, err)
	page, err := a.s.ReadDir(ctx, Root, P("/"), ReadDirOptions{WithStat: true})
	noErr(t, err)
	batch, err := a.s.BatchStat(ctx, []uint64{ino.ID})
	noErr(t, err)
	paths, _, err := a.s.BatchStatPaths(ctx, Root, []PathAt{P("/d")})
	noErr(t, err)
	var listed *Inode
	for _, e := range page.Entries {
		if e.Name == "d" {
			listed = e.Inode
		}
	}
	for what, got := range map[string]time.Time{"lookup": ino.Mtime, "readdir": listed.Mtime, "batchstat": batch[0].Mtime, "batchstatpaths": paths[0].Mtime} {
		if !got.Equal(want) {
			t.Errorf("%s: mtime %v, want %v", what, got, want)
		}
	}
	// touch -d of an older time wins over the records (tar restores
	// directory times after filling them).
	old := time.Unix(1_000_000_000, 5)
	_, err = b.s.SetAttr(ctx, Root, P("/d"), SetAttr{Mtime: &old})
	noErr(t, err)
	st, err := a.s.Stat(ctx, Root, P("/d"))
	noErr(t, err)
	if !st.Mtime.Equal(old) {
		t.Fatalf("after utimes: mtime %v, want %v", st.Mtime, old)
	}
	if !st.Ctime.Equal(want) { // the setattr's own ctime is b's earlier clock; the fold kept the latest
		t.Fatalf("after utimes: ctime %v, want %v", st.Ctime, want)
	}
	// A later removal moves them again.
	a.clock.Advance(time.Second)
	noErr(t, a.s.Unlink(ctx, Root, P("/d/f")))
	st, err = b.s.Stat(ctx, Root, P("/d"))
	noErr(t, err)
	if want := a.clock.Now(); !st.Mtime.Equal(want) || !st.Ctime.Equal(want) {
		t.Fatalf("after unlink: mtime %v ctime %v, want %v", st.Mtime, st.Ctime, want)
	}
	// A removed directory leaves no records behind.
	noErr(t, a.s.Unlink(ctx, Root, P("/d/g")))
	noErr(t, a.s.Rmdir(ctx, Root, P("/d")))
	p := dirTimePrefix(ino.ID)
	_ = a.s.view(ctx, Root, func(tx *txn) error {
		kvs, err := tx.r.GetRange(p, kv.PrefixEnd(p), kv.RangeOptions{})
		noErr(t, err)
		if len(kvs) != 0 {
			t.Errorf("%d change records of a removed directory remain", len(kvs))
		}
		return nil
	})
	fsckClean(t, a.s, a.chunks)
}

// TestDirNlinkCountsSubdirectories: nlink is 2 + subdirectories through
// mkdir, mkdir -p, rmdir, renames of directories (across directories,
// over an empty directory, exchanged with a file) and RemoveAll.
func TestDirNlinkCountsSubdirectories(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	nlink := func(path string, want uint32) {
		t.Helper()
		st, err := e.s.Stat(ctx, Root, P(path))
		noErr(t, err)
		if st.Nlink != want {
			t.Fatalf("%s: nlink %d, want %d", path, st.Nlink, want)
		}
	}
	mkdir := func(path string) {
		t.Helper()
		_, err := e.s.Mkdir(ctx, Root, P(path), 0o755, false)
		noErr(t, err)
	}
	mkdir("/a")
	mkdir("/b")
	nlink("/", 4)
	mkdir("/a/x")
	mkdir("/a/y")
	_, err := e.s.Create(ctx, Root, P("/a/f"), CreateOptions{Mode: 0o644, Exclusive: true})
	noErr(t, err)
	nlink("/a", 4)
	_, err = e.s.Mkdir(ctx, Root, P("/b/p/q/r"), 0o755, true)
	noErr(t, err)
	nlink("/b", 3)
	nlink("/b/p", 3)
	nlink("/b/p/q", 3)
	nlink("/b/p/q/r", 2)
	noErr(t, e.s.Rename(ctx, Root, P("/a/x"), P("/b/x"), 0))
	nlink("/a", 3)
	nlink("/b", 4)
	noErr(t, e.s.Rename(ctx, Root, P("/a/y"), P("/b/x"), 0)) // over an empty directory
	nlink("/a", 2)
	nlink("/b", 4)
	noErr(t, e.s.Rename(ctx, Root, P("/b/x"), P("/b/z"), 0)) // within one directory
	nlink("/b", 4)
	noErr(t, e.s.Rename(ctx, Root, P("/b/z"), P("/a/f"), RenameExchange))
	nlink("/a", 3)
	nlink("/b", 3)
	noErr(t, e.s.Rmdir(ctx, Root, P("/a/f")))
	nlink("/a", 2)
	noErr(t, e.s.RemoveAll(ctx, Root, P("/b/p")))
	nlink("/b", 2)

	// A directory made before counts were kept (no flag, nlink 2) is
	// counted at its first change: three subdirectories and a file.
	mkdir("/old")
	for _, d := range []string{"/old/1", "/old/2", "/old/3"} {
		mkdir(d)
	}
	_, err = e.s.Create(ctx, Root, P("/old/f"), CreateOptions{Mode: 0o644, Exclusive: true})
	noErr(t, err)
	legacy := func() {
		t.Helper()
		noErr(t, e.s.update(ctx, func(tx *txn) error {
			n, err := tx.resolve(P("/old"))
			if err != nil {
				return err
			}
			n.Nlink, n.subdirsCounted = 2, false
			return tx.putInode(n)
		}))
		nlink("/old", 2)
	}
	legacy()
	mkdir("/old/4")
	nlink("/old", 6)
	legacy()
	noErr(t, e.s.Rmdir(ctx, Root, P("/old/4")))
	nlink("/old", 5)
	legacy()
	noErr(t, e.s.Rename(ctx, Root, P("/old/3"), P("/a/3"), 0))
	nlink("/old", 4)
	drainGC(t, e.s)
	fsckClean(t, e.s, e.chunks)
}

// TestFsckChecksDirectoryCountsAndRecords: fsck reports a counted
// directory whose nlink is not 2 + subdirectories and a change record of
// an inode that is not a directory.
func TestFsckChecksDirectoryCountsAndRecords(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.s.Mkdir(ctx, Root, P("/a/b"), 0o755, true)
	noErr(t, err)
	f, err := e.s.Create(ctx, Root, P("/f"), CreateOptions{Mode: 0o644, Exclusive: true})
	noErr(t, err)
	fsckClean(t, e.s, e.chunks)
	noErr(t, e.s.update(ctx, func(tx *txn) error {
		a, err := tx.resolve(P("/a"))
		if err != nil {
			return err
		}
		a.Nlink = 7
		if err := tx.putInode(a); err != nil {
			return err
		}
		return tx.tx.Set(dirTimeKey(f.Inode.ID, 1), appendTime(nil, tx.now))
	}))
	rep, err := e.s.Fsck(ctx, FsckOptions{})
	noErr(t, err)
	if len(rep.Problems) != 2 {
		t.Fatalf("fsck problems %q, want the nlink of /a and the record of file %d", rep.Problems, f.Inode.ID)
	}
}
