package mgmtd_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/kv/badgerkv"
	"github.com/emberfs/emberfs/service/mgmtd"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/mgmtd/primaryhint"
	"github.com/emberfs/emberfs/service/mgmtd/statemachine"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
)

func TestTokenRefused(t *testing.T) {
	s := startPrimary(t, fastOptions(memEngine(t)))
	for _, tc := range []struct {
		name string
		opts []grpc.DialOption
		want string
	}{
		{"missing", nil, "missing cluster token"},
		{"wrong", []grpc.DialOption{rpcauth.DialOption("not-the-token")}, "wrong cluster token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := grpc.NewClient(s.Addr(), append(tc.opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			cl := mgmtdpb.NewMgmtdClient(cc)
			_, err = cl.GetRoutingInfo(ctxT(t), &mgmtdpb.GetRoutingInfoReq{})
			err = errcode.FromGRPC(err)
			if !errcode.Is(err, errcode.Unauthenticated) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("GetRoutingInfo error %v, want Unauthenticated %q", err, tc.want)
			}
			stream, err := cl.WatchRouting(ctxT(t), &mgmtdpb.WatchRoutingReq{})
			if err == nil {
				_, err = stream.Recv()
			}
			if err = errcode.FromGRPC(err); !errcode.Is(err, errcode.Unauthenticated) {
				t.Fatalf("WatchRouting error %v, want Unauthenticated", err)
			}
			_, err = cl.CreateChainTable(ctxT(t), &mgmtdpb.CreateChainTableReq{ReplicationFactor: 1})
			if err = errcode.FromGRPC(err); !errcode.Is(err, errcode.Unauthenticated) {
				t.Fatalf("CreateChainTable error %v, want Unauthenticated", err)
			}
		})
	}
}

