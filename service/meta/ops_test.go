package meta

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestRenameMovesAndExchanges(t *testing.T) {
	e := newEnv(t)
	s := e.s
	buildFixture(t, s)
	f, _ := s.Stat(ctx, Root, P("/d/f"))
	sub, _ := s.Stat(ctx, Root, P("/d/sub"))
	noErr(t, s.Rename(ctx, Root, P("/d/sub"), P("/e/moved"), 0))
	moved, err := s.Stat(ctx, Root, P("/e/moved/x"))
	noErr(t, err)
	if st, _ := s.Stat(ctx, Root, P("/e/moved")); st.ID != sub.ID || st.Parent != e2id(t, s, "/e") {
		t.Fatalf("moved dir: %+v", st)
	}
	if got, _ := s.Stat(ctx, Root, P("/e/moved/..")); got.ID != e2id(t, s, "/e") {
		t.Fatalf(".. of moved dir is %d", got.ID)
	}
	_ = moved
	// Replace a file: the old target loses its only link and goes to the collector.
	g := must2(s.Create(ctx, Root, P("/d/g"), CreateOptions{Mode: 0o644}))
	noErr(t, s.Rename(ctx, Root, P("/d/f"), P("/d/g"), 0))
	if st, _ := s.Stat(ctx, Root, P("/d/g")); st.ID != f.ID {
		t.Fatalf("/d/g is %d, want %d", st.ID, f.ID)
	}
	if ns, _ := s.BatchStat(ctx, []uint64{g.Inode.ID}); ns[0] != nil {
		t.Fatal("replaced file still exists")
	}
	// Exchange a file and a directory.
	noErr(t, s.Rename(ctx, Root, P("/d/g"), P("/e/moved"), RenameExchange))
	if st, _ := s.Stat(ctx, Root, P("/e/moved")); st.ID != f.ID {
		t.Fatal("exchange did not swap")
	}
	if st, _ := s.Stat(ctx, Root, P("/d/g")); st.ID != sub.ID || st.Parent != e2id(t, s, "/d") {
		t.Fatalf("exchanged dir %+v", st)
	}
	drainGC(t, s)
	if e.chunks.removedCount(g.Inode.ID) != 1 {
		t.Fatal("chunks of the replaced file were not removed")
	}
	fsckClean(t, s, e.chunks)
}

func e2id(t *testing.T, s *Server, p string) uint64 {
	t.Helper()
	n, err := s.Stat(ctx, Root, P(p))
	noErr(t, err)
	return n.ID
}

func TestHardLinksAndTruncate(t *testing.T) {
	e := newEnv(t)
	s := e.s
	buildFixture(t, s)
	noErr(t, ignore(s.Link(ctx, Root, P("/d/f"), P("/e/h1"))))
	n := must2(s.Link(ctx, Root, P("/d/link"), P("/e/h2"))) // links the symlink itself
	if n.Type != TypeSymlink || n.Nlink != 2 {
		t.Fatalf("link of symlink: %+v", n)
	}
	noErr(t, s.Unlink(ctx, Root, P("/d/f")))
	st := must2(s.Stat(ctx, Root, P("/e/h1")))
	if st.Nlink != 1 {
		t.Fatalf("nlink %d after unlinking one of two names", st.Nlink)
	}
	e.chunks.write(st.ID, 5000)
	tr := must2(s.Truncate(ctx, Root, P("/e/h1"), 100))
	if tr.Size != 100 || e.chunks.truncated[st.ID] != 100 {
		t.Fatalf("truncate: size %d, storage truncated to %d", tr.Size, e.chunks.truncated[st.ID])
	}
	o := must2(s.Create(ctx, Root, P("/e/h1"), CreateOptions{Truncate: true, Write: true, ClientID: "c"}))
	if o.Inode.Size != 0 || o.Created || o.Session == 0 {
		t.Fatalf("O_TRUNC open: %+v", o)
	}
	e.chunks.write(st.ID, 777)
	c := must2(s.Close(ctx, Root, CloseOptions{Inode: st.ID, Session: o.Session, UpdateLength: true}))
	if c.Size != 777 {
		t.Fatalf("close finalized length %d, want 777 from storage", c.Size)
	}
	wantErrno(t, ignore(s.Close(ctx, Root, CloseOptions{Inode: st.ID, Session: o.Session})), syscall.EBADF, "second close")
	fsckClean(t, s, e.chunks)
}

