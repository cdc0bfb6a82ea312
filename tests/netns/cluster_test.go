// Package netns runs an EmberFS cluster over several "hosts" on one
// machine, each a Linux network namespace (internal/netns) with its own
// processes and data directory: three control hosts (an etcd member,
// mgmtd and meta each), six storage hosts and four client hosts, whose
// clients are processes of their own (netnsclient) run with
// `ip netns exec`. The tests lose whole hosts, cut their links, and
// measure read throughput as client hosts are added. Needs root.
package netns

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/etcdcluster"
	"github.com/emberfs/emberfs/internal/netns"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/tests/testproc"
)

const (
	token = "netns-test-token"
	// mainTable has chains of three replicas (two targets of every
	// storage host); singleTable one replica (the third target).
	mainTable, singleTable = 1, 2
	storageHosts           = 6
	clientHosts            = 4
	targetsPerHost         = 3
	failureTimeout         = 2 * time.Second
	// writeSize is the size of each file the writer clients write: four
	// chunks of the root directory's 64 KiB chunk size, over four chains.
	writeSize = 256 << 10
)

var emberfsBin, clientBin string

func TestMain(m *testing.M) {
	testproc.Main(m, &emberfsBin, testproc.Bin{Pkg: "github.com/emberfs/emberfs/tests/netns/netnsclient", Path: &clientBin})
}

// cluster is the running cluster and the network under it.
type cluster struct {
	t       *testing.T
	dir     string
	net     *netns.Network
	etcd    *etcdcluster.Cluster
	mgmtd   []*testproc.Role // on ctl1..3
	meta    []*testproc.Role // on ctl1..3
	storage []*testproc.Role // storage node i+1 on st<i+1>
	mgmtdA  []string
	conn    *mgmtdclient.Conn
	cache   *mgmtdclient.Cache
}

func (c *cluster) ctl(i int) *netns.Host    { return c.net.Host(fmt.Sprintf("ctl%d", i+1)) }
func (c *cluster) st(i int) *netns.Host     { return c.net.Host(fmt.Sprintf("st%d", i+1)) }
func (c *cluster) client(i int) *netns.Host { return c.net.Host(fmt.Sprintf("cl%d", i+1)) }
func (c *cluster) mgmtdList() string        { return quoteAll(c.mgmtdA) }
func (c *cluster) ctx() context.Context     { return testproc.Ctx(c.t) }
func (c *cluster) role(h *netns.Host, name string, ready func(*testproc.Proc), args ...string) *testproc.Role {
	r := &testproc.Role{T: c.t, Name: name, Dir: c.dir, Argv: h.Command(emberfsBin, args...), Ready: ready}
	r.Start()
	return r
}

var storageStarted = regexp.MustCompile(`storage node \d+ control (\S+)`)

func listening(t *testing.T) func(*testproc.Proc) {
	return func(p *testproc.Proc) { p.Wait(t, testproc.ListeningRE) }
}

