package metatests

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/etcdcluster"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/metaclient"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/tests/testproc"
)

// entry is what a path holds in the model: a file or an (always empty)
// directory, with its inode id (0: unknown, created by an op in flight at
// the kill).
type entry struct {
	dir bool
	id  uint64
}

// model is one worker's expected namespace. Workers own disjoint names
// (in shared directories), so each model evolves only by its worker's
// acknowledged ops, in order.
type model map[string]entry

type op struct {
	kind string // create, mkdir, unlink, rmdir, rename
	a, b string
}

func (o op) String() string { return strings.TrimSpace(o.kind + " " + o.a + " " + o.b) }

// apply applies o to m as POSIX would and reports whether o succeeds
// (on failure m is unchanged). id is the inode a create or mkdir made.
func (m model) apply(o op, id uint64) bool {
	a, aok := m[o.a]
	switch o.kind {
	case "create", "mkdir":
		if aok {
			return false // EEXIST
		}
		m[o.a] = entry{dir: o.kind == "mkdir", id: id}
	case "unlink":
		if !aok || a.dir {
			return false // ENOENT, EISDIR
		}
		delete(m, o.a)
	case "rmdir":
		if !aok || !a.dir {
			return false // ENOENT, ENOTDIR
		}
		delete(m, o.a)
	case "rename":
		b, bok := m[o.b]
		if !aok || (bok && a.dir != b.dir) {
			return false // ENOENT, EISDIR, ENOTDIR
		}
		delete(m, o.a)
		m[o.b] = a // replaces b (a file, or an empty directory)
	default:
		panic(o.kind)
	}
	return true
}

func sameState(want, got model) bool {
	if len(want) != len(got) {
		return false
	}
	for p, w := range want {
		g, ok := got[p]
		if !ok || g.dir != w.dir || (w.id != 0 && g.id != w.id) {
			return false
		}
	}
	return true
}

const storageDirs = 4

func workerPath(r *rand.Rand, w int) string {
	return fmt.Sprintf("/s/d%d/g%d-%d", r.IntN(storageDirs), w, r.IntN(6))
}

func randomOp(r *rand.Rand, w int) op {
	o := op{kind: [...]string{"create", "create", "mkdir", "unlink", "rmdir", "rename", "rename"}[r.IntN(7)], a: workerPath(r, w)}
	if o.kind == "rename" {
		for o.b = workerPath(r, w); o.b == o.a; o.b = workerPath(r, w) {
		}
	}
	return o
}

func run(ctx context.Context, fs meta.FS, o op) (uint64, error) {
	p := func(s string) meta.PathAt { return meta.PathAt{Path: s} }
	switch o.kind {
	case "create":
		r, err := fs.Create(ctx, meta.Root, p(o.a), meta.CreateOptions{Mode: 0o644, Exclusive: true})
		return r.Inode.ID, err
	case "mkdir":
		n, err := fs.Mkdir(ctx, meta.Root, p(o.a), 0o755, false)
		return n.ID, err
	case "unlink":
		return 0, fs.Unlink(ctx, meta.Root, p(o.a))
	case "rmdir":
		return 0, fs.Rmdir(ctx, meta.Root, p(o.a))
	case "rename":
		return 0, fs.Rename(ctx, meta.Root, p(o.a), p(o.b), 0)
	}
	panic(o.kind)
}

// listAll reads the whole namespace under /s into per-worker models.
func listAll(t *testing.T, ctx context.Context, fs meta.FS, workers int) []model {
	t.Helper()
	out := make([]model, workers)
	for w := range out {
		out[w] = model{}
	}
	nameRE := regexp.MustCompile(`^g(\d+)-\d+$`)
	for d := range storageDirs {
		dir := fmt.Sprintf("/s/d%d", d)
		cursor := ""
		for {
			page, err := fs.ReadDir(ctx, meta.Root, meta.PathAt{Path: dir}, meta.ReadDirOptions{Cursor: cursor, Limit: 100})
			if err != nil {
				t.Fatalf("readdir %s: %v", dir, err)
			}
			for _, e := range page.Entries {
				m := nameRE.FindStringSubmatch(e.Name)
				var w int
				if m != nil {
					fmt.Sscan(m[1], &w)
				}
				if m == nil || w >= workers {
					t.Fatalf("unexpected entry %s/%s", dir, e.Name)
				}
				out[w][dir+"/"+e.Name] = entry{dir: e.Type == meta.TypeDir, id: e.ID}
			}
			if !page.More {
				break
			}
			cursor = page.Entries[len(page.Entries)-1].Name
		}
	}
	return out
}