func TestLayoutInheritanceAndRoundRobin(t *testing.T) {
	e := newEnv(t)
	s := e.s
	noErr(t, ignore(s.Mkdir(ctx, Root, P("/ds"), 0o755, false)))
	noErr(t, ignore(s.SetDirLayout(ctx, Root, P("/ds"), Layout{ChainTable: 2, ChunkSize: 1 << 20, StripeSize: 2})))
	sub := must2(s.Mkdir(ctx, Root, P("/ds/sub"), 0o755, false))
	if sub.Layout.ChainTable != 2 || sub.Layout.StripeSize != 2 || sub.Layout.ChunkSize != 1<<20 {
		t.Fatalf("subdirectory did not inherit the layout: %+v", sub.Layout)
	}
	begins := map[uint32]int{}
	seeds := map[uint64]bool{}
	for i := range 6 {
		o := must2(s.Create(ctx, Root, P(fmt.Sprintf("/ds/sub/f%d", i)), CreateOptions{}))
		l := o.Inode.Layout
		if l.ChainTable != 2 || l.StripeSize != 2 || l.ChunkSize != 1<<20 || l.ChainBegin >= 3 {
			t.Fatalf("file layout %+v", l)
		}
		begins[l.ChainBegin]++
		seeds[l.Seed] = true
	}
	// Table 2 has 3 chains, stripe 2: the cursor moves by 2, so six files
	// start on every chain exactly twice.
	if len(begins) != 3 || begins[0] != 2 || begins[1] != 2 || begins[2] != 2 {
		t.Fatalf("chain begins not round-robin: %v", begins)
	}
	if len(seeds) != 6 {
		t.Fatalf("shuffle seeds not distinct: %d", len(seeds))
	}
	// Stripe larger than the table is capped.
	o := must2(s.Create(ctx, Root, P("/big"), CreateOptions{Layout: &Layout{ChainTable: 2, ChunkSize: 4096, StripeSize: 9}}))
	if o.Inode.Layout.StripeSize != 3 {
		t.Fatalf("stripe not capped: %+v", o.Inode.Layout)
	}
}

func TestDeferredDeletion(t *testing.T) {
	e := newEnv(t)
	s := e.s
	o1 := must2(s.Create(ctx, Root, P("/f"), CreateOptions{Mode: 0o644, Write: true, ClientID: "c1"}))
	o2 := must2(s.Open(ctx, Root, P("/f"), OpenOptions{Write: true, ClientID: "c2"}))
	id := o1.Inode.ID
	e.chunks.write(id, 10)
	noErr(t, s.Unlink(ctx, Root, P("/f")))
	n := must2(s.BatchStat(ctx, []uint64{id}))[0]
	if n == nil || n.Nlink != 0 {
		t.Fatalf("file open for writing vanished at unlink: %+v", n)
	}
	fsckClean(t, s, e.chunks) // an unlinked open file is not an orphan
	noErr(t, ignore(s.Close(ctx, Root, CloseOptions{Inode: id, Session: o1.Session, UpdateLength: true})))
	if n := must2(s.BatchStat(ctx, []uint64{id}))[0]; n == nil {
		t.Fatal("file removed while another write session is open")
	}
	noErr(t, ignore(s.Close(ctx, Root, CloseOptions{Inode: id, Session: o2.Session})))
	if n := must2(s.BatchStat(ctx, []uint64{id}))[0]; n != nil {
		t.Fatal("file not removed at last close")
	}
	drainGC(t, s)
	if e.chunks.removedCount(id) != 1 {
		t.Fatal("chunks not removed")
	}
	fsckClean(t, s, e.chunks)
}

func TestPruneSessionsOfDeadClients(t *testing.T) {
	e := newEnv(t)
	s := e.s
	dead := must2(s.Create(ctx, Root, P("/dead"), CreateOptions{Write: true, ClientID: "dead"}))
	live := must2(s.Create(ctx, Root, P("/live"), CreateOptions{Write: true, ClientID: "live"}))
	noErr(t, s.Unlink(ctx, Root, P("/dead")))
	noErr(t, s.Unlink(ctx, Root, P("/live")))
	e.clock.Advance(40 * time.Second)
	noErr(t, ignore(s.RenewClient(ctx, "live")))
	if n := must2(s.PruneSessions(ctx)); n != 0 {
		t.Fatalf("pruned %d sessions before any lease expired", n)
	}
	e.clock.Advance(40 * time.Second) // "dead" is 80 s past its open, "live" renewed 40 s ago
	if n := must2(s.PruneSessions(ctx)); n != 1 {
		t.Fatalf("pruned %d sessions, want 1", n)
	}
	ns := must2(s.BatchStat(ctx, []uint64{dead.Inode.ID, live.Inode.ID}))
	if ns[0] != nil || ns[1] == nil {
		t.Fatalf("after pruning: dead file present=%v, live file present=%v", ns[0] != nil, ns[1] != nil)
	}
	wantErrno(t, ignore(s.Close(ctx, Root, CloseOptions{Inode: live.Inode.ID, Session: live.Session})), 0, "close live")
	drainGC(t, s)
	fsckClean(t, s, e.chunks)
}

