package mgmtd

import (
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/emberfs/emberfs/service/mgmtd/statemachine"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// liveNode is what the primary knows about a node beyond its record.
type liveNode struct {
	deadline      time.Time // lease end; the node fails after it
	lastHeartbeat time.Time
}

// liveTarget is a target's volatile state, reported in heartbeats.
type liveTarget struct {
	local          mgmtdpb.LocalState
	free, capacity uint64
	chainVersion   uint64
}

// state is the primary's view: durable records (treated as immutable and
// replaced on change) plus volatile lease and heartbeat data.
type state struct {
	term      uint64
	renewedAt time.Time
	version   uint64
	config    *mgmtdpb.ClusterConfig
	nodes     map[uint32]*mgmtdpb.Node
	targets   map[uint64]*mgmtdpb.Target
	chains    map[uint32]*mgmtdpb.Chain
	tables    map[uint32]*mgmtdpb.ChainTable
	liveNodes map[uint32]*liveNode
	live      map[uint64]*liveTarget

	nextNode, nextChain, nextTable uint64

	done    chan struct{} // closed when this term ends
	changed chan struct{} // closed and replaced on each routing version
}

func newState(d *durable, term uint64, leaseStart time.Time, opts Options) *state {
	st := &state{
		term:      term,
		renewedAt: leaseStart,
		version:   d.version,
		config:    d.config,
		nodes:     d.nodes,
		targets:   d.targets,
		chains:    d.chains,
		tables:    d.tables,
		liveNodes: map[uint32]*liveNode{},
		live:      map[uint64]*liveTarget{},
		nextNode:  max(d.nextNode, 1),
		nextChain: max(d.nextChain, 1),
		nextTable: max(d.nextTable, 1),
		done:      make(chan struct{}),
		changed:   make(chan struct{}),
	}
	if st.config == nil {
		st.config = &mgmtdpb.ClusterConfig{
			HeartbeatIntervalMs:  uint32(opts.HeartbeatInterval.Milliseconds()),
			NodeFailureTimeoutMs: uint32(opts.NodeFailureTimeout.Milliseconds()),
		}
	}
	// A new primary has heard nobody yet: give every node one full failure
	// timeout to heartbeat, and assume meanwhile that each target is as
	// its public state says, so that a failover alone changes no chain.
	grace := leaseStart.Add(st.failureTimeout())
	for id := range st.nodes {
		st.liveNodes[id] = &liveNode{deadline: grace}
	}
	for _, c := range st.chains {
		for _, ct := range c.Targets {
			local := statemachine.LocalOffline
			switch ct.PublicState {
			case statemachine.Serving:
				local = statemachine.UpToDate
			case statemachine.Syncing, statemachine.Waiting:
				local = statemachine.Online
			}
			st.live[ct.TargetId] = &liveTarget{local: local}
		}
	}
	return st
}

func (st *state) failureTimeout() time.Duration {
	return time.Duration(st.config.NodeFailureTimeoutMs) * time.Millisecond
}

func (st *state) liveTarget(id uint64) *liveTarget {
	lt := st.live[id]
	if lt == nil {
		lt = &liveTarget{local: statemachine.LocalOffline}
		st.live[id] = lt
	}
	return lt
}

func (st *state) apply(ch *change, newVersion uint64) {
	for _, n := range ch.nodes {
		st.nodes[n.NodeId] = n
		if st.liveNodes[n.NodeId] == nil {
			st.liveNodes[n.NodeId] = &liveNode{}
		}
	}
	for _, t := range ch.targets {
		st.targets[t.TargetId] = t
	}
	for _, c := range ch.chains {
		st.chains[c.ChainId] = c
	}
	for _, t := range ch.tables {
		st.tables[t.TableId] = t
	}
	if ch.config != nil {
		st.config = ch.config
	}
	if ch.nextNode != 0 {
		st.nextNode = ch.nextNode
	}
	if ch.nextChain != 0 {
		st.nextChain = ch.nextChain
	}
	if ch.nextTable != 0 {
		st.nextTable = ch.nextTable
	}
	st.version = newVersion
}

// publicState is a target's public state as its chain says (unspecified
// for a target in no chain).
func (st *state) publicState(t *mgmtdpb.Target) mgmtdpb.PublicState {
	if c := st.chains[t.ChainId]; c != nil {
		for _, ct := range c.Targets {
			if ct.TargetId == t.TargetId {
				return ct.PublicState
			}
		}
	}
	return mgmtdpb.PublicState_PUBLIC_UNSPECIFIED
}

func cloneChain(c *mgmtdpb.Chain) *mgmtdpb.Chain { return proto.Clone(c).(*mgmtdpb.Chain) }

func (st *state) nodeList() []*mgmtdpb.Node {
	out := make([]*mgmtdpb.Node, 0, len(st.nodes))
	for _, n := range st.nodes {
		c := proto.Clone(n).(*mgmtdpb.Node)
		if ln := st.liveNodes[n.NodeId]; ln != nil && !ln.lastHeartbeat.IsZero() {
			c.LastHeartbeatUnixMs = ln.lastHeartbeat.UnixMilli()
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeId < out[j].NodeId })
	return out
}

func (st *state) targetList() []*mgmtdpb.Target {
	out := make([]*mgmtdpb.Target, 0, len(st.targets))
	for _, t := range st.targets {
		c := durableTarget(t)
		c.PublicState = st.publicState(t)
		lt := st.liveTarget(t.TargetId)
		c.LocalState, c.FreeBytes, c.CapacityBytes, c.ReportedChainVersion = lt.local, lt.free, lt.capacity, lt.chainVersion
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TargetId < out[j].TargetId })
	return out
}

func (st *state) chainList() []*mgmtdpb.Chain {
	out := make([]*mgmtdpb.Chain, 0, len(st.chains))
	for _, c := range st.chains {
		out = append(out, cloneChain(c))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ChainId < out[j].ChainId })
	return out
}

func (st *state) tableList() []*mgmtdpb.ChainTable {
	out := make([]*mgmtdpb.ChainTable, 0, len(st.tables))
	for _, t := range st.tables {
		out = append(out, proto.Clone(t).(*mgmtdpb.ChainTable))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TableId < out[j].TableId })
	return out
}

func (st *state) routingInfo(primary, primaryMetrics string) *mgmtdpb.RoutingInfo {
	return &mgmtdpb.RoutingInfo{
		Version:        st.version,
		Nodes:          st.nodeList(),
		Targets:        st.targetList(),
		Chains:         st.chainList(),
		Tables:         st.tableList(),
		PrimaryAddress: primary,

		PrimaryMetricsAddress: primaryMetrics,
	}
}