// TestSIGKILLMetaDuringStorm runs mgmtd, a storage process and a meta
// process on a Badger directory. Many goroutines run creates, mkdirs,
// renames (also replacing), unlinks and rmdirs through the gRPC failover
// client, each on names of its own in shared directories, checking every
// answer against a model. The meta process is SIGKILLed mid-storm. Then:
// fsck of the directory is clean; after a restart on the same directory,
// every worker's namespace is exactly its model after its acknowledged
// ops, with the one op in flight at the kill either applied or not; the
// restarted server serves; SIGTERM stops it cleanly and fsck is clean.
func TestSIGKILLMetaDuringStorm(t *testing.T) {
	dir := t.TempDir()
	runStorm(t, dir, stormConfig{metaKV: "badger:" + filepath.Join(dir, "meta-kv"), mgmtdKV: "memory"})
}

// TestSIGKILLMetaDuringStormEtcd is the same storm with meta and mgmtd on
// a real three-member etcd cluster (separate processes); halfway to the
// meta kill, the etcd leader is SIGKILLed. Acknowledged operations must
// survive both kills, and fsck must be clean with one etcd member down.
func TestSIGKILLMetaDuringStormEtcd(t *testing.T) {
	cluster := etcdcluster.Start(t, 3)
	runStorm(t, t.TempDir(), stormConfig{
		metaKV:  cluster.Spec("meta/"),
		mgmtdKV: cluster.Spec("mgmtd/"),
		midStorm: func() {
			leader := cluster.Leader()
			cluster.Kill(leader)
			t.Logf("SIGKILLed etcd member %d (the leader) mid-storm", leader)
		},
	})
}

// stormConfig says which KVs the storm runs on and what else happens
// halfway to the meta kill.
type stormConfig struct {
	metaKV, mgmtdKV string
	midStorm        func()
}

