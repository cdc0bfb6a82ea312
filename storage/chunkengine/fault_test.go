package chunkengine

// Tests of the engine's promises when the file system fails under it:
// an update whose write or fsync fails is not acknowledged and leaves the
// committed version readable and intact; ENOSPC answers NoSpace and the
// engine works again once space returns; short writes are caught. The
// faults come from vfs/faultfs wrapped around the real file system.

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs/faultfs"
)

// Paths of the target's files as faultfs rules see them (the target
// directory is "t" below the fault root).
const (
	ruleDataFiles = "t/data/*/*"
	ruleShardDirs = "t/data/*"
	ruleLog       = "t/meta.log"
)

// openFaulty opens an engine in root/t on a faultfs over root. Reads
// verify the whole chunk every time, so a damaged version cannot hide.
func openFaulty(t *testing.T, opts Options) (*faultfs.FS, *Engine, string) {
	t.Helper()
	root := scratchDir(t)
	ffs, err := faultfs.New(vfs.Default, root, faultfs.Options{SkipRealSync: true})
	if err != nil {
		t.Fatal(err)
	}
	opts.FS = ffs
	opts.VerifyInterval = -1
	return ffs, openT(t, filepath.Join(root, "t"), opts), root
}

// dataFiles lists the data files of target dir.
func dataFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, dataDir, "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// wantUnchanged checks that chunk id still has committed version ver with
// content want and nothing pending.
func wantUnchanged(t *testing.T, e *Engine, id ChunkID, ver uint64, want []byte) {
	t.Helper()
	m, ok := e.Stat(id)
	if !ok || m.Version != ver || m.PendingVersion != 0 || m.Corrupt {
		t.Fatalf("chunk %s after a failed update: %+v (found %v), want version %d, nothing pending, not corrupt", id, m, ok, ver)
	}
	checkContent(t, e, id, want)
}

// updateShape is one way an update lays out its new content.
type updateShape struct {
	name string
	u    Update
	op   faultfs.Op // the data-file operation that writes the new content
}

func updateShapes(r *rand.Rand) []updateShape {
	return []updateShape{
		{"append-in-place", Update{Kind: UpdateWrite, Offset: 20 << 10, Data: randBytes(r, 5000)}, faultfs.OpWrite},
		{"overwrite-copy", Update{Kind: UpdateWrite, Offset: 1000, Data: randBytes(r, 3000)}, faultfs.OpWrite},
		{"rewrite-new-file", Update{Kind: UpdateWrite, Data: randBytes(r, 30<<10)}, faultfs.OpWrite},
		{"truncate-down-copy", Update{Kind: UpdateTruncate, Length: 7000}, faultfs.OpWrite},
		{"truncate-up-in-place", Update{Kind: UpdateTruncate, Length: 40 << 10}, faultfs.OpTruncate},
		{"replace", Update{Kind: UpdateReplace, Version: 9, Data: randBytes(r, 10<<10)}, faultfs.OpWrite},
	}
}

type dataFault struct {
	name     string
	rule     faultfs.Rule
	code     errcode.Code
	newFiles bool // only for shapes that create a file
}

func dataFaults() []dataFault {
	return []dataFault{
		{"write-EIO", faultfs.Rule{Path: ruleDataFiles, Err: syscall.EIO}, errcode.Internal, false},
		{"write-ENOSPC", faultfs.Rule{Path: ruleDataFiles, Err: syscall.ENOSPC}, errcode.NoSpace, false},
		{"short-write", faultfs.Rule{Path: ruleDataFiles, Action: faultfs.ShortWrite}, errcode.Internal, false},
		{"partial-write-ENOSPC", faultfs.Rule{Path: ruleDataFiles, Action: faultfs.PartialWrite, Err: syscall.ENOSPC}, errcode.NoSpace, false},
		{"fdatasync-EIO", faultfs.Rule{Ops: faultfs.OpSync, Path: ruleDataFiles, Err: syscall.EIO}, errcode.Internal, false},
		{"dir-fsync-EIO", faultfs.Rule{Ops: faultfs.OpSync, Path: ruleShardDirs, Err: syscall.EIO}, errcode.Internal, true},
	}
}

