package mgmtd

import (
	"context"
	"sort"
	"time"

	"github.com/emberfs/emberfs/service/mgmtd/statemachine"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"google.golang.org/protobuf/proto"
)

// scanLoop runs scanOnce every ScanInterval and whenever a heartbeat or an
// admin call changed something that may move a chain.
func (s *Server) scanLoop() {
	t := time.NewTicker(s.opts.ScanInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		s.scanOnce()
	}
}

// nodeStatus is what a node's status should be now: disabled sticks until
// an admin enables the node; otherwise its lease decides.
func nodeStatus(n *mgmtdpb.Node, ln *liveNode, now time.Time) mgmtdpb.NodeStatus {
	if n.Status == mgmtdpb.NodeStatus_NODE_DISABLED {
		return n.Status
	}
	if ln != nil && now.Before(ln.deadline) {
		return mgmtdpb.NodeStatus_NODE_ACTIVE
	}
	return mgmtdpb.NodeStatus_NODE_FAILED
}

// effectiveLocal is the local state the state machine sees for chain
// member ct of a chain at version chainVer: offline for a target whose
// node is not active or that an admin marked offline; online for a
// syncing target that reports up-to-date at another chain version. A
// sync-done vouches only for the chain version it was sent under; a
// report from before the target left the write path and came back
// syncing (its process may never have seen the versions in between) must
// not promote it to serving without a sync.
func (st *state) effectiveLocal(ct *mgmtdpb.ChainTarget, chainVer uint64, statusOf func(uint32) mgmtdpb.NodeStatus) mgmtdpb.LocalState {
	t := st.targets[ct.TargetId]
	if t == nil || t.AdminOffline || statusOf(t.NodeId) != mgmtdpb.NodeStatus_NODE_ACTIVE {
		return statemachine.LocalOffline
	}
	lt := st.liveTarget(ct.TargetId)
	if lt.local == statemachine.UpToDate && ct.PublicState == statemachine.Syncing && lt.chainVersion != chainVer {
		return statemachine.Online
	}
	return lt.local
}

// planScan is the scan as a pure step: given the primary's state and the
// time, it returns the durable changes due (node statuses from their
// leases, chains moved by the state machine with their versions bumped).
// It reads st and changes nothing, does no I/O and reads no clock, so
// lease expiry and flapping are tested by calling it with chosen times.
func planScan(st *state, now time.Time) *change {
	ch := &change{}
	status := map[uint32]mgmtdpb.NodeStatus{}
	for id, n := range st.nodes {
		want := nodeStatus(n, st.liveNodes[id], now)
		status[id] = want
		if n.Status != want {
			c := proto.Clone(n).(*mgmtdpb.Node)
			c.Status = want
			ch.nodes = append(ch.nodes, c)
		}
	}
	// Map order is random; a sorted change keeps logs and commits stable.
	sort.Slice(ch.nodes, func(i, j int) bool { return ch.nodes[i].NodeId < ch.nodes[j].NodeId })
	statusOf := func(id uint32) mgmtdpb.NodeStatus { return status[id] }

	ids := make([]uint32, 0, len(st.chains))
	for id := range st.chains {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		c := st.chains[id]
		in := make([]statemachine.Target, len(c.Targets))
		for i, ct := range c.Targets {
			in[i] = statemachine.Target{ID: ct.TargetId, Public: ct.PublicState, Local: st.effectiveLocal(ct, c.Version, statusOf)}
		}
		next, changed := statemachine.UpdateChain(in)
		if !changed {
			continue
		}
		nc := &mgmtdpb.Chain{ChainId: c.ChainId, Version: c.Version + 1}
		for _, t := range next {
			nc.Targets = append(nc.Targets, &mgmtdpb.ChainTarget{TargetId: t.ID, PublicState: t.Public})
		}
		ch.chains = append(ch.chains, nc)
	}
	ch.bumpRouting = !ch.empty()
	return ch
}

// scanOnce expires leases and moves chains through the state machine,
// committing every resulting change in one transaction and one new
// routing version. The commit happens under s.mu like every other
// durable change: the in-memory state is only ever the KV's state plus
// live leases, and a commit is bounded by the primary lease.
func (s *Server) scanOnce() {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.primaryLocked()
	if st == nil {
		if s.st != nil {
			s.stepDownLocked("lease not renewed in time")
		}
		return
	}
	ch := planScan(st, s.opts.Clock())
	if ch.empty() {
		s.updateGaugesLocked(st)
		return
	}
	for _, n := range ch.nodes {
		s.log.Info("node status changed", "node", n.NodeId, "from", st.nodes[n.NodeId].Status, "to", n.Status)
	}
	for _, c := range ch.chains {
		s.log.Info("chain changed", "chain", c.ChainId, "version", c.Version, "targets", chainString(c))
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.PrimaryLease)
	defer cancel()
	if err := s.commitLocked(ctx, st, ch); err != nil {
		s.log.Warn("committing scan result failed", "err", err)
		return
	}
	s.updateGaugesLocked(st)
}

func chainString(c *mgmtdpb.Chain) string {
	out := ""
	for i, t := range c.Targets {
		if i > 0 {
			out += ","
		}
		out += formatUint(t.TargetId) + ":" + PublicStateName(t.PublicState)
	}
	return out
}