func runStorm(t *testing.T, dir string, cfg stormConfig) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*testproc.Eventually)
	defer cancel()
	mgmtdAddr := testproc.StartMgmtdKV(t, emberfsBin, dir, token, cfg.mgmtdKV)
	startStorage(t, dir, mgmtdAddr)
	conn, err := mgmtdclient.Dial([]string{mgmtdAddr}, token)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cache := mgmtdclient.NewCache(conn)
	cache.Start()
	defer cache.Close()
	if _, err := cache.WaitFor(ctx, func(r *routing.Routing) bool { return len(r.Info.Targets) == 1 }); err != nil {
		t.Fatalf("storage target never registered: %v", err)
	}
	err = conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{ReplicationFactor: 1})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	kvSpec := cfg.metaKV
	metaCfg := testproc.WriteFile(t, filepath.Join(dir, "meta.toml"), fmt.Sprintf(`listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
kv = %q
mgmtd = [%q]
token = %q
gc_interval = "200ms"
`, kvSpec, mgmtdAddr, token))
	starts := 0
	startMeta := func() (*testproc.Proc, string) {
		starts++
		p := testproc.Start(t, emberfsBin, filepath.Join(dir, fmt.Sprintf("meta.%d.log", starts)), "meta", "--config", metaCfg)
		addr := p.Wait(t, testproc.ListeningRE)
		if _, err := cache.WaitFor(ctx, func(r *routing.Routing) bool {
			for _, n := range r.ActiveNodes(mgmtdpb.NodeRole_ROLE_META) {
				if n.Address == addr {
					return true
				}
			}
			return false
		}); err != nil {
			t.Fatalf("meta at %s never active in routing: %v", addr, err)
		}
		return p, addr
	}
	metaProc, _ := startMeta()
	fc, err := metaclient.NewFailoverClient(metaclient.FailoverConfig{Addrs: metaclient.RoutingMetaAddrs(cache), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.CloseConn()
	for d := range storageDirs {
		if _, err := fc.Mkdir(ctx, meta.Root, meta.PathAt{Path: fmt.Sprintf("/s/d%d", d)}, 0o777, true); err != nil {
			t.Fatal(err)
		}
	}

	const workers, killAfter = 16, 4000
	var (
		acked       atomic.Int64
		midStormAt  atomic.Int64 // acknowledged ops when midStorm ran
		workersDone atomic.Bool  // all stopped early (a model mismatch)
		killed      = make(chan struct{})
		wg          sync.WaitGroup
		models      = make([]model, workers)
		inFlight    = make([]*op, workers)
		mu          sync.Mutex
		failures    []string
		opsByKind   = map[string]int{}
	)
	go func() {
		defer close(killed)
		if cfg.midStorm != nil {
			for acked.Load() < killAfter/2 && ctx.Err() == nil && !workersDone.Load() {
				time.Sleep(time.Millisecond)
			}
			cfg.midStorm()
			midStormAt.Store(acked.Load())
		}
		for acked.Load() < killAfter && ctx.Err() == nil && !workersDone.Load() {
			time.Sleep(time.Millisecond)
		}
		metaProc.Signal(syscall.SIGKILL)
	}()
	for w := range workers {
		models[w] = model{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for ctx.Err() == nil {
				o := randomOp(r, w)
				id, err := run(ctx, fc, o)
				if errcode.Is(err, errcode.Unavailable) {
					inFlight[w] = &o // applied or not: decided after the restart
					return
				}
				wantOK := models[w].apply(o, id)
				mu.Lock()
				if (err == nil) != wantOK {
					failures = append(failures, fmt.Sprintf("worker %d: %s: got %v, model says success=%v", w, o, err, wantOK))
				}
				if err != nil && errcode.CodeOf(err) == errcode.Internal {
					failures = append(failures, fmt.Sprintf("worker %d: %s: %v", w, o, err))
				}
				if err == nil {
					opsByKind[o.kind]++
				}
				stop := len(failures) > 0
				mu.Unlock()
				if err == nil {
					acked.Add(1)
				}
				if stop {
					return
				}
			}
		}()
	}
	wg.Wait()
	workersDone.Store(true)
	<-killed
	if len(failures) > 0 {
		t.Fatalf("answers differ from the model:\n%s", strings.Join(failures, "\n"))
	}
	stopped := 0
	for _, o := range inFlight {
		if o != nil {
			stopped++
		}
	}
	t.Logf("acknowledged ops before the kill: %d %v (mid-storm event after %d); workers stopped by an unavailable answer: %d", acked.Load(), opsByKind, midStormAt.Load(), stopped)
	if acked.Load() < killAfter {
		t.Fatalf("storm ended after %d acknowledged ops without the kill", acked.Load())
	}

	// The state the crash left is consistent before any server touches it.
	fsck := func(when string) {
		t.Helper()
		out, err := runCLI(ctx, "admin", "fsck", "--kv", kvSpec)
		if err != nil || !strings.Contains(out, "clean") {
			t.Fatalf("fsck %s: %v\n%s", when, err, out)
		}
	}
	fsck("after SIGKILL")

	metaProc, newAddr := startMeta()
	got := listAll(t, ctx, fc, workers)
	applied := 0
	for w := range workers {
		want := models[w]
		if sameState(want, got[w]) {
			continue
		}
		if o := inFlight[w]; o != nil {
			alt := maps.Clone(want)
			if alt.apply(*o, 0) && sameState(alt, got[w]) {
				applied++
				continue
			}
		}
		t.Fatalf("worker %d (in flight at the kill: %v): namespace after restart\n%v\nwant (from acknowledged ops)\n%v",
			w, inFlight[w], sorted(got[w]), sorted(want))
	}
	t.Logf("ops in flight at the kill that were applied: %d", applied)

	// The restarted server serves, and the client found it through routing.
	if _, err := fc.Create(ctx, meta.Root, meta.PathAt{Path: "/after-restart"}, meta.CreateOptions{Mode: 0o644, Exclusive: true}); err != nil {
		t.Fatalf("create after restart: %v", err)
	}
	if fc.Current() != newAddr {
		t.Fatalf("client uses %q, want the restarted server %q", fc.Current(), newAddr)
	}
	metaProc.Signal(syscall.SIGTERM)
	if code := metaProc.Cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(metaProc.Output(), "meta stopped") {
		t.Fatalf("meta after SIGTERM: exit %d\n%s", code, metaProc.Output())
	}
	fsck("after restart and SIGTERM")
}

func sorted(m model) string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(m)) {
		e := m[p]
		kind := "file"
		if e.dir {
			kind = "dir"
		}
		fmt.Fprintf(&b, "  %s %s %d\n", p, kind, e.id)
	}
	return b.String()
}