func startCluster(t *testing.T) *cluster {
	var names []string
	for i := 1; i <= 3; i++ {
		names = append(names, fmt.Sprintf("ctl%d", i))
	}
	for i := 1; i <= storageHosts; i++ {
		names = append(names, fmt.Sprintf("st%d", i))
	}
	for i := 1; i <= clientHosts; i++ {
		names = append(names, fmt.Sprintf("cl%d", i))
	}
	c := &cluster{t: t, dir: t.TempDir()}
	if keep := os.Getenv("NETNS_DIR"); keep != "" {
		// Kept after the test: every process's log and data directory.
		var err error
		if c.dir, err = os.MkdirTemp(keep, "netns-"); err != nil {
			t.Fatalf("NETNS_DIR=%q: %v", keep, err)
		}
		t.Logf("cluster directory (kept): %s", c.dir)
	}
	c.net = netns.New(t, names...)
	t.Logf("network %s: %s", c.net.Run, c.net.Subnet)

	var eh []etcdcluster.Host
	for i := range 3 {
		eh = append(eh, etcdcluster.Host{IP: c.ctl(i).IP, Prefix: c.ctl(i).Prefix()})
		c.mgmtdA = append(c.mgmtdA, c.ctl(i).Addr(7100))
	}
	c.etcd = etcdcluster.StartOn(t, eh)
	for i := range 3 {
		h := c.ctl(i)
		cfg := testproc.WriteFile(t, filepath.Join(c.dir, fmt.Sprintf("mgmtd%d.toml", i+1)), fmt.Sprintf(`listen = %q
metrics_listen = ""
kv = %q
token = %q
instance_id = "mgmtd%d"
scan_interval = "50ms"
heartbeat_interval = "250ms"
node_failure_timeout = %q
primary_lease = "2s"
`, h.Addr(7100), c.etcd.Spec("mgmtd"), token, i+1, failureTimeout.String()))
		c.mgmtd = append(c.mgmtd, c.role(h, fmt.Sprintf("mgmtd%d", i+1), listening(t), "mgmtd", "--config", cfg))
	}
	var err error
	if c.conn, err = mgmtdclient.Dial(c.mgmtdA, token); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	c.cache = mgmtdclient.NewCache(c.conn)
	c.cache.Start()
	t.Cleanup(c.cache.Close)

	for i := range storageHosts {
		h := c.st(i)
		var targets []string
		for k := range targetsPerHost {
			targets = append(targets, filepath.Join(c.dir, h.Name, fmt.Sprintf("t%d", k)))
		}
		// no_sync: the tests kill processes, never the machine, and a
		// killed process's writes are in the page cache; fsync on a disk
		// shared by 18 targets would only slow the run.
		cfg := testproc.WriteFile(t, filepath.Join(c.dir, fmt.Sprintf("storage%d.toml", i+1)), fmt.Sprintf(`node_id = %d
targets = [%s]
mgmtd = [%s]
token = %q
peer_token = %q
listen = %q
data_listen = %q
metrics_listen = ""
repair_interval = "200ms"
no_sync = true
`, i+1, quoteAll(targets), c.mgmtdList(), token, testproc.PeerToken(token), h.Addr(7300), h.Addr(7310)))
		c.storage = append(c.storage, c.role(h, fmt.Sprintf("storage%d", i+1),
			func(p *testproc.Proc) { p.Wait(t, storageStarted) }, "storage", "--config", cfg))
	}
	r, err := c.cache.WaitFor(c.ctx(), func(r *routing.Routing) bool {
		return len(r.Info.Targets) == storageHosts*targetsPerHost
	})
	if err != nil {
		t.Fatalf("storage targets never all registered: %v", err)
	}
	// Two targets of every host make the three-replica table, the third
	// the one-replica table: both spread over all six hosts.
	var three, one []uint64
	for _, n := range r.Info.Nodes {
		if n.Role != mgmtdpb.NodeRole_ROLE_STORAGE {
			continue
		}
		ids := append([]uint64(nil), n.TargetIds...)
		sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
		three, one = append(three, ids[:2]...), append(one, ids[2])
	}
	c.createTable(mainTable, 3, three)
	c.createTable(singleTable, 1, one)
	c.waitAllServing()

	for i := range 3 {
		h := c.ctl(i)
		cfg := testproc.WriteFile(t, filepath.Join(c.dir, fmt.Sprintf("meta%d.toml", i+1)), fmt.Sprintf(`listen = %q
metrics_listen = ""
kv = %q
mgmtd = [%s]
token = %q
root_chain_table = %d
root_chunk_size = 65536
root_stripe_size = 4
`, h.Addr(7200), c.etcd.Spec("meta"), c.mgmtdList(), token, mainTable))
		c.meta = append(c.meta, c.role(h, fmt.Sprintf("meta%d", i+1), listening(t), "meta", "--config", cfg))
	}
	return c
}

func (c *cluster) createTable(id, replicas uint32, targets []uint64) {
	err := c.conn.Call(c.ctx(), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{TableId: id, ReplicationFactor: replicas, TargetIds: targets})
		return err
	})
	if err != nil {
		c.t.Fatalf("create chain table %d (%d replicas): %v", id, replicas, err)
	}
}

// notServing lists the targets of every chain that are not serving.
func notServing(r *routing.Routing) []string {
	var bad []string
	for _, tbl := range []uint32{mainTable, singleTable} {
		t, ok := r.Table(tbl)
		if !ok {
			bad = append(bad, fmt.Sprintf("no table %d", tbl))
			continue
		}
		for _, id := range t.ChainIds {
			ch, _ := r.Chain(id)
			for _, ct := range ch.GetTargets() {
				if ct.PublicState != mgmtdpb.PublicState_PUBLIC_SERVING {
					bad = append(bad, fmt.Sprintf("chain %d target %d %v", id, ct.TargetId, ct.PublicState))
				}
			}
		}
	}
	return bad
}