func TestRemoveAllTree(t *testing.T) {
	e := newEnv(t)
	s := e.s
	for i := range 3 {
		noErr(t, ignore(s.Mkdir(ctx, Root, P(fmt.Sprintf("/t/d%d/sub", i)), 0o755, true)))
		for j := range 150 { // more than one collector batch per directory
			o := must2(s.Create(ctx, Root, P(fmt.Sprintf("/t/d%d/sub/f%d", i, j)), CreateOptions{}))
			e.chunks.write(o.Inode.ID, 1)
		}
	}
	// One file also linked outside the tree must survive.
	keep := must2(s.Link(ctx, Root, P("/t/d1/sub/f3"), P("/keep")))
	noErr(t, s.RemoveAll(ctx, Root, P("/t")))
	wantErrno(t, ignore(s.Stat(ctx, Root, P("/t"))), syscall.ENOENT, "stat removed tree")
	fsckClean(t, s, nil) // detached, partly collected trees are consistent
	drainGC(t, s)
	rep := fsckClean(t, s, e.chunks)
	if rep.Inodes != 2 || rep.QueuedRemovals != 0 { // root and /keep
		t.Fatalf("after collection: %d inodes, %d queued", rep.Inodes, rep.QueuedRemovals)
	}
	if st := must2(s.Stat(ctx, Root, P("/keep"))); st.ID != keep.ID || st.Nlink != 1 {
		t.Fatalf("/keep: %+v", st)
	}
	if n := len(e.chunks.removed); n != 449 {
		t.Fatalf("chunks removed for %d files, want 449", n)
	}
}

func TestFsckDetectsDamage(t *testing.T) {
	e := newEnv(t)
	s := e.s
	buildFixture(t, s)
	f := must2(s.Stat(ctx, Root, P("/d/f")))
	sub := must2(s.Stat(ctx, Root, P("/d/sub")))
	d := must2(s.Stat(ctx, Root, P("/d")))
	noErr(t, s.update(ctx, func(t *txn) error {
		f.Nlink = 3 // link count mismatch
		if err := t.putInode(&f); err != nil {
			return err
		}
		d.Parent = sub.ID // cycle: /d's parent is its own child
		if err := t.putInode(&d); err != nil {
			return err
		}
		orphan := &Inode{ID: 99_999, Type: TypeFile, Nlink: 1}
		if err := t.putInode(orphan); err != nil {
			return err
		}
		return t.tx.Set(dentryKey(RootID, "ghost"), dentry{ID: 77_777, Type: TypeFile}.encode())
	}))
	e.chunks.write(55_555, 1)
	rep, err := s.Fsck(ctx, FsckOptions{OrphanChunks: e.chunks.orphans})
	noErr(t, err)
	joined := fmt.Sprint(rep.Problems)
	for _, want := range []string{"has nlink 3 but 1 entries", "records parent", "orphan file 99999", "missing inode 77777"} {
		if !strings.Contains(joined, want) {
			t.Errorf("fsck missed %q in %v", want, rep.Problems)
		}
	}
	if !slices.Equal(rep.OrphanChunkFiles, []uint64{55_555}) {
		t.Errorf("orphan chunk files %v", rep.OrphanChunkFiles)
	}
}

// Pages through a directory while other goroutines create and delete
// entries in it: every entry present throughout appears exactly once, in order.
func TestReadDirPagingUnderConcurrentChange(t *testing.T) {
	e := newEnv(t)
	s := e.s
	noErr(t, ignore(s.Mkdir(ctx, Root, P("/big"), 0o755, false)))
	stable := map[string]bool{}
	for i := range 400 {
		name := fmt.Sprintf("s%04d", i)
		stable[name] = true
		noErr(t, ignore(s.Create(ctx, Root, P("/big/"+name), CreateOptions{})))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var churn atomic.Int64
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("/big/s%04d_tmp%d", (i*37+w*101)%400, w)
				if _, err := s.Create(ctx, Root, P(name), CreateOptions{}); err == nil {
					churn.Add(1)
				}
				if i%2 == 1 {
					s.Unlink(ctx, Root, P(name))
				}
			}
		}()
	}
	for round := range 5 {
		seen := map[string]int{}
		cursor, last := "", ""
		for {
			page, err := s.ReadDir(ctx, Root, P("/big"), ReadDirOptions{Cursor: cursor, Limit: 7})
			noErr(t, err)
			for _, de := range page.Entries {
				if de.Name <= last {
					t.Fatalf("round %d: %q after %q: not strictly increasing", round, de.Name, last)
				}
				last = de.Name
				seen[de.Name]++
			}
			if !page.More {
				break
			}
			cursor = page.Entries[len(page.Entries)-1].Name
		}
		for name := range stable {
			if seen[name] != 1 {
				t.Fatalf("round %d: stable entry %q seen %d times", round, name, seen[name])
			}
		}
	}
	close(stop)
	wg.Wait()
	if churn.Load() == 0 {
		t.Fatal("no concurrent change happened")
	}
	drainGC(t, s)
	fsckClean(t, s, e.chunks)
}