// TestFaultDataWrite fails the write or sync of each kind of update's new
// content, through Apply and through Prepare.
func TestFaultDataWrite(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, shape := range updateShapes(r) {
		for _, fault := range dataFaults() {
			if shape.op == faultfs.OpTruncate && fault.rule.Ops == 0 {
				fault.rule.Ops = faultfs.OpTruncate
				if fault.rule.Action != faultfs.Fail {
					continue // short and partial writes are writes
				}
			}
			if fault.newFiles && strings.HasSuffix(shape.name, "in-place") {
				continue // an in-place update makes no directory entry
			}
			if fault.rule.Ops == 0 {
				fault.rule.Ops = faultfs.OpWrite
			}
			for _, prepare := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/prepare=%v", shape.name, fault.name, prepare)
				t.Run(name, func(t *testing.T) { testDataFault(t, shape, fault, prepare, r) })
			}
		}
	}
}

func testDataFault(t *testing.T, shape updateShape, fault dataFault, prepare bool, r *rand.Rand) {
	ffs, e, root := openFaulty(t, Options{})
	id := ChunkID{Inode: 7, Index: 3}
	old := randBytes(r, 20<<10)
	mustApply(t, e, id, Update{Kind: UpdateWrite, Data: old, ChunkSize: MinChunkSize})
	// The shard directory exists now; a second chunk shares none of this one's files.
	other := ChunkID{Inode: 8}
	otherData := randBytes(r, 3000)
	mustApply(t, e, other, Update{Kind: UpdateWrite, Data: otherData, ChunkSize: MinChunkSize})
	if fault.newFiles {
		// The fsync of this chunk's shard directory after the new file's create.
		fault.rule.Path = filepath.ToSlash(filepath.Join("t", dataDir, fmt.Sprintf("%02x", dataShard(id))))
	}
	fault.rule.Times = 1
	rule := ffs.Add(fault.rule)
	do := func() error {
		if prepare {
			_, err := e.Prepare(id, shape.u)
			return err
		}
		_, err := e.Apply(id, shape.u)
		return err
	}
	err := do()
	if n := ffs.Fired(rule); n != 1 {
		t.Fatalf("the fault fired %d times (update returned %v): the test did not test it", n, err)
	}
	wantCode(t, err, fault.code)
	wantUnchanged(t, e, id, 1, old)
	checkContent(t, e, other, otherData)
	if n := len(dataFiles(t, e.Dir())); n != 2 {
		t.Fatalf("%d data files after the failed update, want 2 (the failed one's file removed)", n)
	}

	// The fault has passed: the same update now works.
	want := applyModel(bytes.Clone(old), shape.u)
	wantVer := uint64(2)
	if shape.u.Kind == UpdateReplace {
		wantVer = shape.u.Version
	}
	if err := do(); err != nil {
		t.Fatalf("update after the fault passed: %v", err)
	}
	if prepare {
		if err := e.Commit(id, wantVer, 0); err != nil {
			t.Fatalf("commit after the fault passed: %v", err)
		}
	}
	wantUnchanged(t, e, id, wantVer, want)

	// And the target reopens (on the plain file system) in that state.
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := openT(t, filepath.Join(root, "t"), Options{VerifyInterval: -1})
	wantUnchanged(t, e2, id, wantVer, want)
	checkContent(t, e2, other, otherData)
}

