package mgmtd_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/badgerkv"
	"github.com/emberfs/emberfs/service/mgmtd"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/mgmtd/statemachine"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
)

const token = "test-cluster-token"

// Generous bound for "eventually": the machine is shared and slow under
// -race; nothing asserts on how fast things happen.
const eventually = 20 * time.Second

func memEngine(t *testing.T) kv.Engine {
	t.Helper()
	e, err := badgerkv.OpenMemory(badgerkv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// fastOptions uses short leases so failure tests run quickly.
func fastOptions(eng kv.Engine) mgmtd.Options {
	return mgmtd.Options{
		Engine:             eng,
		Token:              token,
		PrimaryLease:       300 * time.Millisecond,
		ScanInterval:       20 * time.Millisecond,
		HeartbeatInterval:  50 * time.Millisecond,
		NodeFailureTimeout: 300 * time.Millisecond,
	}
}

func startServer(t *testing.T, opts mgmtd.Options) *mgmtd.Server {
	t.Helper()
	s, err := mgmtd.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Start(lis)
	t.Cleanup(s.Stop)
	return s
}

func startPrimary(t *testing.T, opts mgmtd.Options) *mgmtd.Server {
	t.Helper()
	s := startServer(t, opts)
	testutil.WaitUntil(t, "primary", s.IsPrimary)
	return s
}

func dial(t *testing.T, addrs ...string) *mgmtdclient.Conn {
	t.Helper()
	c, err := mgmtdclient.Dial(addrs, token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	t.Cleanup(cancel)
	return ctx
}

// fakeStorage is a storage service as mgmtd sees it: a real agent on a
// real gRPC connection, reporting local states the test sets.
type fakeStorage struct {
	nodeID  uint32
	targets []uint64
	agent   *mgmtdclient.Agent

	mu       sync.Mutex
	locals   map[uint64]mgmtdpb.LocalState
	chainVer map[uint64]uint64 // the chain version each target reports
}

func newFakeStorage(t *testing.T, conn *mgmtdclient.Conn, nodeID uint32, targets []uint64, local mgmtdpb.LocalState) *fakeStorage {
	t.Helper()
	f := &fakeStorage{nodeID: nodeID, targets: targets, locals: map[uint64]mgmtdpb.LocalState{}, chainVer: map[uint64]uint64{}}
	for _, id := range targets {
		f.locals[id] = local
	}
	a, err := mgmtdclient.Start(mgmtdclient.Options{
		Conn:        conn,
		Role:        mgmtdpb.NodeRole_ROLE_STORAGE,
		NodeID:      nodeID,
		Address:     fmt.Sprintf("127.0.0.1:%d", 20000+nodeID),
		DataAddress: fmt.Sprintf("127.0.0.1:%d", 30000+nodeID),
		Hostname:    fmt.Sprintf("host%d", nodeID),
		Targets:     f.reports,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.agent = a
	t.Cleanup(a.Stop)
	return f
}

func (f *fakeStorage) reports() []*mgmtdpb.TargetReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*mgmtdpb.TargetReport
	for _, id := range f.targets {
		out = append(out, &mgmtdpb.TargetReport{TargetId: id, LocalState: f.locals[id], ChainVersion: f.chainVer[id], FreeBytes: 1 << 30, CapacityBytes: 2 << 30})
	}
	return out
}

func (f *fakeStorage) setLocal(id uint64, l mgmtdpb.LocalState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.locals[id] = l
}

// setLocalAt sets a target's local state as seen at chain version chainVer
// (a syncing target is promoted only on an up-to-date report at its
// chain's current version).
func (f *fakeStorage) setLocalAt(id uint64, l mgmtdpb.LocalState, chainVer uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.locals[id], f.chainVer[id] = l, chainVer
}

// startCluster starts nodes storage nodes (ids 1..nodes) with perNode
// targets each (target id = node*100 + i) and waits until all registered.
func startCluster(t *testing.T, conn *mgmtdclient.Conn, nodes, perNode int) []*fakeStorage {
	t.Helper()
	var out []*fakeStorage
	for n := 1; n <= nodes; n++ {
		var ts []uint64
		for i := 1; i <= perNode; i++ {
			ts = append(ts, uint64(n*100+i))
		}
		out = append(out, newFakeStorage(t, conn, uint32(n), ts, statemachine.UpToDate))
	}
	for _, f := range out {
		if err := f.agent.WaitRegistered(ctxT(t)); err != nil {
			t.Fatalf("node %d registration: %v", f.nodeID, err)
		}
	}
	return out
}

func createTable(t *testing.T, conn *mgmtdclient.Conn, replicas uint32) *mgmtdpb.CreateChainTableRsp {
	t.Helper()
	var rsp *mgmtdpb.CreateChainTableRsp
	err := conn.Call(ctxT(t), func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		var err error
		rsp, err = cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{ReplicationFactor: replicas})
		return err
	})
	if err != nil {
		t.Fatalf("create chain table: %v", err)
	}
	return rsp
}

func startCache(t *testing.T, conn *mgmtdclient.Conn) *mgmtdclient.Cache {
	t.Helper()
	c := mgmtdclient.NewCache(conn)
	c.Start()
	t.Cleanup(c.Close)
	return c
}

// chainOf finds the chain holding target id.
func chainOf(r *routing.Routing, id uint64) *mgmtdpb.Chain {
	t, ok := r.Target(id)
	if !ok {
		return nil
	}
	c, _ := r.Chain(t.ChainId)
	return c
}

func chainStates(c *mgmtdpb.Chain) string {
	s := ""
	for i, t := range c.GetTargets() {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%d:%s", t.TargetId, mgmtd.PublicStateName(t.PublicState))
	}
	return s
}
