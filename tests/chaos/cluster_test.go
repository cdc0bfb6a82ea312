package chaos

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/etcdcluster"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/tests/testproc"
)

const (
	token      = "chaos-test-token"
	chainTable = 1
	// chunkSize is small so that writes of a few blocks cross chunks.
	chunkSize = 64 << 10
	// failureTimeout is mgmtd's node failure timeout; pauses run longer.
	failureTimeout = time.Second
	// storageNodes services with targetsPerNode targets each; the last
	// target of every node lives on a small tmpfs that the nemesis fills.
	storageNodes   = 4
	targetsPerNode = 3
	replicas       = 3
	tmpfsSize      = 24 << 20
)

// cluster is mgmtd, meta and storage as separate processes of the emberfs
// binary, every storage target fsyncing.
type cluster struct {
	t        *testing.T
	dir      string
	mgmtd    []*testproc.Role
	meta     []*testproc.Role
	storage  []*testproc.Role
	mgmtdAdr []string
	metaKV   string
	etcd     *etcdcluster.Cluster
	tmpfs    []string // per storage node: the mount holding its last target
	targets  [][]string
	conn     *mgmtdclient.Conn
	cache    *mgmtdclient.Cache
}

// freeAddr picks a loopback port the kernel considers free. mgmtd gets
// fixed ports because clients and services dial it by address, across its
// restarts.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startCluster(t *testing.T, ctx context.Context) *cluster {
	if os.Geteuid() != 0 {
		t.Fatal("the chaos test needs root: it mounts size-limited tmpfs directories for the disk-full fault")
	}
	c := &cluster{t: t, dir: t.TempDir()}
	if keep := os.Getenv("CHAOS_DIR"); keep != "" {
		// Kept after the test: process logs and target directories (the
		// tmpfs targets go with their mounts) for diagnosing a failure.
		var err error
		if c.dir, err = os.MkdirTemp(keep, "chaos-"); err != nil {
			t.Fatalf("CHAOS_DIR=%q: %v", keep, err)
		}
		t.Logf("cluster directory (kept): %s", c.dir)
	}
	// mgmtd and meta keep their state in a three-member etcd cluster
	// (separate processes), which both instances of each share.
	c.etcd = etcdcluster.Start(t, 3)
	c.metaKV = c.etcd.Spec("meta")
	for i := 1; i <= 2; i++ {
		c.mgmtdAdr = append(c.mgmtdAdr, freeAddr(t))
	}
	for i, addr := range c.mgmtdAdr {
		name := fmt.Sprintf("mgmtd%d", i+1)
		mcfg := testproc.WriteFile(t, filepath.Join(c.dir, name+".toml"), fmt.Sprintf(`listen = %q
metrics_listen = ""
kv = %q
token = %q
instance_id = %q
scan_interval = "50ms"
heartbeat_interval = "100ms"
node_failure_timeout = %q
primary_lease = "1s"
`, addr, c.etcd.Spec("mgmtd"), token, name, failureTimeout.String()))
		mg := &testproc.Role{T: t, Name: name, Dir: c.dir, Argv: []string{emberfsBin, "mgmtd", "--config", mcfg},
			Ready: func(p *testproc.Proc) { p.Wait(t, testproc.ListeningRE) }}
		mg.Start()
		c.mgmtd = append(c.mgmtd, mg)
	}
	mgmtdList := quoteAll(c.mgmtdAdr)

	var err error
	if c.conn, err = mgmtdclient.Dial(c.mgmtdAdr, token); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	c.cache = mgmtdclient.NewCache(c.conn)
	c.cache.Start()
	t.Cleanup(c.cache.Close)

	for n := 1; n <= storageNodes; n++ {
		var targets []string
		for i := 0; i < targetsPerNode-1; i++ {
			targets = append(targets, filepath.Join(c.dir, fmt.Sprintf("store%d", n), fmt.Sprintf("t%d", i)))
		}
		mnt := filepath.Join(c.dir, fmt.Sprintf("tmpfs%d", n))
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, fmt.Sprintf("size=%d", tmpfsSize)); err != nil {
			t.Fatalf("mount tmpfs at %s: %v", mnt, err)
		}
		// Runs after the processes' own cleanups (registered later, run
		// earlier), so nothing holds files there any more.
		t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
		c.tmpfs = append(c.tmpfs, mnt)
		targets = append(targets, filepath.Join(mnt, "t"))
		c.targets = append(c.targets, targets)
		// verify_interval < 0: every read checks the whole chunk's CRC, so
		// a byte the nemesis flips on disk is caught by the next read (the
		// default trusts a check made within the last minute and would
		// send the flipped byte; docs/chunk-engine.md).
		scfg := testproc.WriteFile(t, filepath.Join(c.dir, fmt.Sprintf("storage%d.toml", n)), fmt.Sprintf(`node_id = %d
targets = [%s]
mgmtd = [%s]
token = %q
peer_token = %q
listen = "127.0.0.1:0"
data_listen = "127.0.0.1:0"
metrics_listen = ""
repair_interval = "200ms"
verify_interval = "-1s"
forward_timeout = "5s"
no_sync = false
`, n, quoteAll(targets), mgmtdList, token, testproc.PeerToken(token)))
		s := &testproc.Role{T: t, Name: fmt.Sprintf("storage%d", n), Dir: c.dir, Argv: []string{emberfsBin, "storage", "--config", scfg},
			Ready: func(p *testproc.Proc) { p.Wait(t, regexp1) }}
		s.Start()
		c.storage = append(c.storage, s)
	}
	if _, err := c.cache.WaitFor(ctx, func(r *routing.Routing) bool { return len(r.Info.Targets) == storageNodes*targetsPerNode }); err != nil {
		t.Fatalf("storage targets never all registered: %v", err)
	}
	err = c.conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{TableId: chainTable, ReplicationFactor: replicas})
		return err
	})
	if err != nil {
		t.Fatalf("create chain table: %v", err)
	}
	if err := c.waitAllServing(ctx); err != nil {
		t.Fatal(err)
	}

	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("meta%d", i)
		metaCfg := testproc.WriteFile(t, filepath.Join(c.dir, name+".toml"), fmt.Sprintf(`listen = "127.0.0.1:0"
metrics_listen = ""
kv = %q
mgmtd = [%s]
token = %q
root_chain_table = %d
root_chunk_size = %d
root_stripe_size = %d
gc_interval = "500ms"
`, c.metaKV, mgmtdList, token, chainTable, chunkSize, storageNodes))
		mt := &testproc.Role{T: t, Name: name, Dir: c.dir, Argv: []string{emberfsBin, "meta", "--config", metaCfg},
			Ready: func(p *testproc.Proc) { p.Wait(t, testproc.ListeningRE) }}
		mt.Start()
		c.meta = append(c.meta, mt)
	}
	return c
}