// TestFaultMetaLogWrite fails the append of a metadata record: the update
// is refused, nothing of the record stays in the log, and later updates
// are durable (a torn record left in the middle would hide them at replay).
func TestFaultMetaLogWrite(t *testing.T) {
	for _, fault := range []struct {
		name string
		rule faultfs.Rule
		code errcode.Code
	}{
		{"EIO", faultfs.Rule{Err: syscall.EIO}, errcode.Internal},
		{"ENOSPC", faultfs.Rule{Err: syscall.ENOSPC}, errcode.NoSpace},
		{"short-write", faultfs.Rule{Action: faultfs.ShortWrite}, errcode.Internal},
		{"partial-write-ENOSPC", faultfs.Rule{Action: faultfs.PartialWrite, Err: syscall.ENOSPC}, errcode.NoSpace},
	} {
		t.Run(fault.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(21, 22))
			ffs, e, root := openFaulty(t, Options{})
			id := ChunkID{Inode: 1}
			v1 := randBytes(r, 9000)
			mustApply(t, e, id, Update{Kind: UpdateWrite, Data: v1, ChunkSize: MinChunkSize})
			fault.rule.Ops, fault.rule.Path, fault.rule.Times = faultfs.OpWrite, ruleLog, 1
			rule := ffs.Add(fault.rule)
			_, err := e.Apply(id, Update{Kind: UpdateWrite, Offset: 9000, Data: randBytes(r, 100)})
			if ffs.Fired(rule) != 1 {
				t.Fatalf("fault did not fire (update: %v)", err)
			}
			wantCode(t, err, fault.code)
			wantUnchanged(t, e, id, 1, v1)
			// Commits and aborts write records too: all work again.
			v2 := randBytes(r, 5000)
			mustApply(t, e, id, Update{Kind: UpdateWrite, Offset: 9000, Data: v2})
			pv, err := e.Prepare(id, Update{Kind: UpdateTruncate, Length: 100})
			if err != nil {
				t.Fatalf("prepare after the fault: %v", err)
			}
			if err := e.Commit(id, pv, 0); err != nil {
				t.Fatalf("commit after the fault: %v", err)
			}
			want := append(bytes.Clone(v1), v2...)[:100]
			wantUnchanged(t, e, id, 3, want)
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			e2 := openT(t, filepath.Join(root, "t"), Options{VerifyInterval: -1})
			wantUnchanged(t, e2, id, 3, want)
		})
	}
}

// TestFaultMetaLogFsync fails the fsync of a metadata record. The update
// is not acknowledged; the log refuses further work (after a failed fsync
// the kernel's page cache state is unknown); reads go on. Whether the
// record survives is up to the disk: the target must reopen intact either
// way, at the old version when the record is lost (a crash image keeping
// only what was synced) and at the new one when the record stayed in the
// file (a plain reopen). Deleting the new version's data on the failure
// would leave the second case a committed version without its file.
func TestFaultMetaLogFsync(t *testing.T) {
	for _, prepare := range []bool{false, true} {
		for _, shape := range []string{"new-file", "in-place"} {
			t.Run(fmt.Sprintf("%s/prepare=%v", shape, prepare), func(t *testing.T) {
				r := rand.New(rand.NewPCG(31, 32))
				ffs, e, root := openFaulty(t, Options{})
				id := ChunkID{Inode: 1}
				v1 := randBytes(r, 9000)
				mustApply(t, e, id, Update{Kind: UpdateWrite, Data: v1, ChunkSize: MinChunkSize})
				u := Update{Kind: UpdateWrite, Data: randBytes(r, 12000)} // covers v1: a new file
				if shape == "in-place" {
					u.Offset = 9000
				}
				want := applyModel(bytes.Clone(v1), u)
				rule := ffs.Add(faultfs.Rule{Ops: faultfs.OpSync, Path: ruleLog, Times: 1})
				var err error
				if prepare {
					_, err = e.Prepare(id, u)
				} else {
					_, err = e.Apply(id, u)
				}
				if ffs.Fired(rule) != 1 {
					t.Fatalf("fault did not fire (update: %v)", err)
				}
				wantCode(t, err, errcode.Internal)
				wantUnchanged(t, e, id, 1, v1)
				_, err = e.Apply(ChunkID{Inode: 2}, Update{Kind: UpdateWrite, Data: []byte("x"), ChunkSize: MinChunkSize})
				if err == nil {
					t.Fatal("the log accepted an update after a failed fsync")
				}
				e.Close()

				lose := filepath.Join(scratchDir(t), "lose")
				if err := ffs.CrashImage(lose, faultfs.LoseUnsynced, 0); err != nil {
					t.Fatal(err)
				}
				eLose := openT(t, filepath.Join(lose, "t"), Options{VerifyInterval: -1})
				wantUnchanged(t, eLose, id, 1, v1)

				eKeep := openT(t, filepath.Join(root, "t"), Options{VerifyInterval: -1})
				if prepare {
					m, _ := eKeep.Stat(id)
					if m.PendingVersion != 2 {
						t.Fatalf("reopened with the record: %+v, want pending version 2", m)
					}
					if err := eKeep.Commit(id, 2, 0); err != nil {
						t.Fatal(err)
					}
				}
				wantUnchanged(t, eKeep, id, 2, want)
			})
		}
	}
}