// waitAllServing waits until routing shows every target of every chain
// serving: after a host returns, its targets have resynced.
func (c *cluster) waitAllServing() {
	c.t.Helper()
	var last []string
	_ = c.cache.Refresh(c.ctx())
	if _, err := c.cache.WaitFor(c.ctx(), func(r *routing.Routing) bool {
		last = notServing(r)
		return len(last) == 0
	}); err != nil {
		c.t.Fatalf("cluster never all serving: %v (last: %s)", err, strings.Join(last, "; "))
	}
}

// waitNodeOut waits until routing shows no target of storage node id
// serving (mgmtd took it out of its chains).
func (c *cluster) waitNodeOut(id uint32) {
	c.t.Helper()
	if _, err := c.cache.WaitFor(c.ctx(), func(r *routing.Routing) bool {
		n, ok := r.Node(id)
		if !ok {
			return false
		}
		for _, tid := range n.TargetIds {
			if r.TargetState(tid) == mgmtdpb.PublicState_PUBLIC_SERVING {
				return false
			}
		}
		return true
	}); err != nil {
		c.t.Fatalf("storage node %d never taken out of its chains: %v", id, err)
	}
}

// clientProc runs netnsclient on client host h.
func (c *cluster) clientProc(h *netns.Host, name string, args ...string) *testproc.Proc {
	argv := h.Command(clientBin, append([]string{"--mgmtd", strings.Join(c.mgmtdA, ","), "--token", token}, args...)...)
	return testproc.Start(c.t, argv[0], filepath.Join(c.dir, name+".log"), argv[1:]...)
}

// stop ends a client loop with SIGTERM and returns everything it printed.
func stop(p *testproc.Proc) string {
	p.Signal(syscall.SIGTERM)
	return p.Output()
}

// acks are the writes a writer's output acknowledged, with their times.
type ack struct {
	at   time.Time
	path string
}

func acks(out string) []ack {
	var as []ack
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "ACK" {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			as = append(as, ack{at: time.Unix(0, ns), path: f[2]})
		}
	}
	return as
}

// waitAcks waits until the writer has acknowledged n writes after since.
func (c *cluster) waitAcks(p *testproc.Proc, since time.Time, n int) {
	c.t.Helper()
	deadline := time.Now().Add(testproc.Eventually)
	for {
		k := 0
		for _, a := range acks(p.Output()) {
			if a.at.After(since) {
				k++
			}
		}
		if k >= n {
			return
		}
		select {
		case <-p.Done():
			c.t.Fatalf("writer exited: %v\n%s", p.Err(), testproc.Tail(p.Output(), 3000))
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("writer acknowledged %d writes after %s, want %d, in %v:\n%s", k, since.Format(time.StampMilli), n,
				testproc.Eventually, testproc.Tail(p.Output(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// longestGap is the longest time without an acknowledged write from
// `from` until the first acknowledgement after `until`.
func longestGap(as []ack, from, until time.Time) time.Duration {
	var gap time.Duration
	prev := from
	for _, a := range as {
		if !a.at.After(from) {
			continue
		}
		gap = max(gap, a.at.Sub(prev))
		prev = a.at
		if a.at.After(until) {
			break
		}
	}
	return gap
}

// verify reads every acknowledged path from client host h and fails the
// test for any that is missing or differs.
func (c *cluster) verify(h *netns.Host, as []ack) {
	c.t.Helper()
	var paths []string
	for _, a := range as {
		paths = append(paths, a.path)
	}
	argv := h.Command(clientBin, "--mgmtd", strings.Join(c.mgmtdA, ","), "--token", token, "--size", strconv.Itoa(writeSize), "verify")
	cmd := exec.CommandContext(c.ctx(), argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(strings.Join(paths, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("VERIFIED %d\n", len(paths))) {
		c.t.Fatalf("acknowledged writes lost or wrong (%v):\n%s", err, testproc.Tail(string(out), 4000))
	}
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
