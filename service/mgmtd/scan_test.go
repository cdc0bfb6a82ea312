package mgmtd

import (
	"context"
	"testing"
	"time"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/badgerkv"
	"github.com/emberfs/emberfs/service/mgmtd/statemachine"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// manualClock is the clock of the deterministic scan tests: time moves
// only when the test says so, and no loop runs, so each step is a direct
// call (electOnce, registerNode, heartbeat, scanOnce).
type manualClock struct{ now time.Time }

func (c *manualClock) Now() time.Time          { return c.now }
func (c *manualClock) advance(d time.Duration) { c.now = c.now.Add(d) }

const (
	testLease   = 2 * time.Second
	testFailure = 3 * time.Second
)

type scanRig struct {
	t     *testing.T
	clock *manualClock
	s     *Server
	boot  map[uint32]uint64
}

// newScanRig builds a server over an in-memory KV that is never Started:
// the test drives it. It becomes primary, registers storage nodes 1..3
// with one target each (node*100+1) and creates a 3-replica chain table.
func newScanRig(t *testing.T) *scanRig {
	t.Helper()
	eng, err := badgerkv.OpenMemory(badgerkv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	clock := &manualClock{now: time.Unix(1_000_000, 0)}
	r := &scanRig{t: t, clock: clock, boot: map[uint32]uint64{}}
	r.s = r.newServer(eng, "a", clock)
	r.s.electOnce()
	if !r.s.IsPrimary() {
		t.Fatal("a fresh instance over an empty KV did not become primary")
	}
	for n := uint32(1); n <= 3; n++ {
		r.boot[n] = uint64(n) * 7
		_, err := r.s.registerNode(ctx(t), &mgmtdpb.RegisterNodeReq{
			NodeId: n, Role: mgmtdpb.NodeRole_ROLE_STORAGE, Address: "127.0.0.1:1", DataAddress: "127.0.0.1:2",
			BootId: r.boot[n], Targets: []*mgmtdpb.TargetReport{{TargetId: uint64(n)*100 + 1, LocalState: statemachine.UpToDate}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.s.createChainTable(ctx(t), &mgmtdpb.CreateChainTableReq{ReplicationFactor: 3}); err != nil {
		t.Fatal(err)
	}
	r.s.scanOnce()
	if got := r.chain(); got != "101:serving,201:serving,301:serving" {
		t.Fatalf("initial chain %q", got)
	}
	return r
}

func (r *scanRig) newServer(eng kv.Engine, id string, clock *manualClock) *Server {
	r.t.Helper()
	s, err := New(Options{
		Engine: eng, Token: "tok", InstanceID: id, Clock: clock.Now,
		PrimaryLease: testLease, ScanInterval: time.Hour, HeartbeatInterval: testFailure / 3, NodeFailureTimeout: testFailure,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	s.addr = id + ":0"
	r.t.Cleanup(s.Stop)
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// heartbeat renews node n's lease at the current time, reporting local
// at the chain's current version (a storage process that follows routing).
func (r *scanRig) heartbeat(n uint32, local mgmtdpb.LocalState) {
	r.t.Helper()
	r.heartbeatAt(n, local, r.chainVersion())
}

// heartbeatAt is heartbeat from a process that last saw chain version chainVer.
func (r *scanRig) heartbeatAt(n uint32, local mgmtdpb.LocalState, chainVer uint64) {
	r.t.Helper()
	_, err := r.s.heartbeat(ctx(r.t), &mgmtdpb.HeartbeatReq{NodeId: n, BootId: r.boot[n], Role: mgmtdpb.NodeRole_ROLE_STORAGE,
		Targets: []*mgmtdpb.TargetReport{{TargetId: uint64(n)*100 + 1, LocalState: local, ChainId: r.chainID(), ChainVersion: chainVer}}})
	if err != nil {
		r.t.Fatalf("heartbeat of node %d: %v", n, err)
	}
}

func (r *scanRig) chainID() uint32 {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	for id := range r.s.st.chains {
		return id
	}
	return 0
}

// chain renders the only chain as "target:state,...".
func (r *scanRig) chain() string {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	for _, c := range r.s.st.chains {
		return chainString(c)
	}
	return ""
}

func (r *scanRig) chainVersion() uint64 {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	for _, c := range r.s.st.chains {
		return c.Version
	}
	return 0
}

func (r *scanRig) nodeStatus(n uint32) mgmtdpb.NodeStatus {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.st.nodes[n].Status
}

// step advances the clock, renews the primary lease as the election loop
// would, heartbeats the given nodes and scans.
func (r *scanRig) step(d time.Duration, alive map[uint32]mgmtdpb.LocalState) {
	r.t.Helper()
	r.clock.advance(d)
	r.s.electOnce()
	for n, l := range alive {
		r.heartbeat(n, l)
	}
	r.s.scanOnce()
}

func upToDate(nodes ...uint32) map[uint32]mgmtdpb.LocalState {
	m := map[uint32]mgmtdpb.LocalState{}
	for _, n := range nodes {
		m[n] = statemachine.UpToDate
	}
	return m
}

func TestScanLeaseExpiry(t *testing.T) {
	r := newScanRig(t)
	start := r.chain()
	v0 := r.chainVersion()
	// Node 2 stops heartbeating. Just before its lease runs out nothing
	// changes; just after, the scan fails it and the chain moves its
	// target to the end as offline with a new version.
	r.step(testFailure-time.Millisecond, upToDate(1, 3))
	if r.nodeStatus(2) != mgmtdpb.NodeStatus_NODE_ACTIVE || r.chain() != start || r.chainVersion() != v0 {
		t.Fatalf("node failed before its lease ran out: %v, chain %s v%d", r.nodeStatus(2), r.chain(), r.chainVersion())
	}
	r.step(2*time.Millisecond, upToDate(1, 3))
	if r.nodeStatus(2) != mgmtdpb.NodeStatus_NODE_FAILED {
		t.Fatalf("node 2 is %v after its lease ran out", r.nodeStatus(2))
	}
	if got := r.chain(); got != "101:serving,301:serving,201:offline" {
		t.Fatalf("chain after node 2 failed: %s (was %s)", got, start)
	}
	if r.chainVersion() != v0+1 {
		t.Fatalf("chain version %d, want %d", r.chainVersion(), v0+1)
	}
	// A scan with nothing new changes nothing.
	r.step(time.Millisecond, upToDate(1, 3))
	if r.chainVersion() != v0+1 {
		t.Fatal("an idle scan bumped the chain version")
	}
}

func TestScanFlappingNode(t *testing.T) {
	r := newScanRig(t)
	v0 := r.chainVersion()
	r.step(testFailure+time.Millisecond, upToDate(1, 3))
	if r.chain() != "101:serving,301:serving,201:offline" {
		t.Fatalf("chain %s", r.chain())
	}
	// Node 2 comes back with its target online (data possibly stale): it
	// must resync before serving, so it waits, then syncs.
	r.step(time.Millisecond, map[uint32]mgmtdpb.LocalState{1: statemachine.UpToDate, 2: statemachine.Online, 3: statemachine.UpToDate})
	if r.nodeStatus(2) != mgmtdpb.NodeStatus_NODE_ACTIVE {
		t.Fatalf("node 2 %v after heartbeating again", r.nodeStatus(2))
	}
	mid := r.chain()
	if mid == "101:serving,301:serving,201:offline" || mid == "101:serving,201:serving,301:serving" {
		t.Fatalf("returning target did not enter recovery: %s", mid)
	}
	// It fails again mid-recovery: back to offline at the end, never serving.
	r.step(testFailure+time.Millisecond, upToDate(1, 3))
	if got := r.chain(); got != "101:serving,301:serving,201:offline" {
		t.Fatalf("chain after the second failure: %s", got)
	}
	// Back for good: online moves it from waiting to syncing, and once
	// the sync is done (up-to-date) it serves again.
	online := map[uint32]mgmtdpb.LocalState{1: statemachine.UpToDate, 2: statemachine.Online, 3: statemachine.UpToDate}
	r.step(time.Millisecond, online)
	r.step(time.Millisecond, online)
	if got := r.chain(); got != "101:serving,301:serving,201:syncing" {
		t.Fatalf("chain while node 2 resyncs: %s", got)
	}
	r.step(time.Millisecond, upToDate(1, 2, 3))
	if got := r.chain(); got != "101:serving,301:serving,201:serving" {
		t.Fatalf("chain after recovery: %s", got)
	}
	if r.chainVersion() <= v0+2 {
		t.Fatalf("chain version %d did not advance through the flaps", r.chainVersion())
	}
}

// A syncing target is promoted to serving only on an up-to-date report
// made at the chain's current version. The chaos harness found a target
// whose process took a sync-done while syncing at one version, never saw
// the versions in which it was offline (the routing watch delivers the
// latest state, skipping versions), and was syncing again at a later one:
// its up-to-date report, stale by then, made it serve without the writes
// that had gone around it (acknowledged data read back as zeros).
func TestScanPromotesSyncingTargetOnlyAtCurrentVersion(t *testing.T) {
	r := newScanRig(t)
	online := map[uint32]mgmtdpb.LocalState{1: statemachine.UpToDate, 2: statemachine.Online, 3: statemachine.UpToDate}
	r.step(testFailure+time.Millisecond, upToDate(1, 3))
	r.step(time.Millisecond, online)
	r.step(time.Millisecond, online)
	if got := r.chain(); got != "101:serving,301:serving,201:syncing" {
		t.Fatalf("chain while node 2 resyncs: %s", got)
	}
	first := r.chainVersion()
	// Node 2 fails again and comes back: syncing once more, at a newer version.
	r.step(testFailure+time.Millisecond, upToDate(1, 3))
	r.step(time.Millisecond, online)
	r.step(time.Millisecond, online)
	if got := r.chain(); got != "101:serving,301:serving,201:syncing" {
		t.Fatalf("chain while node 2 resyncs again: %s", got)
	}
	second := r.chainVersion()
	if second <= first {
		t.Fatalf("chain version %d after the second failure, want > %d", second, first)
	}
	// Its process vouches for the first syncing period only.
	r.clock.advance(time.Millisecond)
	r.s.electOnce()
	for _, n := range []uint32{1, 3} {
		r.heartbeat(n, statemachine.UpToDate)
	}
	r.heartbeatAt(2, statemachine.UpToDate, first)
	r.s.scanOnce()
	if got := r.chain(); got != "101:serving,301:serving,201:syncing" {
		t.Fatalf("a sync-done from chain version %d promoted the target at version %d: %s", first, second, got)
	}
	// A sync-done at the current version does.
	r.clock.advance(time.Millisecond)
	r.s.electOnce()
	for _, n := range []uint32{1, 3} {
		r.heartbeat(n, statemachine.UpToDate)
	}
	r.heartbeatAt(2, statemachine.UpToDate, second)
	r.s.scanOnce()
	if got := r.chain(); got != "101:serving,301:serving,201:serving" {
		t.Fatalf("an up-to-date report at the current version %d did not promote: %s", second, got)
	}
}

func TestScanPrimaryChangeMidScan(t *testing.T) {
	r := newScanRig(t)
	v0 := r.chainVersion()
	// The primary's own clock passes its lease without a renewal (its
	// election round stalled): the scan must step down and commit nothing,
	// even though node 2's lease also ran out.
	r.clock.advance(testLease + time.Second)
	for _, n := range []uint32{1, 3} {
		r.s.mu.Lock()
		ln := r.s.st.liveNodes[n]
		ln.deadline = r.clock.now.Add(testFailure)
		r.s.mu.Unlock()
	}
	r.s.scanOnce()
	if r.s.IsPrimary() {
		t.Fatal("scan ran on a primary whose lease had run out")
	}
	// A second instance over the same KV takes over with a new term and
	// sees the routing the first left: node 2 still active in the KV and
	// the chain at its old version, since the stale primary committed nothing.
	b := r.newServer(r.s.eng, "b", r.clock)
	r.clock.advance(time.Millisecond)
	b.electOnce()
	if !b.IsPrimary() {
		t.Fatal("standby did not take the expired lease")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.st.chains {
		if c.Version != v0 {
			t.Fatalf("chain version %d after a stale scan, want %d", c.Version, v0)
		}
	}
	if b.st.nodes[2].Status != mgmtdpb.NodeStatus_NODE_ACTIVE {
		t.Fatalf("node 2 is %v in the KV: the stale primary committed its scan", b.st.nodes[2].Status)
	}
}

// planScan is pure: calling it twice on the same state and time gives the
// same answer and leaves the state alone.
func TestPlanScanIsPure(t *testing.T) {
	r := newScanRig(t)
	r.clock.advance(testFailure + time.Millisecond)
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	st := r.s.st
	a, b := planScan(st, r.clock.now), planScan(st, r.clock.now)
	if len(a.nodes) != 3 || len(a.chains) != 1 || !a.bumpRouting {
		t.Fatalf("plan after every lease ran out: %d nodes, %d chains", len(a.nodes), len(a.chains))
	}
	if len(b.nodes) != len(a.nodes) || chainString(a.chains[0]) != chainString(b.chains[0]) {
		t.Fatal("planScan gave different answers for the same input")
	}
	for _, n := range st.nodes {
		if n.Status != mgmtdpb.NodeStatus_NODE_ACTIVE {
			t.Fatal("planScan changed the state it read")
		}
	}
	if p := planScan(st, r.clock.now.Add(-2*time.Millisecond-testFailure)); !p.empty() {
		t.Fatal("a plan before any lease ran out is not empty")
	}
}