// regexp1 matches the line a storage service logs once it has started.
var regexp1 = regexp.MustCompile(`storage node \d+ control (\S+)`)

// allServing reports whether every chain of the table serves on all its
// targets, and otherwise which do not.
func allServing(r *routing.Routing) (bool, string) {
	tbl, ok := r.Table(chainTable)
	if !ok {
		return false, "no chain table"
	}
	var bad []string
	for _, id := range tbl.ChainIds {
		ch, _ := r.Chain(id)
		for _, ct := range ch.GetTargets() {
			if ct.PublicState != mgmtdpb.PublicState_PUBLIC_SERVING {
				bad = append(bad, fmt.Sprintf("chain %d target %d %v", id, ct.TargetId, ct.PublicState))
			}
		}
	}
	return len(bad) == 0, strings.Join(bad, "; ")
}

// waitAllServing waits until mgmtd's routing shows every target serving.
func (c *cluster) waitAllServing(ctx context.Context) error {
	var last string
	_ = c.cache.Refresh(ctx)
	_, err := c.cache.WaitFor(ctx, func(r *routing.Routing) bool {
		ok, why := allServing(r)
		last = why
		return ok
	})
	if err != nil {
		return fmt.Errorf("cluster did not return to all-serving: %v (last: %s)", err, last)
	}
	return nil
}

// fsck runs `emberfs admin fsck` on meta's KV (etcd: while meta runs)
// and every storage target's chunks.
func (c *cluster) fsck(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, emberfsBin, "admin", "--mgmtd", c.mgmtdAdr[0], "--token", token, "fsck", "--kv", c.metaKV)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// storageFiles lists the chunk data files of node n's targets.
func (c *cluster) storageFiles(n int) []string {
	var out []string
	for _, tgt := range c.targets[n] {
		files, _ := filepath.Glob(filepath.Join(tgt, "data", "*", "*"))
		out = append(out, files...)
	}
	return out
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// mount runs `emberfs mount` as a process at dir/mnt with the kernel's
// attribute and name caches off (an open then sees the cluster's current
// name and length, close-to-open, like the native client) and waits for
// the mount; it is detached when the test ends, before the processes go.
func (c *cluster) mount(t *testing.T) mount {
	dir := filepath.Join(c.dir, "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := testproc.Start(t, emberfsBin, filepath.Join(c.dir, "mount.log"), "mount", dir, "--mgmtd", strings.Join(c.mgmtdAdr, ","),
		"--token", token, "--attr-timeout=-1s", "--entry-timeout=-1s", "--client-id", "chaos-fuse")
	t.Cleanup(func() {
		if isMounted(t, dir) {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	deadline := time.Now().Add(testproc.Eventually)
	for !isMounted(t, dir) {
		select {
		case <-p.Done():
			t.Fatalf("emberfs mount exited: %v\n%s", p.Err(), p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("emberfs mount never mounted:\n%s", p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return mount{dir: dir}
}

// isMounted tells whether dir is a mount point in /proc/self/mountinfo.
func isMounted(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
