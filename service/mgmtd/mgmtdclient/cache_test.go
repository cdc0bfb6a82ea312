package mgmtdclient

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
)

func sampleInfo(version uint64) *mgmtdpb.RoutingInfo {
	return &mgmtdpb.RoutingInfo{
		Version: version,
		Nodes: []*mgmtdpb.Node{
			{NodeId: 1, Role: mgmtdpb.NodeRole_ROLE_STORAGE, Address: "h1:1", DataAddress: "h1:2", Status: mgmtdpb.NodeStatus_NODE_ACTIVE},
		},
		Targets: []*mgmtdpb.Target{{TargetId: 101, NodeId: 1, ChainId: 7}},
		Chains: []*mgmtdpb.Chain{{ChainId: 7, Version: 1, Targets: []*mgmtdpb.ChainTarget{
			{TargetId: 101, PublicState: mgmtdpb.PublicState_PUBLIC_SERVING}}}},
		Tables: []*mgmtdpb.ChainTable{{TableId: 1, Version: 1, ReplicationFactor: 1, ChainIds: []uint32{7}}},
	}
}

func TestCacheNeverGoesBack(t *testing.T) {
	conn, err := Dial([]string{"127.0.0.1:1"}, "t")
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(conn)
	ch := c.Changed()
	if !c.install(sampleInfo(5)) {
		t.Fatal("first version not installed")
	}
	select {
	case <-ch:
	default:
		t.Fatal("Changed not signalled")
	}
	if c.install(sampleInfo(4)) || c.install(sampleInfo(5)) || c.Version() != 5 {
		t.Fatalf("older or equal version installed; at %d", c.Version())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.WaitFor(ctx, func(r *routing.Routing) bool { return r.Version() >= 6 }); err == nil {
		t.Fatal("WaitFor returned for a version never installed")
	}
	go c.install(sampleInfo(6))
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if r, err := c.WaitFor(ctx2, func(r *routing.Routing) bool { return r.Version() >= 6 }); err != nil || r.Version() != 6 {
		t.Fatalf("WaitFor: %v", err)
	}
}

func TestDialErrors(t *testing.T) {
	if _, err := Dial(nil, "t"); err == nil {
		t.Fatal("no addresses accepted")
	}
	if _, err := Dial([]string{"a:1"}, ""); err == nil {
		t.Fatal("empty token accepted")
	}
	c, err := Dial([]string{"a:1, b:2", "a:1"}, "t")
	if err != nil || len(c.addrs) != 2 || c.Current() != "a:1" {
		t.Fatalf("addresses %v %v", c.addrs, err)
	}
	// Nothing listens: Call gives up when ctx ends, naming the failure.
	c2, _ := Dial([]string{"127.0.0.1:1"}, "t")
	defer c2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = c2.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.GetRoutingInfo(ctx, &mgmtdpb.GetRoutingInfoReq{})
		return err
	})
	if err == nil {
		t.Fatal("call to nothing succeeded")
	}
}

// TestWhileRouting: the context lives while routing satisfies the
// condition and ends with ErrRoutingMoved on the first version that does
// not; a context ended by its caller does not claim routing moved.
func TestWhileRouting(t *testing.T) {
	conn, err := Dial([]string{"127.0.0.1:1"}, "t")
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(conn)
	c.install(sampleInfo(1))
	headIs101 := func(r *routing.Routing) bool { h, ok := r.Head(7); return ok && h == 101 }
	ctx, cancel := c.WhileRouting(context.Background(), headIs101)
	defer cancel()
	c.install(sampleInfo(2)) // same head
	select {
	case <-ctx.Done():
		t.Fatalf("ended while the head was unchanged: %v", context.Cause(ctx))
	case <-time.After(100 * time.Millisecond):
	}
	moved := sampleInfo(3)
	moved.Chains[0].Targets[0].PublicState = mgmtdpb.PublicState_PUBLIC_OFFLINE
	c.install(moved)
	select {
	case <-ctx.Done():
		if !errors.Is(context.Cause(ctx), ErrRoutingMoved) {
			t.Fatalf("cause %v, want ErrRoutingMoved", context.Cause(ctx))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("still alive after the head went offline")
	}

	ctx2, cancel2 := c.WhileRouting(context.Background(), func(*routing.Routing) bool { return true })
	cancel2()
	<-ctx2.Done()
	if errors.Is(context.Cause(ctx2), ErrRoutingMoved) {
		t.Fatal("a cancelled context reports that routing moved")
	}
}
