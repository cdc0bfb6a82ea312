package checkpoint_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/checkpoint"
	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// Flipping bytes of one tensor's chunk files on disk makes the load fail
// with an error naming that tensor and its file; the other tensors load.
func TestCorruptChunkNamesTensor(t *testing.T) {
	c := startCluster(t, 1)
	ctx := ctxT(t)
	s := newStore(t, c, checkpoint.Options{})
	ts := makeTensors(2, []int{1000, 3 * testChunk, 2000})
	sv, err := s.Begin(ctx, "/job", "step-1")
	if err != nil {
		t.Fatal(err)
	}
	var m checkpoint.Manifest
	m.Tensors = append(m.Tensors, writeShard(t, ctx, s, sv.Pending, "rank-0.bin", tensorSet{ts.names[:1], ts.data[:1]})...)
	m.Tensors = append(m.Tensors, writeShard(t, ctx, s, sv.Pending, "rank-1.bin", tensorSet{ts.names[1:2], ts.data[1:2]})...)
	m.Tensors = append(m.Tensors, writeShard(t, ctx, s, sv.Pending, "rank-2.bin", tensorSet{ts.names[2:], ts.data[2:]})...)
	p, err := sv.Commit(ctx, &m, 0)
	if err != nil {
		t.Fatal(err)
	}
	ino, err := s.Client().Stat(ctx, meta.Root, meta.P(p+"/rank-1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(c.Options().Dir, "storage*", "target*", "*", "*", fmt.Sprintf("%016x.%08x.*", ino.ID, 1)))
	if len(files) == 0 {
		t.Fatalf("no chunk file of inode %d index 1 under %s", ino.ID, c.Options().Dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i := 100; i < 110; i++ {
			b[i] ^= 0xff
		}
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The storage service may catch the flip itself (the chunk's own
	// CRC32C; with one replica the read then fails after the storage
	// client's retries, kept short here) or hand the bytes over, and the
	// tensor's CRC32C catches it: either way the error names the tensor
	// and its file.
	fresh := newStoreCfg(t, c, client.Config{Storage: storageclient.Config{RetryTimeout: time.Second}}, checkpoint.Options{})
	err = loadAll(ctx, fresh, p, ts)
	if err == nil || !strings.Contains(err.Error(), ts.names[1]) || !strings.Contains(err.Error(), "rank-1.bin") {
		t.Fatalf("load of a corrupt tensor: %v; want an error naming %q and rank-1.bin", err, ts.names[1])
	}
	if err := loadAll(ctx, fresh, p, tensorSet{[]string{ts.names[0], ts.names[2]}, [][]byte{ts.data[0], ts.data[2]}}); err != nil {
		t.Fatalf("intact tensors: %v", err)
	}
}

// Bytes of a published shard overwritten through EmberFS (storage's own
// checksums then agree with the new bytes): the tensor's CRC32C in the
// manifest catches it, naming the tensor and file.
func TestOverwrittenShardFailsTensorCRC(t *testing.T) {
	c := startCluster(t, 3)
	ctx := ctxT(t)
	s := newStore(t, c, checkpoint.Options{})
	ts := makeTensors(6, []int{1000, 3 * testChunk, 2000})
	p := saveAll(t, ctx, s, "/job", "step-1", ts, 1, 0)
	r, err := s.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	tn, _ := r.Tensor(ts.names[1])
	r.Close()
	f, err := s.Client().Open(ctx, meta.Root, meta.P(p+"/"+tn.File), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{ts.data[1][testChunk+5] ^ 1}, tn.Offset+testChunk+5); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	err = loadAll(ctx, newStore(t, c, checkpoint.Options{}), p, ts)
	if !errcode.Is(err, errcode.ChecksumMismatch) || !strings.Contains(err.Error(), ts.names[1]) || !strings.Contains(err.Error(), tn.File) {
		t.Fatalf("load of an overwritten tensor: %v; want a checksum mismatch naming %q and %s", err, ts.names[1], tn.File)
	}
}

// A shard file removed after publishing: the load names the file.
func TestMissingShardNamesFile(t *testing.T) {
	c := startCluster(t, 1)
	ctx := ctxT(t)
	s := newStore(t, c, checkpoint.Options{})
	ts := makeTensors(3, []int{500, 70000, 3})
	p := saveAll(t, ctx, s, "/job", "step-1", ts, 2, 0)
	if err := s.Client().Remove(ctx, meta.Root, meta.P(p+"/rank-1.bin")); err != nil {
		t.Fatal(err)
	}
	err := loadAll(ctx, s, p, ts)
	if !errcode.Is(err, errcode.NotFound) || !strings.Contains(err.Error(), "rank-1.bin") || !strings.Contains(err.Error(), ts.names[1]) {
		t.Fatalf("load with a missing shard: %v", err)
	}
}

// Commit refuses a manifest whose tensors lie past their file's end or in
// a file that is not there, and nothing is published.
func TestCommitChecksManifest(t *testing.T) {
	c := startCluster(t, 1)
	ctx := ctxT(t)
	s := newStore(t, c, checkpoint.Options{})
	sv, err := s.Begin(ctx, "/job", "bad")
	if err != nil {
		t.Fatal(err)
	}
	ws := writeShard(t, ctx, s, sv.Pending, "rank-0.bin", makeTensors(4, []int{100}))
	long := ws[0]
	long.Length++
	if _, err := s.Commit(ctx, sv.Pending, &checkpoint.Manifest{Tensors: []checkpoint.Tensor{long}}, 0); !errcode.Is(err, errcode.OutOfRange) {
		t.Fatalf("tensor past the end: %v", err)
	}
	other := ws[0]
	other.File = "rank-9.bin"
	if _, err := s.Commit(ctx, sv.Pending, &checkpoint.Manifest{Tensors: []checkpoint.Tensor{other}}, 0); !errcode.Is(err, errcode.NotFound) || !strings.Contains(err.Error(), "rank-9.bin") {
		t.Fatalf("tensor in a missing file: %v", err)
	}
	if _, err := checkpoint.ParseManifest([]byte(`{"version": 2, "tensors": []}`)); !errcode.Is(err, errcode.NotSupported) {
		t.Fatalf("version 2: %v", err)
	}
	if _, err := checkpoint.ParseManifest([]byte(`{"tensors": [{"name": "a", "file": "f"}, {"name": "a", "file": "f"}]}`)); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("duplicate names: %v", err)
	}
	if _, err := s.Inspect(ctx, "/job/bad"); !errcode.Is(err, errcode.NotFound) {
		t.Fatalf("refused commit published something: %v", err)
	}
	if err := sv.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if ents, err := s.Client().ReadDir(ctx, meta.Root, meta.P("/job"), false); err != nil || len(ents) != 0 {
		t.Fatalf("after abort /job holds %v, %v", ents, err)
	}
}

// Two saves to one name at once: exactly one publishes, the other gets
// AlreadyExists, and the published checkpoint is entirely one of them.
func TestConcurrentSavesOneWins(t *testing.T) {
	c := startCluster(t, 3)
	ctx := ctxT(t)
	a := makeTensors(10, []int{5000, 3 * testChunk, 10})
	b := makeTensors(11, []int{5000, 3 * testChunk, 10})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, ts := range []tensorSet{a, b} {
		s := newStore(t, c, checkpoint.Options{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			sv, err := s.Begin(ctx, "/job", "step-5")
			if err != nil {
				errs[i] = err
				return
			}
			var m checkpoint.Manifest
			w, err := s.OpenShard(ctx, sv.Pending, "rank-0.bin")
			if err != nil {
				errs[i] = err
				return
			}
			out, err := w.Write(ts.data)
			if err == nil {
				err = w.Close()
			}
			if err != nil {
				errs[i] = err
				return
			}
			for k, x := range out {
				m.Tensors = append(m.Tensors, checkpoint.Tensor{Name: ts.names[k], File: "rank-0.bin", Offset: x.Offset, Length: x.Length, CRC32C: x.CRC32C})
			}
			_, errs[i] = sv.Commit(ctx, &m, 0)
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if won >= 0 {
				t.Fatal("both saves published")
			}
			won = i
		case !errcode.Is(err, errcode.AlreadyExists):
			t.Fatalf("save %d: %v; want AlreadyExists", i, err)
		}
	}
	if won < 0 {
		t.Fatalf("no save published: %v", errs)
	}
	s := newStore(t, c, checkpoint.Options{})
	if err := loadAll(ctx, s, "/job/step-5", []tensorSet{a, b}[won]); err != nil {
		t.Fatal(err)
	}
	ents, _ := s.Client().ReadDir(ctx, meta.Root, meta.P("/job"), false)
	for _, e := range ents {
		if strings.HasPrefix(e.Name, ".pending-") {
			t.Fatalf("the losing save left %s", e.Name)
		}
	}
}

// keep-last-K retention, latest pointer, List and Remove.
func TestRetentionLatestAndRemove(t *testing.T) {
	c := startCluster(t, 1)
	ctx := ctxT(t)
	s := newStore(t, c, checkpoint.Options{})
	sets := map[string]tensorSet{}
	for i := 1; i <= 5; i++ {
		name := fmt.Sprintf("step-%d", i)
		sets[name] = makeTensors(uint64(20+i), []int{100 * i, testChunk + i})
		saveAll(t, ctx, s, "/job", name, sets[name], 1, 3)
	}
	infos, err := s.List(ctx, "/job")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range infos {
		names = append(names, x.Name)
	}
	if strings.Join(names, ",") != "step-3,step-4,step-5" || !infos[2].Latest || infos[0].Latest {
		t.Fatalf("after 5 saves keeping 3: %+v", infos)
	}
	if err := loadAll(ctx, s, "/job/step-3", sets["step-3"]); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "/job/step-5"); err != nil {
		t.Fatal(err)
	}
	if l, err := s.Latest(ctx, "/job"); err != nil || l != "/job/step-4" {
		t.Fatalf("latest after removing the newest: %q, %v", l, err)
	}
	if err := s.Remove(ctx, "/job/step-5"); !errcode.Is(err, errcode.NotFound) {
		t.Fatalf("removing twice: %v", err)
	}
	// A directory without a manifest is there but is no checkpoint.
	if err := s.Remove(ctx, "/job"); !errcode.Is(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), "not a published checkpoint") {
		t.Fatalf("Remove of a job directory (not a checkpoint): %v", err)
	}
	if _, err := s.Begin(ctx, "/job", "step-4"); !errcode.Is(err, errcode.AlreadyExists) {
		t.Fatalf("Begin over a published name: %v", err)
	}
	for _, bad := range []string{"", ".x", "a/b", "latest", ".."} {
		if _, err := s.Begin(ctx, "/job", bad); !errcode.Is(err, errcode.InvalidArgument) {
			t.Fatalf("Begin(%q): %v", bad, err)
		}
	}
}

// Reclaim removes a pending directory whose lease stopped being renewed
// and keeps one whose writer is alive.
func TestReclaimStalePending(t *testing.T) {
	c := startCluster(t, 1)
	ctx := ctxT(t)
	live := newStore(t, c, checkpoint.Options{LeaseInterval: 50 * time.Millisecond})
	dead := newStore(t, c, checkpoint.Options{LeaseInterval: time.Hour})
	alive, err := live.Begin(ctx, "/job", "alive")
	if err != nil {
		t.Fatal(err)
	}
	defer alive.Abort(ctx)
	gone, err := dead.Begin(ctx, "/job", "gone")
	if err != nil {
		t.Fatal(err)
	}
	writeShard(t, ctx, dead, gone.Pending, "rank-0.bin", makeTensors(5, []int{1000}))
	grace := time.Second
	// Wait until the dead save's lease is older than grace (never renewed:
	// its interval is an hour), while the live one keeps renewing.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps, err := live.Reclaim(ctx, "/job", grace, nil)
		if err != nil {
			t.Fatal(err)
		}
		var reclaimed []string
		for _, p := range ps {
			if p.Reclaimed {
				reclaimed = append(reclaimed, p.Name)
			}
		}
		if len(reclaimed) > 0 {
			if strings.Join(reclaimed, ",") != "gone" {
				t.Fatalf("reclaimed %v; want only the save without a live lease", reclaimed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale pending directory never reclaimed: %+v", ps)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := live.Client().Stat(ctx, meta.Root, meta.P(gone.Pending)); !errcode.Is(err, errcode.NotFound) {
		t.Fatalf("reclaimed directory still there: %v", err)
	}
	if _, err := live.Client().Stat(ctx, meta.Root, meta.P(alive.Pending)); err != nil {
		t.Fatalf("live pending directory: %v", err)
	}
}

// A storage service stopped abruptly while a save streams (replicas 3):
// the save completes and loads intact, or fails with an error and
// publishes nothing; the previous checkpoint stays loadable either way.
func TestStorageStopsDuringSave(t *testing.T) {
	c := startCluster(t, 3)
	ctx := ctxT(t)
	s := newStore(t, c, checkpoint.Options{})
	prev := makeTensors(30, []int{1000, 2 * testChunk})
	saveAll(t, ctx, s, "/job", "step-1", prev, 1, 0)
	ts := makeTensors(31, []int{100, 64 * testChunk, 5, 64 * testChunk, 64 * testChunk, 7})
	sv, err := s.Begin(ctx, "/job", "step-2")
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.OpenShard(ctx, sv.Pending, "rank-0.bin")
	if err != nil {
		t.Fatal(err)
	}
	var m checkpoint.Manifest
	var saveErr error
	for i := range ts.data {
		if i == 2 {
			c.StopStorage(2)
		}
		out, err := w.Write(ts.data[i : i+1])
		if err != nil {
			saveErr = err
			break
		}
		m.Tensors = append(m.Tensors, checkpoint.Tensor{Name: ts.names[i], File: "rank-0.bin", Offset: out[0].Offset, Length: out[0].Length, CRC32C: out[0].CRC32C})
	}
	if cerr := w.Close(); saveErr == nil {
		saveErr = cerr
	}
	if saveErr == nil {
		_, saveErr = sv.Commit(ctx, &m, 0)
	} else {
		_ = sv.Abort(ctx)
	}
	fresh := newStore(t, c, checkpoint.Options{})
	if saveErr == nil {
		if err := loadAll(ctx, fresh, "/job/step-2", ts); err != nil {
			t.Fatalf("save completed but does not load intact: %v", err)
		}
	} else {
		t.Logf("save failed (allowed): %v", saveErr)
		if _, err := fresh.Inspect(ctx, "/job/step-2"); !errcode.Is(err, errcode.NotFound) {
			t.Fatalf("failed save published: %v", err)
		}
		if l, err := fresh.Latest(ctx, "/job"); err != nil || l != "/job/step-1" {
			t.Fatalf("latest after a failed save: %q, %v", l, err)
		}
	}
	if err := loadAll(ctx, fresh, "/job/step-1", prev); err != nil {
		t.Fatal(err)
	}
	if err := c.StartStorage(2); err != nil {
		t.Fatal(err)
	}
}

// helperEnv makes the test binary act as a saving rank (see TestMain).
const helperEnv = "EMBERFS_CKPT_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(helperSave(spec))
	}
	os.Exit(m.Run())
}

// helperSave begins a save and streams regions forever, printing
// "writing" once data is flowing; the test SIGKILLs it.
func helperSave(spec string) int {
	parts := strings.SplitN(spec, ",", 2) // mgmtd address, token
	ctx := context.Background()
	cl, err := client.New(ctx, client.Config{MgmtdAddrs: []string{parts[0]}, Token: parts[1]})
	if err != nil {
		fmt.Println("helper:", err)
		return 1
	}
	s := checkpoint.New(cl, meta.Root, checkpoint.Options{LeaseInterval: 100 * time.Millisecond})
	sv, err := s.Begin(ctx, "/job", "step-2")
	if err != nil {
		fmt.Println("helper:", err)
		return 1
	}
	w, err := s.OpenShard(ctx, sv.Pending, "rank-0.bin")
	if err != nil {
		fmt.Println("helper:", err)
		return 1
	}
	buf := make([]byte, 3*testChunk+11)
	for i := 0; ; i++ {
		if _, err := w.Write([][]byte{buf, buf[:100]}); err != nil {
			fmt.Println("helper:", err)
			return 1
		}
		if i == 3 {
			fmt.Println("writing")
		}
	}
}

// A rank SIGKILLed mid-save: the checkpoint never appears, the previous
// latest stays loadable, and once the killed save's lease runs out
// Reclaim removes its pending data.
func TestKilledSaveNeverAppears(t *testing.T) {
	c := startCluster(t, 1)
	ctx := ctxT(t)
	s := newStore(t, c, checkpoint.Options{})
	prev := makeTensors(40, []int{3000, 5 * testChunk})
	saveAll(t, ctx, s, "/job", "step-1", prev, 1, 0)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+c.MgmtdAddr()+","+c.Token())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 8)
	if _, err := out.Read(line); err != nil || string(line[:7]) != "writing" {
		_ = cmd.Process.Kill()
		t.Fatalf("helper said %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	if _, err := s.Inspect(ctx, "/job/step-2"); !errcode.Is(err, errcode.NotFound) {
		t.Fatalf("killed save visible: %v", err)
	}
	if infos, err := s.List(ctx, "/job"); err != nil || len(infos) != 1 || infos[0].Name != "step-1" {
		t.Fatalf("list after the kill: %+v, %v", infos, err)
	}
	if l, err := s.Latest(ctx, "/job"); err != nil || l != "/job/step-1" {
		t.Fatalf("latest: %q, %v", l, err)
	}
	if err := loadAll(ctx, s, "/job/step-1", prev); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps, err := s.Reclaim(ctx, "/job", time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 || ps[0].Name != "step-2" {
			t.Fatalf("pending directories after the kill: %+v", ps)
		}
		if ps[0].Reclaimed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("killed save's pending directory never reclaimed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ps, err := s.Reclaim(ctx, "/job", time.Second, nil); err != nil || len(ps) != 0 {
		t.Fatalf("after reclaim: %+v, %v", ps, err)
	}
}
