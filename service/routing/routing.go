// Package routing is the routing vocabulary shared by every role and the
// client: one immutable, indexed version of mgmtd's routing info (nodes,
// targets, chains, chain tables) and the chain look-ups built on it
// (serving and write targets, head, tail, successor). It only depends on
// the protobuf types; fetching and following routing info from mgmtd is
// service/mgmtd/mgmtdclient's job.
package routing

import (
	"fmt"

	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

const (
	serving = mgmtdpb.PublicState_PUBLIC_SERVING
	syncing = mgmtdpb.PublicState_PUBLIC_SYNCING
)

// Routing is one immutable version of the routing info with indexes.
type Routing struct {
	Info    *mgmtdpb.RoutingInfo
	nodes   map[uint32]*mgmtdpb.Node
	targets map[uint64]*mgmtdpb.Target
	chains  map[uint32]*mgmtdpb.Chain
	tables  map[uint32]*mgmtdpb.ChainTable
}

// NewRouting indexes info; info must not be changed afterwards.
func NewRouting(info *mgmtdpb.RoutingInfo) *Routing {
	r := &Routing{
		Info:    info,
		nodes:   make(map[uint32]*mgmtdpb.Node, len(info.Nodes)),
		targets: make(map[uint64]*mgmtdpb.Target, len(info.Targets)),
		chains:  make(map[uint32]*mgmtdpb.Chain, len(info.Chains)),
		tables:  make(map[uint32]*mgmtdpb.ChainTable, len(info.Tables)),
	}
	for _, n := range info.Nodes {
		r.nodes[n.NodeId] = n
	}
	for _, t := range info.Targets {
		r.targets[t.TargetId] = t
	}
	for _, c := range info.Chains {
		r.chains[c.ChainId] = c
	}
	for _, t := range info.Tables {
		r.tables[t.TableId] = t
	}
	return r
}

// Version is the routing version.
func (r *Routing) Version() uint64 { return r.Info.GetVersion() }

// Node returns a node by id.
func (r *Routing) Node(id uint32) (*mgmtdpb.Node, bool) { n, ok := r.nodes[id]; return n, ok }

// Target returns a target by id.
func (r *Routing) Target(id uint64) (*mgmtdpb.Target, bool) { t, ok := r.targets[id]; return t, ok }

// Chain returns a chain by id.
func (r *Routing) Chain(id uint32) (*mgmtdpb.Chain, bool) { c, ok := r.chains[id]; return c, ok }

// Table returns a chain table by id.
func (r *Routing) Table(id uint32) (*mgmtdpb.ChainTable, bool) { t, ok := r.tables[id]; return t, ok }

// ChainVersion is a chain's version (0 if unknown).
func (r *Routing) ChainVersion(id uint32) uint64 { return r.chains[id].GetVersion() }

func (r *Routing) chainTargets(id uint32, keep func(mgmtdpb.PublicState) bool) []uint64 {
	var out []uint64
	for _, t := range r.chains[id].GetTargets() {
		if keep(t.PublicState) {
			out = append(out, t.TargetId)
		}
	}
	return out
}

// ServingTargets are the chain's targets that serve reads, in chain order.
func (r *Routing) ServingTargets(chainID uint32) []uint64 {
	return r.chainTargets(chainID, func(s mgmtdpb.PublicState) bool { return s == serving })
}

// WriteTargets are the targets a write passes through, in order: the
// serving targets, then a syncing one (which receives writes while it is
// recovered, and acts as the tail).
func (r *Routing) WriteTargets(chainID uint32) []uint64 {
	return r.chainTargets(chainID, func(s mgmtdpb.PublicState) bool { return s == serving || s == syncing })
}

// Head is the target that takes a chain's writes (first serving target).
func (r *Routing) Head(chainID uint32) (uint64, bool) {
	ts := r.WriteTargets(chainID)
	if len(ts) == 0 || r.publicState(chainID, ts[0]) != serving {
		return 0, false
	}
	return ts[0], true
}

// Tail is the last target a write reaches (it commits first).
func (r *Routing) Tail(chainID uint32) (uint64, bool) {
	ts := r.WriteTargets(chainID)
	if len(ts) == 0 || r.publicState(chainID, ts[0]) != serving {
		return 0, false
	}
	return ts[len(ts)-1], true
}

// Successor is the next write target after targetID in its chain (false
// at the tail or if targetID takes no writes). A predecessor whose
// successor is syncing must sync it (docs/mgmtd.md).
func (r *Routing) Successor(chainID uint32, targetID uint64) (uint64, mgmtdpb.PublicState, bool) {
	ts := r.WriteTargets(chainID)
	for i, t := range ts {
		if t == targetID && i+1 < len(ts) {
			return ts[i+1], r.publicState(chainID, ts[i+1]), true
		}
	}
	return 0, 0, false
}

func (r *Routing) publicState(chainID uint32, targetID uint64) mgmtdpb.PublicState {
	for _, t := range r.chains[chainID].GetTargets() {
		if t.TargetId == targetID {
			return t.PublicState
		}
	}
	return mgmtdpb.PublicState_PUBLIC_UNSPECIFIED
}

// TargetState is a target's public state in its chain.
func (r *Routing) TargetState(targetID uint64) mgmtdpb.PublicState {
	t, ok := r.targets[targetID]
	if !ok {
		return mgmtdpb.PublicState_PUBLIC_UNSPECIFIED
	}
	return r.publicState(t.ChainId, targetID)
}

// TargetAddress returns the control (gRPC) and data transport addresses of
// the node holding a target.
func (r *Routing) TargetAddress(targetID uint64) (control, data string, err error) {
	t, ok := r.targets[targetID]
	if !ok {
		return "", "", fmt.Errorf("routing v%d: unknown target %d", r.Version(), targetID)
	}
	n, ok := r.nodes[t.NodeId]
	if !ok {
		return "", "", fmt.Errorf("routing v%d: target %d is on unknown node %d", r.Version(), targetID, t.NodeId)
	}
	return n.Address, n.DataAddress, nil
}

// ActiveNodes lists active nodes of a role (e.g. meta services to call).
func (r *Routing) ActiveNodes(role mgmtdpb.NodeRole) []*mgmtdpb.Node {
	var out []*mgmtdpb.Node
	for _, n := range r.Info.GetNodes() {
		if n.Role == role && n.Status == mgmtdpb.NodeStatus_NODE_ACTIVE {
			out = append(out, n)
		}
	}
	return out
}