// TestFaultNoSpaceThenSpaceReturns runs a full disk against every kind of
// update: each answers NoSpace and changes nothing; reads keep working;
// once space returns the same updates succeed.
func TestFaultNoSpaceThenSpaceReturns(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	ffs, e, root := openFaulty(t, Options{})
	a, b := ChunkID{Inode: 1}, ChunkID{Inode: 1, Index: 1}
	va := randBytes(r, 20<<10)
	mustApply(t, e, a, Update{Kind: UpdateWrite, Data: va, ChunkSize: MinChunkSize})
	pv, err := e.Prepare(a, Update{Kind: UpdateWrite, Offset: 20 << 10, Data: randBytes(r, 100)})
	if err != nil {
		t.Fatal(err)
	}
	// (Shrinking a file needs no space: the log's cut of a failed append
	// must work on a full disk.)
	full := ffs.Add(faultfs.Rule{Ops: faultfs.OpWrite | faultfs.OpCreate | faultfs.OpMkdir, Path: "t/*", Err: syscall.ENOSPC})
	fullData := ffs.Add(faultfs.Rule{Ops: faultfs.OpWrite | faultfs.OpCreate | faultfs.OpMkdir | faultfs.OpTruncate, Path: "t/data/*/*", Err: syscall.ENOSPC})
	updates := []struct {
		name string
		do   func() error
	}{
		{"create", func() error {
			_, err := e.Apply(b, Update{Kind: UpdateWrite, Data: randBytes(r, 1000), ChunkSize: MinChunkSize})
			return err
		}},
		{"commit", func() error { return e.Commit(a, pv, 0) }},
		{"abort", func() error { return e.Abort(a, pv) }},
	}
	for _, u := range updates {
		wantCode(t, u.do(), errcode.NoSpace)
	}
	if ffs.Fired(full)+ffs.Fired(fullData) < len(updates) {
		t.Fatalf("the full disk refused %d operations for %d updates", ffs.Fired(full)+ffs.Fired(fullData), len(updates))
	}
	m, _ := e.Stat(a)
	if m.Version != 1 || m.PendingVersion != pv {
		t.Fatalf("chunk after refused commit and abort: %+v", m)
	}
	if _, ok := e.Stat(b); ok {
		t.Fatal("a refused create left a chunk")
	}
	if got, _, err := e.Read(a, 0, MaxChunkSize, true); err != nil || !bytes.Equal(got, va) {
		t.Fatalf("relaxed read on a full disk: %v", err)
	}

	ffs.ClearRules() // space returns
	if err := e.Commit(a, pv, 0); err != nil {
		t.Fatalf("commit once space returned: %v", err)
	}
	vb := randBytes(r, 1000)
	mustApply(t, e, b, Update{Kind: UpdateWrite, Data: vb, ChunkSize: MinChunkSize})
	for _, s := range updateShapes(r) {
		if s.u.Kind == UpdateReplace {
			continue
		}
		ffs.Add(faultfs.Rule{Ops: faultfs.OpWrite | faultfs.OpCreate | faultfs.OpTruncate, Path: "t/data/*/*", Err: syscall.ENOSPC})
		_, err := e.Apply(b, s.u)
		wantCode(t, err, errcode.NoSpace)
		ffs.ClearRules()
		m, _ := e.Stat(b)
		_, err = e.Apply(b, s.u)
		if err != nil {
			t.Fatalf("%s once space returned: %v", s.name, err)
		}
		vb = applyModel(vb, s.u)
		wantUnchanged(t, e, b, m.Version+1, vb)
	}
	e.Close()
	e2 := openT(t, filepath.Join(root, "t"), Options{VerifyInterval: -1})
	checkContent(t, e2, b, vb)
}