func TestRegisterCreateTableAndRoute(t *testing.T) {
	s := startPrimary(t, fastOptions(memEngine(t)))
	conn := dial(t, s.Addr())
	startCluster(t, conn, 3, 2)
	rsp := createTable(t, conn, 3)
	if len(rsp.Chains) != 2 || len(rsp.Table.ChainIds) != 2 || rsp.Table.ReplicationFactor != 3 {
		t.Fatalf("table %v with %d chains, want 2 chains of 3", rsp.Table, len(rsp.Chains))
	}
	cache := startCache(t, conn)
	r, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool { return len(r.Info.Chains) == 2 })
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Info.Chains {
		serving := r.ServingTargets(c.ChainId)
		if len(serving) != 3 {
			t.Fatalf("chain %s: %d serving, want 3", chainStates(c), len(serving))
		}
		head, _ := r.Head(c.ChainId)
		tail, _ := r.Tail(c.ChainId)
		if head != serving[0] || tail != serving[2] {
			t.Fatalf("chain %s: head %d tail %d", chainStates(c), head, tail)
		}
		nodes := map[uint32]bool{}
		for _, id := range serving {
			tg, _ := r.Target(id)
			nodes[tg.NodeId] = true
			ctl, data, err := r.TargetAddress(id)
			if err != nil || !strings.HasPrefix(ctl, "127.0.0.1:2") || !strings.HasPrefix(data, "127.0.0.1:3") {
				t.Fatalf("target %d addresses %q %q %v", id, ctl, data, err)
			}
		}
		if len(nodes) != 3 {
			t.Fatalf("chain %s uses %d nodes, want 3 distinct", chainStates(c), len(nodes))
		}
		if next, st, ok := r.Successor(c.ChainId, head); !ok || next != serving[1] || st != statemachine.Serving {
			t.Fatalf("successor of head %d: %d %v %v", head, next, st, ok)
		}
	}
	if _, _, err := r.TargetAddress(999); err == nil {
		t.Fatal("unknown target has an address")
	}

	// Placing again fails clearly: every target is in a chain.
	err = conn.Call(ctxT(t), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{ReplicationFactor: 3})
		return err
	})
	if !errcode.Is(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), "already in a chain") {
		t.Fatalf("second create: %v", err)
	}
	err = conn.Call(ctxT(t), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{ReplicationFactor: 2, TargetIds: []uint64{999}})
		return err
	})
	if !errcode.Is(err, errcode.NotFound) || !strings.Contains(err.Error(), "999") {
		t.Fatalf("create with unknown target: %v", err)
	}

	// Lists agree with routing.
	err = conn.Call(ctxT(t), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		nodes, err := cl.ListNodes(ctx, &mgmtdpb.ListNodesReq{})
		if err != nil {
			return err
		}
		targets, err := cl.ListTargets(ctx, &mgmtdpb.ListTargetsReq{})
		if err != nil {
			return err
		}
		tables, err := cl.ListTables(ctx, &mgmtdpb.ListTablesReq{})
		if err != nil {
			return err
		}
		if len(nodes.Nodes) != 3 || len(targets.Targets) != 6 || len(tables.Tables) != 1 {
			t.Errorf("lists: %d nodes, %d targets, %d tables", len(nodes.Nodes), len(targets.Targets), len(tables.Tables))
		}
		for _, tg := range targets.Targets {
			if tg.LocalState != statemachine.UpToDate || tg.FreeBytes != 1<<30 || tg.ChainId == 0 {
				t.Errorf("target %v", tg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLeaseExpiryMovesTargetToEnd: a storage service stops heartbeating;
// after the failure timeout its node is failed, its targets offline at the
// end of their chains, and each such chain's version went up.
func TestLeaseExpiryMovesTargetToEnd(t *testing.T) {
	s := startPrimary(t, fastOptions(memEngine(t)))
	conn := dial(t, s.Addr())
	nodes := startCluster(t, conn, 3, 1)
	createTable(t, conn, 3)
	cache := startCache(t, conn)
	before, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool {
		c := chainOf(r, 101)
		return c != nil && len(r.ServingTargets(c.ChainId)) == 3
	})
	if err != nil {
		t.Fatal(err)
	}
	c0 := chainOf(before, 101)
	// Make node 1 the victim wherever it sits in the chain.
	nodes[0].agent.Stop()
	after, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool {
		return r.TargetState(101) == statemachine.Offline
	})
	if err != nil {
		t.Fatalf("target 101 never went offline: %v", err)
	}
	c1 := chainOf(after, 101)
	if last := c1.Targets[len(c1.Targets)-1]; last.TargetId != 101 {
		t.Fatalf("offline target not at the chain end: %s", chainStates(c1))
	}
	if len(after.ServingTargets(c1.ChainId)) != 2 {
		t.Fatalf("chain after failure %s, want two serving", chainStates(c1))
	}
	if c1.Version <= c0.Version || after.Version() <= before.Version() {
		t.Fatalf("versions did not increase: chain %d -> %d, routing %d -> %d", c0.Version, c1.Version, before.Version(), after.Version())
	}
	if n, _ := after.Node(1); n.Status != mgmtdpb.NodeStatus_NODE_FAILED {
		t.Fatalf("node 1 status %v, want failed", n.Status)
	}
	if nodes[0].agent.LeaseValid() {
		t.Fatal("stopped agent still claims a valid lease")
	}
}

// TestReturningServiceRecovers: a storage service restarts. It registers
// only after mgmtd marked its target offline, then the target goes
// waiting -> syncing -> serving as its reported local state moves from
// online to up-to-date.
func TestReturningServiceRecovers(t *testing.T) {
	var mu sync.Mutex
	var history []string // public states of target 101, one per chain change
	opts := fastOptions(memEngine(t))
	opts.OnChainChange = func(c *mgmtdpb.Chain) {
		for _, ct := range c.Targets {
			if ct.TargetId == 101 {
				mu.Lock()
				if n := len(history); n == 0 || history[n-1] != mgmtd.PublicStateName(ct.PublicState) {
					history = append(history, mgmtd.PublicStateName(ct.PublicState))
				}
				mu.Unlock()
			}
		}
	}
	s := startPrimary(t, opts)
	conn := dial(t, s.Addr())
	nodes := startCluster(t, conn, 3, 1)
	createTable(t, conn, 3)
	cache := startCache(t, conn)
	if _, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool { return r.TargetState(101) == statemachine.Serving }); err != nil {
		t.Fatal(err)
	}

	// "Crash" node 1 and restart it at once with a new boot id.
	nodes[0].agent.Stop()
	back := newFakeStorage(t, conn, 1, []uint64{101}, statemachine.Online)
	// Until mgmtd has seen the old lease expire the new process may not
	// join: mgmtd answers Busy and the agent retries.
	testutil.WaitUntil(t, "a Busy registration refusal", func() bool {
		return errcode.Is(back.agent.LastError(), errcode.Busy) || back.agent.LeaseValid()
	})
	if err := back.agent.WaitRegistered(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool { return r.TargetState(101) == statemachine.Syncing }); err != nil {
		t.Fatalf("target never started syncing: %v", err)
	}
	r := cache.Current()
	c := chainOf(r, 101)
	// The predecessor learns it must sync its successor from routing alone.
	pred := r.WriteTargets(c.ChainId)
	if n := len(pred); n != 3 || pred[n-1] != 101 {
		t.Fatalf("write targets %v: syncing target should be last", pred)
	}
	if next, st, ok := r.Successor(c.ChainId, pred[1]); !ok || next != 101 || st != statemachine.Syncing {
		t.Fatalf("predecessor's successor %d %v %v", next, st, ok)
	}
	back.setLocalAt(101, statemachine.UpToDate, c.Version) // sync done at this chain version
	if _, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool { return r.TargetState(101) == statemachine.Serving }); err != nil {
		t.Fatalf("target never served again: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(history, " "); got != "serving offline waiting syncing serving" {
		t.Fatalf("target 101 went through %q, want serving offline waiting syncing serving", got)
	}
}

// TestManyTargetsHeartbeat: 100 targets (50 nodes x 2) heartbeat over real
// gRPC at once; then 5 nodes stop and exactly their targets go offline.
func TestManyTargetsHeartbeat(t *testing.T) {
	opts := fastOptions(memEngine(t))
	opts.HeartbeatInterval = 100 * time.Millisecond
	opts.NodeFailureTimeout = 1500 * time.Millisecond
	s := startPrimary(t, opts)
	var conns []*mgmtdclient.Conn
	for range 5 {
		conns = append(conns, dial(t, s.Addr()))
	}
	var nodes []*fakeStorage
	for n := 1; n <= 50; n++ {
		nodes = append(nodes, newFakeStorage(t, conns[n%5], uint32(n), []uint64{uint64(n*100 + 1), uint64(n*100 + 2)}, statemachine.UpToDate))
	}
	for _, f := range nodes {
		if err := f.agent.WaitRegistered(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	rsp := createTable(t, conns[0], 2)
	if len(rsp.Chains) != 50 {
		t.Fatalf("%d chains, want 50", len(rsp.Chains))
	}
	cache := startCache(t, conns[0])
	allServing := func(r *routing.Routing) bool {
		for _, c := range r.Info.Chains {
			if len(r.ServingTargets(c.ChainId)) != 2 {
				return false
			}
		}
		return len(r.Info.Chains) == 50
	}
	if _, err := cache.WaitFor(ctxT(t), allServing); err != nil {
		t.Fatal(err)
	}
	dead := map[uint32]bool{}
	for _, f := range nodes[:5] {
		f.agent.Stop()
		dead[f.nodeID] = true
	}
	r, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool {
		for _, tg := range r.Info.Targets {
			if dead[tg.NodeId] && r.TargetState(tg.TargetId) == statemachine.Serving {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range r.Info.Targets {
		st := r.TargetState(tg.TargetId)
		if !dead[tg.NodeId] && st != statemachine.Serving {
			t.Fatalf("target %d of a live node is %s", tg.TargetId, mgmtd.PublicStateName(st))
		}
	}
	for _, f := range nodes[5:] {
		testutil.WaitUntil(t, "live agents to hold valid leases", f.agent.LeaseValid)
	}
	for _, f := range nodes[:5] {
		if f.agent.LeaseValid() {
			t.Fatalf("stopped node %d still claims a lease", f.nodeID)
		}
	}
}

// TestRestartPersistence: routing survives a restart on the same badger
// directory, with the same chains and a higher routing version.
func TestRestartPersistence(t *testing.T) {
	dir := t.TempDir()
	eng, err := badgerkv.Open(dir, badgerkv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := fastOptions(eng)
	opts.NodeFailureTimeout = 10 * time.Second // nobody fails during the restart
	opts.InstanceID = "mgmtd-a"
	s := startPrimary(t, opts)
	conn := dial(t, s.Addr())
	nodes := startCluster(t, conn, 3, 2)
	createTable(t, conn, 3)
	// A chain change to persist: an admin takes target 101 offline.
	err = conn.Call(ctxT(t), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.OfflineTarget(ctx, &mgmtdpb.OfflineTargetReq{TargetId: 101})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	cache := startCache(t, conn)
	before, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool { return r.TargetState(101) == statemachine.Offline })
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range nodes {
		f.agent.Stop()
	}
	cache.Close()
	s.Stop()
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}

	eng2, err := badgerkv.Open(dir, badgerkv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng2.Close()
	opts.Engine = eng2
	s2 := startPrimary(t, opts)
	defer s2.Stop()
	var info *mgmtdpb.RoutingInfo
	err = dial(t, s2.Addr()).Call(ctxT(t), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		rsp, err := cl.GetRoutingInfo(ctx, &mgmtdpb.GetRoutingInfoReq{})
		info = rsp.GetInfo()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	after := routing.NewRouting(info)
	if after.Version() <= before.Version() {
		t.Fatalf("routing version %d after restart, was %d", after.Version(), before.Version())
	}
	if len(after.Info.Chains) != len(before.Info.Chains) || len(after.Info.Nodes) != 3 || len(after.Info.Targets) != 6 {
		t.Fatalf("after restart: %d chains, %d nodes, %d targets", len(after.Info.Chains), len(after.Info.Nodes), len(after.Info.Targets))
	}
	for _, c := range before.Info.Chains {
		c2, ok := after.Chain(c.ChainId)
		if !ok || c2.Version < c.Version || chainStates(c2) != chainStates(c) {
			t.Fatalf("chain %d: before v%d %s, after %v", c.ChainId, c.Version, chainStates(c), c2)
		}
	}
	if tg, _ := after.Target(101); !tg.AdminOffline {
		t.Fatal("admin offline mark lost in restart")
	}
}

// TestPrimaryFailover: three instances over one engine. The primary is
// killed; another takes over, routing versions keep increasing, chain
// changes made before the kill survive, and changes after it still work.
func TestPrimaryFailover(t *testing.T) {
	eng := memEngine(t)
	var servers []*mgmtd.Server
	var addrs []string
	for range 3 {
		s := startServer(t, fastOptions(eng))
		servers = append(servers, s)
		addrs = append(addrs, s.Addr())
	}
	primary := func() *mgmtd.Server {
		for _, s := range servers {
			if s.IsPrimary() {
				return s
			}
		}
		return nil
	}
	testutil.WaitUntil(t, "a primary", func() bool { return primary() != nil })
	p1 := primary()

	// A standby redirects callers to the primary.
	var standby string
	for _, s := range servers {
		if s != p1 {
			standby = s.Addr()
		}
	}
	conn := dial(t, append([]string{standby}, addrs...)...)
	nodes := startCluster(t, conn, 3, 1)
	if got := conn.Current(); got != p1.Addr() {
		t.Fatalf("conn uses %s, want redirect to primary %s", got, p1.Addr())
	}
	createTable(t, conn, 3)
	cache := startCache(t, conn)
	var versions []uint64
	var vmu sync.Mutex
	go func() {
		for {
			ch := cache.Changed()
			vmu.Lock()
			versions = append(versions, cache.Version())
			vmu.Unlock()
			select {
			case <-ch:
			case <-time.After(eventually):
				return
			}
		}
	}()
	// A chain change just before the kill.
	err := conn.Call(ctxT(t), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.OfflineTarget(ctx, &mgmtdpb.OfflineTargetReq{TargetId: 201})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	before, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool { return r.TargetState(201) == statemachine.Offline })
	if err != nil {
		t.Fatal(err)
	}
	p1.Stop()
	testutil.WaitUntil(t, "a new primary", func() bool { p := primary(); return p != nil && p != p1 })
	after, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool { return r.Info.PrimaryAddress != p1.Addr() })
	if err != nil {
		t.Fatalf("cache never followed the new primary: %v", err)
	}
	if after.Version() <= before.Version() {
		t.Fatalf("routing version went from %d to %d across failover", before.Version(), after.Version())
	}
	if after.TargetState(201) != statemachine.Offline {
		t.Fatal("chain change before the failover was lost")
	}
	for _, c := range before.Info.Chains {
		if c2, _ := after.Chain(c.ChainId); c2.Version < c.Version {
			t.Fatalf("chain %d version went back: %d -> %d", c.ChainId, c.Version, c2.Version)
		}
	}
	// The new primary keeps the state machine running: node 3 fails.
	nodes[2].agent.Stop()
	final, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool { return r.TargetState(301) == statemachine.Offline })
	if err != nil {
		t.Fatal(err)
	}
	if final.TargetState(101) != statemachine.Serving {
		t.Fatalf("target 101 %s, want serving", mgmtd.PublicStateName(final.TargetState(101)))
	}
	if !nodes[0].agent.LeaseValid() {
		testutil.WaitUntil(t, "node 1 heartbeats to the new primary", nodes[0].agent.LeaseValid)
	}
	vmu.Lock()
	defer vmu.Unlock()
	for i := 1; i < len(versions); i++ {
		if versions[i] <= versions[i-1] {
			t.Fatalf("cache versions not increasing: %v", versions)
		}
	}
}

func TestAdminCalls(t *testing.T) {
	s := startPrimary(t, fastOptions(memEngine(t)))
	conn := dial(t, s.Addr())
	startCluster(t, conn, 2, 1)
	createTable(t, conn, 2)
	cache := startCache(t, conn)
	call := func(fn func(ctx context.Context, cl mgmtdpb.MgmtdClient) error) error {
		return conn.Call(ctxT(t), fn)
	}
	// Disable node 2: its target goes offline, and back when enabled.
	if err := call(func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.SetNodeDisabled(ctx, &mgmtdpb.SetNodeDisabledReq{NodeId: 2, Disabled: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool {
		n, _ := r.Node(2)
		return r.TargetState(201) == statemachine.Offline && n.Status == mgmtdpb.NodeStatus_NODE_DISABLED
	}); err != nil {
		t.Fatal(err)
	}
	if err := call(func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.SetNodeDisabled(ctx, &mgmtdpb.SetNodeDisabledReq{NodeId: 2})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Reporting up-to-date, it waits: a returning target is synced first.
	if _, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool { return r.TargetState(201) == statemachine.Waiting }); err != nil {
		t.Fatal(err)
	}
	err := call(func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.SetNodeDisabled(ctx, &mgmtdpb.SetNodeDisabledReq{NodeId: 77, Disabled: true})
		return err
	})
	if !errcode.Is(err, errcode.NotFound) || !strings.Contains(err.Error(), "77") {
		t.Fatalf("disable unknown node: %v", err)
	}
	err = call(func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.OfflineTarget(ctx, &mgmtdpb.OfflineTargetReq{TargetId: 5})
		return err
	})
	if !errcode.Is(err, errcode.NotFound) {
		t.Fatalf("offline unknown target: %v", err)
	}

	// Config: set, get, and refusals.
	var cfg *mgmtdpb.ClusterConfig
	if err := call(func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		rsp, err := cl.SetConfig(ctx, &mgmtdpb.SetConfigReq{Set: map[string]string{"node_failure_timeout_ms": "400", "meta.gc_interval": "5s"}})
		cfg = rsp.GetConfig()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if cfg.NodeFailureTimeoutMs != 400 || cfg.Extra["meta.gc_interval"] != "5s" {
		t.Fatalf("config after set: %v", cfg)
	}
	if err := call(func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		rsp, err := cl.GetConfig(ctx, &mgmtdpb.GetConfigReq{})
		cfg = rsp.GetConfig()
		return err
	}); err != nil || cfg.NodeFailureTimeoutMs != 400 || cfg.HeartbeatIntervalMs != 50 {
		t.Fatalf("get config: %v %v", cfg, err)
	}
	for _, bad := range []map[string]string{
		{"heartbeat_interval_ms": "abc"},
		{"heartbeat_interval_ms": "300"}, // failure timeout 400 < 2 x 300
		{"nonsense": "1"},
		{},
	} {
		err := call(func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
			_, err := cl.SetConfig(ctx, &mgmtdpb.SetConfigReq{Set: bad})
			return err
		})
		if !errcode.Is(err, errcode.InvalidArgument) {
			t.Fatalf("set config %v: %v, want InvalidArgument", bad, err)
		}
	}
	// Registration refusals.
	for _, req := range []*mgmtdpb.RegisterNodeReq{
		{Role: mgmtdpb.NodeRole_ROLE_STORAGE, Address: "x:1"},                                                                                                           // no boot id
		{Role: mgmtdpb.NodeRole_ROLE_META, Address: "x:1", BootId: 1, Targets: []*mgmtdpb.TargetReport{{TargetId: 9}}},                                                  // meta with targets
		{NodeId: 5, Role: mgmtdpb.NodeRole_ROLE_STORAGE, Address: "x:1", BootId: 1, Targets: []*mgmtdpb.TargetReport{{TargetId: 101, LocalState: statemachine.Online}}}, // someone else's target
	} {
		err := call(func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
			_, err := cl.RegisterNode(ctx, req)
			return err
		})
		if err == nil {
			t.Fatalf("register %v succeeded", req)
		}
	}
}

// TestLeaseLostWhenMgmtdUnreachable: a service that cannot reach mgmtd
// reports its lease invalid (so it stops accepting writes).
func TestLeaseLostWhenMgmtdUnreachable(t *testing.T) {
	s := startPrimary(t, fastOptions(memEngine(t)))
	conn := dial(t, s.Addr())
	meta, err := mgmtdclient.Start(mgmtdclient.Options{Conn: conn, Role: mgmtdpb.NodeRole_ROLE_META, Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Stop()
	if err := meta.WaitRegistered(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if meta.NodeID() == 0 {
		t.Fatal("no node id allocated")
	}
	testutil.WaitUntil(t, "valid lease", meta.LeaseValid)
	s.Stop()
	testutil.WaitUntil(t, "lease to lapse", func() bool { return !meta.LeaseValid() })
}

func TestMetricsEndpoint(t *testing.T) {
	s := startPrimary(t, fastOptions(memEngine(t)))
	conn := dial(t, s.Addr())
	startCluster(t, conn, 1, 1)
	srv := httptest.NewServer(s.MetricsHandler())
	defer srv.Close()
	testutil.WaitUntil(t, "heartbeat metrics", func() bool {
		rsp, err := http.Get(srv.URL)
		if err != nil {
			return false
		}
		defer rsp.Body.Close()
		b, _ := io.ReadAll(rsp.Body)
		return strings.Contains(string(b), "emberfs_mgmtd_is_primary 1") &&
			strings.Contains(string(b), "emberfs_mgmtd_heartbeats_total") &&
			!strings.Contains(string(b), "emberfs_mgmtd_heartbeats_total 0")
	})
}

func TestStandbyAnswersNotPrimary(t *testing.T) {
	eng := memEngine(t)
	p := startPrimary(t, fastOptions(eng))
	sb := startServer(t, fastOptions(eng))
	cc, err := grpc.NewClient(sb.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()), rpcauth.DialOption(token))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	testutil.WaitUntil(t, "standby to learn the primary", func() bool {
		_, err := mgmtdpb.NewMgmtdClient(cc).ListNodes(context.Background(), &mgmtdpb.ListNodesReq{})
		err = errcode.FromGRPC(err)
		return errcode.Is(err, errcode.NotPrimary) && primaryhint.Addr(err) == p.Addr()
	})
}

// TestRestartedNodeMustWait: a second process for a node whose targets
// still serve is refused (Busy) until mgmtd has marked them offline.
func TestRestartedNodeMustWait(t *testing.T) {
	s := startPrimary(t, fastOptions(memEngine(t)))
	conn := dial(t, s.Addr())
	nodes := startCluster(t, conn, 2, 1)
	createTable(t, conn, 2)
	cache := startCache(t, conn)
	if _, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool { return r.TargetState(101) == statemachine.Serving }); err != nil {
		t.Fatal(err)
	}
	register := func() error {
		return conn.Call(ctxT(t), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
			_, err := cl.RegisterNode(ctx, &mgmtdpb.RegisterNodeReq{
				NodeId: 1, Role: mgmtdpb.NodeRole_ROLE_STORAGE, Address: "127.0.0.1:20001", BootId: 12345,
				Targets: []*mgmtdpb.TargetReport{{TargetId: 101, LocalState: statemachine.Online}},
			})
			return err
		})
	}
	// The old process still heartbeats: its target serves, so no.
	err := register()
	if !errcode.Is(err, errcode.Busy) || !strings.Contains(err.Error(), "101 (serving)") {
		t.Fatalf("early registration: %v, want Busy naming target 101", err)
	}
	nodes[0].agent.Stop()
	testutil.WaitUntil(t, "registration after the old lease ran out", func() bool { return register() == nil })
	r, err := cache.WaitFor(ctxT(t), func(r *routing.Routing) bool {
		n, _ := r.Node(1)
		return n.BootId == 12345
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := r.TargetState(101); st == statemachine.Serving {
		t.Fatalf("restarted node's target is %s right after registering; it must recover first", mgmtd.PublicStateName(st))
	}
	// The old process's heartbeats are refused now.
	err = conn.Call(ctxT(t), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.Heartbeat(ctx, &mgmtdpb.HeartbeatReq{NodeId: 1, BootId: nodes[0].agent.BootID()})
		return err
	})
	if !errcode.Is(err, errcode.NotFound) || !strings.Contains(err.Error(), "register again") {
		t.Fatalf("heartbeat with the old boot id: %v", err)
	}
}

// Placement runs outside mgmtd's lock, so concurrent CreateChainTable
// calls over the same targets race; the targets are listed again before
// the commit, so exactly one wins and no target lands in two chains.
func TestConcurrentCreateChainTable(t *testing.T) {
	s := startPrimary(t, fastOptions(memEngine(t)))
	conn := dial(t, s.Addr())
	startCluster(t, conn, 6, 2)
	var ids []uint64
	for n := 1; n <= 6; n++ {
		ids = append(ids, uint64(n*100+1), uint64(n*100+2))
	}
	const callers = 4
	errs := make(chan error, callers)
	for range callers {
		go func() {
			errs <- conn.Call(ctxT(t), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
				_, err := cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{ReplicationFactor: 3, TargetIds: ids})
				return err
			})
		}()
	}
	won := 0
	for range callers {
		err := <-errs
		switch {
		case err == nil:
			won++
		case !errcode.Is(err, errcode.AlreadyExists):
			t.Fatalf("losing create: %v, want AlreadyExists", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent creates over the same targets succeeded, want 1", won, callers)
	}
	r, err := startCache(t, conn).WaitFor(ctxT(t), func(r *routing.Routing) bool { return len(r.Info.Tables) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]uint32{}
	for _, c := range r.Info.Chains {
		for _, ct := range c.Targets {
			if prev, ok := seen[ct.TargetId]; ok {
				t.Fatalf("target %d in chains %d and %d", ct.TargetId, prev, c.ChainId)
			}
			seen[ct.TargetId] = c.ChainId
		}
	}
	if len(seen) != len(ids) || len(r.Info.Chains) != 4 {
		t.Fatalf("%d targets in %d chains, want 12 in 4", len(seen), len(r.Info.Chains))
	}
}
