package chunkengine

// Crash points, enumerated: a scripted workload runs on a faultfs that
// crashes just before, or just after, its k-th file-system change, for
// every k the workload makes (data writes and fsyncs, metadata appends and
// fsyncs, directory fsyncs, compaction's snapshot, rename and log reset,
// file removals, and the opening itself). Each crash is then written out
// three ways (only what was synced survives; everything survives; a
// seeded random mix, tearing writes) and the engine reopened on it must
// hold, for every chunk, the last acknowledged state or, for the chunk of
// the step the crash interrupted, the state that step would have made:
// same versions, byte-identical content with the right CRC32C, pending
// versions whose content is intact, nothing corrupt, no stray files.

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
	"github.com/emberfs/emberfs/storage/chunkengine/vfs/faultfs"
)

// mchunk is the model of one chunk's acknowledged state.
type mchunk struct {
	ver     uint64 // committed version, 0: only a pending create
	data    []byte
	pver    uint64 // pending version, 0: none
	pdata   []byte
	premove bool
}

type model map[ChunkID]mchunk

func (m model) clone() model {
	c := make(model, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// step is one call of the workload.
type step struct {
	op    string // apply, prepare, commit, abort, rmino
	id    ChunkID
	u     Update
	inode uint64 // rmino
}

func (s step) String() string {
	if s.op == "rmino" {
		return fmt.Sprintf("rmino %d", s.inode)
	}
	return fmt.Sprintf("%s %s %s", s.op, s.id, s.u.Kind)
}

func nextVersion(c mchunk, u Update) uint64 {
	if u.Kind == UpdateReplace {
		return u.Version
	}
	return c.ver + 1
}

// expect is the model after s succeeds on m.
func (s step) expect(m model) model {
	m = m.clone()
	c := m[s.id]
	switch s.op {
	case "apply":
		if s.u.Kind == UpdateRemove {
			delete(m, s.id)
			return m
		}
		m[s.id] = mchunk{ver: nextVersion(c, s.u), data: applyModel(bytes.Clone(c.data), s.u)}
	case "prepare":
		c.pver, c.premove = nextVersion(c, s.u), s.u.Kind == UpdateRemove
		c.pdata = applyModel(bytes.Clone(c.data), s.u)
		m[s.id] = c
	case "commit":
		if c.premove {
			delete(m, s.id)
			return m
		}
		m[s.id] = mchunk{ver: c.pver, data: c.pdata}
	case "abort":
		if c.ver == 0 {
			delete(m, s.id)
			return m
		}
		m[s.id] = mchunk{ver: c.ver, data: c.data}
	case "rmino":
		for id := range m {
			if id.Inode == s.inode {
				delete(m, id)
			}
		}
	}
	return m
}

// run performs s on e, checking the versions it answers against m.
func (s step) run(e *Engine, m model) error {
	c := m[s.id]
	var v uint64
	var err error
	switch s.op {
	case "apply":
		v, err = e.Apply(s.id, s.u)
	case "prepare":
		v, err = e.Prepare(s.id, s.u)
	case "commit":
		return e.Commit(s.id, c.pver, 0)
	case "abort":
		return e.Abort(s.id, c.pver)
	case "rmino":
		_, _, err = e.RemoveInode(s.inode, 0)
		return err
	}
	if err == nil && v != nextVersion(c, s.u) {
		return fmt.Errorf("%s returned version %d, model says %d", s, v, nextVersion(c, s.u))
	}
	return err
}

// crashScript covers every way an update lays out data (new file, in-place
// tail, copy), each update kind, prepare/commit/abort, remove and
// re-create, GC of an inode, pending versions left at the end, and
// (CompactBytes below) a compaction every few records.
func crashScript() []step {
	r := rand.New(rand.NewPCG(71, 72))
	A, B, C := ChunkID{1, 0}, ChunkID{1, 1}, ChunkID{2, 0}
	w := func(off, n int) Update {
		return Update{Kind: UpdateWrite, Offset: uint32(off), Data: randBytes(r, n), ChunkSize: MinChunkSize}
	}
	tr := func(n int) Update { return Update{Kind: UpdateTruncate, Length: uint32(n)} }
	return []step{
		{op: "apply", id: A, u: w(0, 8000)},       // create: new file
		{op: "apply", id: A, u: w(8000, 3000)},    // append in place
		{op: "apply", id: A, u: w(1000, 500)},     // overwrite: copy
		{op: "prepare", id: B, u: w(0, 5000)},     // pending create
		{op: "commit", id: B},                     //
		{op: "prepare", id: A, u: w(11000, 2000)}, // pending in-place tail
		{op: "abort", id: A},                      // ...cut again
		{op: "prepare", id: A, u: w(0, 12000)},    // pending new file
		{op: "commit", id: A},                     // old file removed
		{op: "apply", id: A, u: tr(4000)},         // truncate down: copy
		{op: "apply", id: A, u: tr(9000)},         // truncate up in place
		{op: "apply", id: C, u: Update{Kind: UpdateReplace, Version: 5, Data: randBytes(r, 3000), ChunkSize: MinChunkSize}},
		{op: "prepare", id: B, u: Update{Kind: UpdateRemove}}, //
		{op: "commit", id: B},                    // chunk removed
		{op: "apply", id: B, u: w(2000, 1000)},   // re-created with a hole
		{op: "prepare", id: C, u: w(3000, 1500)}, // pending tail
		{op: "apply", id: A, u: w(9000, 2500)},   //
		{op: "rmino", inode: 2},                  // GC, pending included
		{op: "apply", id: C, u: w(0, 2000)},      // re-created
		{op: "prepare", id: A, u: tr(0)},         //
		{op: "commit", id: A},                    // length 0: no file
		{op: "apply", id: A, u: w(0, 700)},       //
		{op: "prepare", id: B, u: w(0, 4000)},    // left pending
		{op: "apply", id: C, u: w(100, 100)},     //
		{op: "prepare", id: A, u: w(700, 300)},   // left pending in place
	}
}

// crashOpts are the engine options of the crash workload: syncs on, a
// compaction every few records, strict verification.
func crashOpts(fs vfs.FS) Options {
	return Options{FS: fs, CompactBytes: 300, VerifyInterval: -1, Logger: slog.New(slog.DiscardHandler)}
}

// crashRun is one run of the workload on a fresh root, with rule (if any)
// installed before the engine opens.
type crashRun struct {
	ffs      *faultfs.FS
	root     string
	acked    model // after the last acknowledged step
	inflight model // after the step the crash interrupted (acked if none)
	failed   string
}

func runCrashWorkload(t *testing.T, rule *faultfs.Rule) crashRun {
	t.Helper()
	root := scratchDir(t)
	ffs, err := faultfs.New(vfs.Default, root, faultfs.Options{SkipRealSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if rule != nil {
		ffs.Add(*rule)
	}
	run := crashRun{ffs: ffs, root: root, acked: model{}}
	run.inflight = run.acked
	e, err := Open(filepath.Join(root, "t"), crashOpts(ffs))
	if err != nil {
		if rule == nil || !ffs.Crashed() {
			t.Fatalf("open: %v", err)
		}
		run.failed = "open"
		return run
	}
	defer e.Close()
	for _, s := range crashScript() {
		next := s.expect(run.acked)
		err := s.run(e, run.acked)
		e.bg.Wait() // a compaction this step started ends before the next step
		if err != nil {
			if rule == nil || !ffs.Crashed() {
				t.Fatalf("step %s without a crash: %v", s, err)
			}
			run.inflight, run.failed = next, s.String()
			return run
		}
		run.acked, run.inflight = next, next
	}
	return run
}

// checkRecovered opens the target in an image and checks it against the
// run's models, then commits every pending version to check its content.
func checkRecovered(t *testing.T, dir string, run crashRun) {
	t.Helper()
	ffs, err := faultfs.New(vfs.Default, filepath.Dir(dir), faultfs.Options{SkipRealSync: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(dir, crashOpts(ffs))
	if err != nil {
		t.Fatalf("reopen after the crash: %v", err)
	}
	defer e.Close()
	ids := map[ChunkID]bool{}
	for id := range run.acked {
		ids[id] = true
	}
	for id := range run.inflight {
		ids[id] = true
	}
	for _, m := range e.Dump() {
		ids[m.ID] = true
		if m.Corrupt {
			t.Errorf("chunk %s marked corrupt after the crash", m.ID)
		}
	}
	pending := map[ChunkID]mchunk{}
	for id := range ids {
		got := observe(e, id)
		a, aok := run.acked[id]
		b, bok := run.inflight[id]
		var c mchunk
		switch {
		case got.matches(a, aok):
			c = a
		case got.matches(b, bok):
			c = b
		default:
			t.Errorf("chunk %s after the crash: %s; want the acknowledged %s or the interrupted step's %s",
				id, got, describe(a, aok), describe(b, bok))
			continue
		}
		if got.ok && c.pver != 0 && !c.premove {
			pending[id] = c
		}
	}
	checkNoStrays(t, e)
	// A pending version that survived must have intact content.
	for id, c := range pending {
		if err := e.Commit(id, c.pver, 0); err != nil {
			t.Errorf("commit surviving pending version %d of %s: %v", c.pver, id, err)
			continue
		}
		got, _, err := e.Read(id, 0, MaxChunkSize, false)
		if err != nil || !bytes.Equal(got, c.pdata) {
			t.Errorf("pending version %d of %s after commit: %d bytes (crc %08x), err %v; want %d bytes (crc %08x)",
				c.pver, id, len(got), crc(got), err, len(c.pdata), crc(c.pdata))
		}
	}
}

// observed is what a reopened engine says about one chunk.
type observed struct {
	ok   bool
	m    ChunkMeta
	data []byte // committed content (strictly verified read)
	err  error
}

func observe(e *Engine, id ChunkID) observed {
	m, ok := e.Stat(id)
	o := observed{ok: ok, m: m}
	if ok && m.Version != 0 {
		o.data, _, o.err = e.Read(id, 0, MaxChunkSize, true)
	}
	return o
}

func (o observed) matches(c mchunk, ok bool) bool {
	if o.ok != ok {
		return false
	}
	if !ok {
		return true
	}
	m := o.m
	if m.Version != c.ver || m.PendingVersion != c.pver || m.Corrupt || o.err != nil {
		return false
	}
	if c.ver != 0 && (m.Length != uint32(len(c.data)) || m.Checksum != crc(c.data) || !bytes.Equal(o.data, c.data)) {
		return false
	}
	if c.pver != 0 && m.PendingRemove != c.premove {
		return false
	}
	if c.pver != 0 && !c.premove && (m.PendingLength != uint32(len(c.pdata)) || m.PendingChecksum != crc(c.pdata)) {
		return false
	}
	return true
}

func (o observed) String() string {
	if !o.ok {
		return "absent"
	}
	return fmt.Sprintf("version %d length %d crc %08x read %d bytes (crc %08x, err %v) pending %d length %d crc %08x remove %v corrupt %v",
		o.m.Version, o.m.Length, o.m.Checksum, len(o.data), crc(o.data), o.err, o.m.PendingVersion, o.m.PendingLength, o.m.PendingChecksum, o.m.PendingRemove, o.m.Corrupt)
}

func describe(c mchunk, ok bool) string {
	if !ok {
		return "absent"
	}
	return fmt.Sprintf("version %d length %d crc %08x pending %d length %d crc %08x remove %v",
		c.ver, len(c.data), crc(c.data), c.pver, len(c.pdata), crc(c.pdata), c.premove)
}

// checkNoStrays: after recovery every data file is named by a version,
// a committed version's file holds exactly its length (an uncommitted
// in-place tail is cut), and no temporary snapshot is left.
func checkNoStrays(t *testing.T, e *Engine) {
	t.Helper()
	named := map[string]int64{} // path -> exact size wanted, -1: any
	e.mu.RLock()
	for _, m := range e.inodes {
		for _, c := range m {
			if g := c.st.Pending.Gen; g != 0 {
				named[e.dataPath(c.id, g)] = -1
			}
			if g := c.st.Committed.Gen; g != 0 && g != c.st.Pending.Gen {
				named[e.dataPath(c.id, g)] = int64(c.st.Committed.Length)
			}
		}
	}
	e.mu.RUnlock()
	for _, f := range dataFiles(t, e.Dir()) {
		size, ok := named[f]
		if !ok {
			t.Errorf("unreferenced data file %s after recovery", f)
			continue
		}
		if st, err := os.Stat(f); err != nil || (size >= 0 && st.Size() != size) {
			t.Errorf("data file %s after recovery: %v, want exactly the committed length %d", f, err, size)
		}
	}
	if _, err := os.Stat(filepath.Join(e.Dir(), snapTmpName)); err == nil {
		t.Error("temporary snapshot left after recovery")
	}
}

// TestCrashPoints crashes the workload before and after each of its
// file-system changes and checks every crash image.
func TestCrashPoints(t *testing.T) {
	ref := runCrashWorkload(t, nil)
	n := ref.ffs.Count(faultfs.OpMutate)
	if n < 100 {
		t.Fatalf("the workload made only %d file-system changes; the script lost its coverage", n)
	}
	// The uncrashed run itself must reopen to the final model.
	img := filepath.Join(scratchDir(t), "final")
	if err := ref.ffs.CrashImage(img, faultfs.LoseUnsynced, 0); err != nil {
		t.Fatal(err)
	}
	checkRecovered(t, filepath.Join(img, "t"), ref)

	// Crashing just before change k+1 leaves the disk exactly as crashing
	// just after change k does (only the caller's view differs, and after
	// the crash the caller can do nothing), while it asks more: a step
	// whose last change was k has been acknowledged. So "before" at every
	// k, plus the finished run above (after the last change), covers
	// every point. (What the caller does with the error matters only if
	// the machine keeps running: TestFaultMetaLogFsync.)
	modes := []faultfs.CrashMode{faultfs.LoseUnsynced, faultfs.KeepUnsynced, faultfs.TearUnsynced}
	failedSteps := map[string]int{}
	for k := 1; k <= n; k++ {
		rule := faultfs.Rule{Ops: faultfs.OpMutate, After: k - 1, Times: 1, Action: faultfs.CrashBefore}
		run := runCrashWorkload(t, &rule)
		if !run.ffs.Crashed() {
			t.Fatalf("crash before change %d of %d never happened", k, n)
		}
		failedSteps[run.failed]++
		for _, mode := range modes {
			name := fmt.Sprintf("before-%d-%s", k, mode)
			img := filepath.Join(scratchDir(t), name)
			if err := run.ffs.CrashImage(img, mode, uint64(k)); err != nil {
				t.Fatal(err)
			}
			t.Run(name, func(t *testing.T) { checkRecovered(t, filepath.Join(img, "t"), run) })
		}
	}
	// Each step of the script was interrupted by some crash point.
	for _, s := range crashScript() {
		if failedSteps[s.String()] == 0 {
			t.Errorf("no crash point interrupted step %q", s)
		}
	}
	if failedSteps["open"] == 0 {
		t.Error("no crash point interrupted the first open")
	}
	t.Logf("%d file-system changes, %d crash images; interrupted steps: %v", n, n*len(modes), failedSteps)
}

// TestCrashDuringRecovery crashes the reopen itself (removing unreferenced
// files, trimming tails, dropping pending versions, writing the repaired
// snapshot) at each of its changes, for a sample of workload crash images,
// and checks that the next reopen still finds the acknowledged state.
func TestCrashDuringRecovery(t *testing.T) {
	ref := runCrashWorkload(t, nil)
	n := ref.ffs.Count(faultfs.OpMutate)
	images, maxChanges := 0, 0
	for k := 2; k <= n; k += 5 {
		rule := faultfs.Rule{Ops: faultfs.OpMutate, After: k - 1, Times: 1, Action: faultfs.CrashBefore}
		run := runCrashWorkload(t, &rule)
		seed := uint64(1000 + k)
		// image returns a fresh copy of the same crash image (same seed)
		// and a faultfs over it.
		image := func() (*faultfs.FS, string) {
			img := filepath.Join(scratchDir(t), "img")
			if err := run.ffs.CrashImage(img, faultfs.TearUnsynced, seed); err != nil {
				t.Fatal(err)
			}
			ffs, err := faultfs.New(vfs.Default, img, faultfs.Options{SkipRealSync: true})
			if err != nil {
				t.Fatal(err)
			}
			return ffs, filepath.Join(img, "t")
		}
		cfs, dir := image()
		e, err := Open(dir, crashOpts(cfs))
		if err != nil {
			t.Fatalf("workload crash %d: reopen: %v", k, err)
		}
		e.Close()
		m := cfs.Count(faultfs.OpMutate)
		maxChanges = max(maxChanges, m)
		for j := 1; j <= m; j++ {
			rfs, dir := image()
			rfs.Add(faultfs.Rule{Ops: faultfs.OpMutate, After: j - 1, Times: 1, Action: faultfs.CrashBefore})
			if e, err := Open(dir, crashOpts(rfs)); err == nil {
				e.Close()
			}
			if !rfs.Crashed() {
				t.Fatalf("workload crash %d: recovery crash before change %d of %d never happened", k, j, m)
			}
			for _, mode := range []faultfs.CrashMode{faultfs.LoseUnsynced, faultfs.TearUnsynced} {
				name := fmt.Sprintf("workload-%d-recovery-%d-%s", k, j, mode)
				img2 := filepath.Join(scratchDir(t), name)
				if err := rfs.CrashImage(img2, mode, uint64(j)); err != nil {
					t.Fatal(err)
				}
				images++
				t.Run(name, func(t *testing.T) { checkRecovered(t, filepath.Join(img2, "t"), run) })
			}
		}
	}
	if maxChanges < 10 {
		t.Fatalf("recoveries made at most %d changes: no repair was exercised", maxChanges)
	}
	t.Logf("%d crash images of crashed recoveries (up to %d changes per recovery)", images, maxChanges)
}

// scratchDir is a directory for crash workloads and images, removed after
// the test. It is on tmpfs where there is one: faultfs models durability,
// so these tests need none from the disk, and the thousand small trees
// they write cost ten times less there than on a busy ext4.
func scratchDir(t *testing.T) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "emberfs-chunkengine-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}