// TestFaultReadEIO: a read error is reported, does not mark the chunk
// corrupt (a disk hiccup is not proof of bad data), and the next read
// works.
func TestFaultReadEIO(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	ffs, e, _ := openFaulty(t, Options{})
	id := ChunkID{Inode: 1}
	v := randBytes(r, 30<<10)
	mustApply(t, e, id, Update{Kind: UpdateWrite, Data: v, ChunkSize: MinChunkSize})
	rule := ffs.Add(faultfs.Rule{Ops: faultfs.OpRead, Path: ruleDataFiles, Times: 1})
	_, _, err := e.Read(id, 100, 100, false)
	if ffs.Fired(rule) != 1 {
		t.Fatalf("fault did not fire (read: %v)", err)
	}
	wantCode(t, err, errcode.Internal)
	if e.IsCorrupt(id) {
		t.Fatal("a read error marked the chunk corrupt")
	}
	checkContent(t, e, id, v)
}

// TestFaultCompaction fails each step of a metadata compaction once: the
// engine logs it and carries on, every acknowledged update survives a
// reopen, and a later compaction succeeds.
func TestFaultCompaction(t *testing.T) {
	for _, fault := range []faultfs.Rule{
		{Ops: faultfs.OpCreate, Path: "t/" + snapTmpName},
		{Ops: faultfs.OpWrite, Path: "t/" + snapTmpName, Err: syscall.ENOSPC},
		{Ops: faultfs.OpSync, Path: "t/" + snapTmpName},
		{Ops: faultfs.OpRename, Path: "t/" + snapTmpName},
		{Ops: faultfs.OpSync, Path: "t"},
		{Ops: faultfs.OpTruncate, Path: ruleLog},
	} {
		t.Run(fault.Ops.String()+" "+fault.Path, func(t *testing.T) {
			r := rand.New(rand.NewPCG(61, 62))
			ffs, e, root := openFaulty(t, Options{CompactBytes: 400})
			fault.Times = 1
			rule := ffs.Add(fault)
			want := map[ChunkID][]byte{}
			for i := range 30 {
				id := ChunkID{Inode: uint64(i % 4)}
				d := randBytes(r, 100+r.IntN(2000))
				if _, err := e.Apply(id, Update{Kind: UpdateWrite, Offset: uint32(len(want[id])), Data: d, ChunkSize: MinChunkSize}); err != nil {
					if ffs.Fired(rule) == 1 && fault.Ops == faultfs.OpTruncate {
						// A failed log truncate after a snapshot leaves the
						// log refusing work until reopened: by design.
						break
					}
					t.Fatalf("update %d: %v", i, err)
				}
				want[id] = append(want[id], d...)
				e.bg.Wait() // compaction finished (or failed) before the next update
			}
			if ffs.Fired(rule) != 1 {
				t.Fatal("the compaction fault never fired")
			}
			e.Close()
			e2 := openT(t, filepath.Join(root, "t"), Options{VerifyInterval: -1})
			for id, d := range want {
				checkContent(t, e2, id, d)
			}
			if _, err := os.Stat(filepath.Join(root, "t", snapTmpName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("temporary snapshot left after reopen: %v", err)
			}
		})
	}
}
