package routing

import (
	"fmt"
	"testing"

	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

func sampleInfo(version uint64) *mgmtdpb.RoutingInfo {
	st := func(id uint64, s mgmtdpb.PublicState) *mgmtdpb.ChainTarget {
		return &mgmtdpb.ChainTarget{TargetId: id, PublicState: s}
	}
	return &mgmtdpb.RoutingInfo{
		Version: version,
		Nodes: []*mgmtdpb.Node{
			{NodeId: 1, Role: mgmtdpb.NodeRole_ROLE_STORAGE, Address: "h1:1", DataAddress: "h1:2", Status: mgmtdpb.NodeStatus_NODE_ACTIVE},
			{NodeId: 2, Role: mgmtdpb.NodeRole_ROLE_STORAGE, Address: "h2:1", DataAddress: "h2:2", Status: mgmtdpb.NodeStatus_NODE_ACTIVE},
			{NodeId: 3, Role: mgmtdpb.NodeRole_ROLE_STORAGE, Address: "h3:1", DataAddress: "h3:2", Status: mgmtdpb.NodeStatus_NODE_FAILED},
			{NodeId: 4, Role: mgmtdpb.NodeRole_ROLE_META, Address: "m:1", Status: mgmtdpb.NodeStatus_NODE_ACTIVE},
		},
		Targets: []*mgmtdpb.Target{
			{TargetId: 101, NodeId: 1, ChainId: 7},
			{TargetId: 201, NodeId: 2, ChainId: 7},
			{TargetId: 301, NodeId: 3, ChainId: 7},
			{TargetId: 102, NodeId: 1, ChainId: 8},
			{TargetId: 202, NodeId: 2, ChainId: 8},
		},
		Chains: []*mgmtdpb.Chain{
			{ChainId: 7, Version: 4, Targets: []*mgmtdpb.ChainTarget{
				st(201, serving), st(101, syncing), st(301, mgmtdpb.PublicState_PUBLIC_OFFLINE)}},
			{ChainId: 8, Version: 2, Targets: []*mgmtdpb.ChainTarget{
				st(102, mgmtdpb.PublicState_PUBLIC_LASTSRV), st(202, mgmtdpb.PublicState_PUBLIC_OFFLINE)}},
		},
		Tables: []*mgmtdpb.ChainTable{{TableId: 1, Version: 1, ReplicationFactor: 3, ChainIds: []uint32{7, 8}}},
	}
}

func TestRoutingHelpers(t *testing.T) {
	r := NewRouting(sampleInfo(5))
	if got := fmt.Sprint(r.ServingTargets(7)); got != "[201]" {
		t.Fatalf("serving %s", got)
	}
	if got := fmt.Sprint(r.WriteTargets(7)); got != "[201 101]" {
		t.Fatalf("write targets %s", got)
	}
	if h, ok := r.Head(7); !ok || h != 201 {
		t.Fatalf("head %d %v", h, ok)
	}
	if tl, ok := r.Tail(7); !ok || tl != 101 {
		t.Fatalf("tail %d %v (the syncing target is the write tail)", tl, ok)
	}
	if next, st, ok := r.Successor(7, 201); !ok || next != 101 || st != syncing {
		t.Fatalf("successor %d %v %v", next, st, ok)
	}
	if _, _, ok := r.Successor(7, 101); ok {
		t.Fatal("the tail has a successor")
	}
	if _, ok := r.Head(8); ok {
		t.Fatal("a chain with no serving target has a head")
	}
	if r.ChainVersion(7) != 4 || r.ChainVersion(99) != 0 {
		t.Fatal("chain versions")
	}
	if r.TargetState(301) != mgmtdpb.PublicState_PUBLIC_OFFLINE || r.TargetState(999) != mgmtdpb.PublicState_PUBLIC_UNSPECIFIED {
		t.Fatal("target states")
	}
	if ctl, data, err := r.TargetAddress(202); err != nil || ctl != "h2:1" || data != "h2:2" {
		t.Fatalf("address %q %q %v", ctl, data, err)
	}
	if metas := r.ActiveNodes(mgmtdpb.NodeRole_ROLE_META); len(metas) != 1 || metas[0].NodeId != 4 {
		t.Fatalf("meta nodes %v", metas)
	}
	if tb, ok := r.Table(1); !ok || len(tb.ChainIds) != 2 {
		t.Fatal("table")
	}
}
