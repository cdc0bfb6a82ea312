package mgmtd

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/mgmtd/placement"
	"github.com/emberfs/emberfs/service/mgmtd/statemachine"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// handlers adapts Server's methods to the generated gRPC interface,
// converting errcode errors for the wire.
type handlers struct {
	mgmtdpb.UnimplementedMgmtdServer
	s *Server
}

func wire[T any](v T, err error) (T, error) { return v, errcode.ToGRPC(err) }

func (h *handlers) RegisterNode(ctx context.Context, r *mgmtdpb.RegisterNodeReq) (*mgmtdpb.RegisterNodeRsp, error) {
	return wire(h.s.registerNode(ctx, r))
}
func (h *handlers) Heartbeat(ctx context.Context, r *mgmtdpb.HeartbeatReq) (*mgmtdpb.HeartbeatRsp, error) {
	return wire(h.s.heartbeat(ctx, r))
}
func (h *handlers) GetRoutingInfo(ctx context.Context, r *mgmtdpb.GetRoutingInfoReq) (*mgmtdpb.GetRoutingInfoRsp, error) {
	return wire(h.s.getRoutingInfo(r))
}
func (h *handlers) WatchRouting(r *mgmtdpb.WatchRoutingReq, stream mgmtdpb.Mgmtd_WatchRoutingServer) error {
	return errcode.ToGRPC(h.s.watchRouting(r, stream))
}
func (h *handlers) CreateChainTable(ctx context.Context, r *mgmtdpb.CreateChainTableReq) (*mgmtdpb.CreateChainTableRsp, error) {
	return wire(h.s.createChainTable(ctx, r))
}
func (h *handlers) ListNodes(context.Context, *mgmtdpb.ListNodesReq) (*mgmtdpb.ListNodesRsp, error) {
	return wire(readPrimary(h.s, func(st *state) *mgmtdpb.ListNodesRsp { return &mgmtdpb.ListNodesRsp{Nodes: st.nodeList()} }))
}
func (h *handlers) ListTargets(context.Context, *mgmtdpb.ListTargetsReq) (*mgmtdpb.ListTargetsRsp, error) {
	return wire(readPrimary(h.s, func(st *state) *mgmtdpb.ListTargetsRsp { return &mgmtdpb.ListTargetsRsp{Targets: st.targetList()} }))
}
func (h *handlers) ListChains(context.Context, *mgmtdpb.ListChainsReq) (*mgmtdpb.ListChainsRsp, error) {
	return wire(readPrimary(h.s, func(st *state) *mgmtdpb.ListChainsRsp { return &mgmtdpb.ListChainsRsp{Chains: st.chainList()} }))
}
func (h *handlers) ListTables(context.Context, *mgmtdpb.ListTablesReq) (*mgmtdpb.ListTablesRsp, error) {
	return wire(readPrimary(h.s, func(st *state) *mgmtdpb.ListTablesRsp { return &mgmtdpb.ListTablesRsp{Tables: st.tableList()} }))
}
func (h *handlers) SetNodeDisabled(ctx context.Context, r *mgmtdpb.SetNodeDisabledReq) (*mgmtdpb.SetNodeDisabledRsp, error) {
	return wire(h.s.setNodeDisabled(ctx, r))
}
func (h *handlers) OfflineTarget(ctx context.Context, r *mgmtdpb.OfflineTargetReq) (*mgmtdpb.OfflineTargetRsp, error) {
	return wire(h.s.offlineTarget(ctx, r))
}
func (h *handlers) GetConfig(context.Context, *mgmtdpb.GetConfigReq) (*mgmtdpb.GetConfigRsp, error) {
	return wire(readPrimary(h.s, func(st *state) *mgmtdpb.GetConfigRsp {
		return &mgmtdpb.GetConfigRsp{Config: proto.Clone(st.config).(*mgmtdpb.ClusterConfig)}
	}))
}
func (h *handlers) SetConfig(ctx context.Context, r *mgmtdpb.SetConfigReq) (*mgmtdpb.SetConfigRsp, error) {
	return wire(h.s.setConfig(ctx, r))
}

// readPrimary runs fn on the primary state, or returns NotPrimary.
func readPrimary[T any](s *Server, fn func(*state) T) (T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.primaryLocked()
	if st == nil {
		var zero T
		return zero, s.notPrimaryLocked()
	}
	return fn(st), nil
}

func validLocal(l mgmtdpb.LocalState) bool {
	return l == statemachine.UpToDate || l == statemachine.Online || l == statemachine.LocalOffline
}

func checkReports(role mgmtdpb.NodeRole, reports []*mgmtdpb.TargetReport) error {
	if role != mgmtdpb.NodeRole_ROLE_STORAGE && len(reports) > 0 {
		return errcode.New(errcode.InvalidArgument, "a %s node cannot own targets (only storage nodes do)", RoleName(role))
	}
	seen := map[uint64]bool{}
	for _, r := range reports {
		switch {
		case r.TargetId == 0:
			return errcode.New(errcode.InvalidArgument, "target id 0 is reserved")
		case seen[r.TargetId]:
			return errcode.New(errcode.InvalidArgument, "target %d reported twice", r.TargetId)
		case !validLocal(r.LocalState):
			return errcode.New(errcode.InvalidArgument, "target %d: local state %v is not up-to-date, online or offline", r.TargetId, r.LocalState)
		}
		seen[r.TargetId] = true
	}
	return nil
}

func (s *Server) registerNode(ctx context.Context, r *mgmtdpb.RegisterNodeReq) (*mgmtdpb.RegisterNodeRsp, error) {
	switch {
	case r.Role == mgmtdpb.NodeRole_ROLE_UNSPECIFIED:
		return nil, errcode.New(errcode.InvalidArgument, "register: node role is missing")
	case r.Address == "" && r.Role != mgmtdpb.NodeRole_ROLE_CLIENT:
		return nil, errcode.New(errcode.InvalidArgument, "register: node address is missing")
	case r.BootId == 0:
		return nil, errcode.New(errcode.InvalidArgument, "register: boot id is missing (pick a random non-zero id per process start)")
	}
	if err := checkReports(r.Role, r.Targets); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.primaryLocked()
	if st == nil {
		return nil, s.notPrimaryLocked()
	}
	ch := &change{}
	id := r.NodeId
	if id == 0 {
		id = uint32(st.nextNode)
		for st.nodes[id] != nil {
			id++
		}
	}
	if uint64(id) >= st.nextNode {
		ch.nextNode = uint64(id) + 1
	}
	old := st.nodes[id]
	if old != nil {
		if old.Role != r.Role {
			return nil, errcode.New(errcode.InvalidArgument, "node %d is registered as %s, not %s", id, RoleName(old.Role), RoleName(r.Role))
		}
		if old.BootId != r.BootId {
			// 3FS: a restarted storage service rejoins only once all its
			// targets are offline, so that each goes through recovery.
			var notOffline []string
			for _, tid := range old.TargetIds {
				if t := st.targets[tid]; t != nil {
					if ps := st.publicState(t); ps != mgmtdpb.PublicState_PUBLIC_UNSPECIFIED && ps != statemachine.Offline && ps != statemachine.LastSrv {
						notOffline = append(notOffline, fmt.Sprintf("%d (%s)", tid, PublicStateName(ps)))
					}
				}
			}
			if len(notOffline) > 0 {
				return nil, errcode.New(errcode.Busy,
					"node %d restarted: registration waits until its targets %s are marked offline (within about %v of its last heartbeat)",
					id, strings.Join(notOffline, ", "), st.failureTimeout())
			}
		}
	}
	node := &mgmtdpb.Node{
		NodeId: id, Role: r.Role, Address: r.Address, DataAddress: r.DataAddress, Hostname: r.Hostname,
		Status: mgmtdpb.NodeStatus_NODE_ACTIVE, BootId: r.BootId, MetricsAddress: r.MetricsAddress,
	}
	known := map[uint64]bool{}
	if old != nil {
		node.TargetIds = append(node.TargetIds, old.TargetIds...)
		if old.Status == mgmtdpb.NodeStatus_NODE_DISABLED {
			node.Status = old.Status
		}
		for _, tid := range old.TargetIds {
			known[tid] = true
		}
	}
	for _, rep := range r.Targets {
		t := st.targets[rep.TargetId]
		if t != nil && t.NodeId != id {
			return nil, errcode.New(errcode.AlreadyExists, "target %d belongs to node %d, not node %d", rep.TargetId, t.NodeId, id)
		}
		if t == nil {
			ch.targets = append(ch.targets, &mgmtdpb.Target{TargetId: rep.TargetId, NodeId: id})
		}
		if !known[rep.TargetId] {
			node.TargetIds = append(node.TargetIds, rep.TargetId)
			known[rep.TargetId] = true
		}
	}
	sort.Slice(node.TargetIds, func(i, j int) bool { return node.TargetIds[i] < node.TargetIds[j] })
	if old == nil || !proto.Equal(durableNode(old), node) {
		ch.nodes = append(ch.nodes, node)
	}
	ch.bumpRouting = len(ch.nodes) > 0 || len(ch.targets) > 0
	if err := s.commitLocked(ctx, st, ch); err != nil {
		return nil, err
	}
	now := s.opts.Clock()
	ln := st.liveNodes[id]
	if ln == nil {
		ln = &liveNode{}
		st.liveNodes[id] = ln
	}
	ln.deadline, ln.lastHeartbeat = now.Add(st.failureTimeout()), now
	s.recordReportsLocked(st, r.Targets)
	s.kickScan()
	s.log.Info("node registered", "node", id, "role", RoleName(r.Role), "addr", r.Address, "targets", len(node.TargetIds))
	return &mgmtdpb.RegisterNodeRsp{
		NodeId: id, HeartbeatIntervalMs: st.config.HeartbeatIntervalMs,
		NodeFailureTimeoutMs: st.config.NodeFailureTimeoutMs, RoutingVersion: st.version,
	}, nil
}

// recordReportsLocked stores reported local states; it says whether any
// changed (a reason to scan chains now).
func (s *Server) recordReportsLocked(st *state, reports []*mgmtdpb.TargetReport) bool {
	changed := false
	for _, rep := range reports {
		lt := st.liveTarget(rep.TargetId)
		if lt.local != rep.LocalState {
			changed = true
		}
		lt.local, lt.free, lt.capacity, lt.chainVersion = rep.LocalState, rep.FreeBytes, rep.CapacityBytes, rep.ChainVersion
	}
	return changed
}

func (s *Server) heartbeat(ctx context.Context, r *mgmtdpb.HeartbeatReq) (*mgmtdpb.HeartbeatRsp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.primaryLocked()
	if st == nil {
		return nil, s.notPrimaryLocked()
	}
	n := st.nodes[r.NodeId]
	if n == nil {
		return nil, errcode.New(errcode.NotFound, "node %d is not registered: register first", r.NodeId)
	}
	if n.BootId != r.BootId {
		return nil, errcode.New(errcode.NotFound, "node %d is registered with another boot id (%x, not %x): register again", r.NodeId, n.BootId, r.BootId)
	}
	if err := checkReports(n.Role, r.Targets); err != nil {
		return nil, err
	}
	for _, rep := range r.Targets {
		if t := st.targets[rep.TargetId]; t == nil || t.NodeId != n.NodeId {
			return nil, errcode.New(errcode.NotFound, "target %d is not registered for node %d: register again", rep.TargetId, n.NodeId)
		}
	}
	if (r.Address != "" && r.Address != n.Address) || (r.DataAddress != "" && r.DataAddress != n.DataAddress) ||
		(r.MetricsAddress != "" && r.MetricsAddress != n.MetricsAddress) {
		c := proto.Clone(n).(*mgmtdpb.Node)
		if r.Address != "" {
			c.Address = r.Address
		}
		if r.DataAddress != "" {
			c.DataAddress = r.DataAddress
		}
		if r.MetricsAddress != "" {
			c.MetricsAddress = r.MetricsAddress
		}
		if err := s.commitLocked(ctx, st, &change{nodes: []*mgmtdpb.Node{c}, bumpRouting: true}); err != nil {
			return nil, err
		}
		n = c
	}
	now := s.opts.Clock()
	ln := st.liveNodes[n.NodeId]
	ln.deadline, ln.lastHeartbeat = now.Add(st.failureTimeout()), now
	if s.recordReportsLocked(st, r.Targets) || n.Status == mgmtdpb.NodeStatus_NODE_FAILED {
		s.kickScan()
	}
	s.metrics.heartbeats.Inc()
	return &mgmtdpb.HeartbeatRsp{
		RoutingVersion: st.version, HeartbeatIntervalMs: st.config.HeartbeatIntervalMs,
		NodeFailureTimeoutMs: st.config.NodeFailureTimeoutMs, Status: n.Status,
	}, nil
}

func (s *Server) getRoutingInfo(r *mgmtdpb.GetRoutingInfoReq) (*mgmtdpb.GetRoutingInfoRsp, error) {
	return readPrimary(s, func(st *state) *mgmtdpb.GetRoutingInfoRsp {
		if r.KnownVersion == st.version {
			return &mgmtdpb.GetRoutingInfoRsp{Unchanged: true}
		}
		return &mgmtdpb.GetRoutingInfoRsp{Info: st.routingInfo(s.addr, s.metricsAddr)}
	})
}

func (s *Server) watchRouting(r *mgmtdpb.WatchRoutingReq, stream mgmtdpb.Mgmtd_WatchRoutingServer) error {
	known := r.KnownVersion
	for {
		s.mu.Lock()
		st := s.primaryLocked()
		if st == nil {
			err := s.notPrimaryLocked()
			s.mu.Unlock()
			return err
		}
		var info *mgmtdpb.RoutingInfo
		if st.version != known {
			info = st.routingInfo(s.addr, s.metricsAddr)
		}
		changed, done := st.changed, st.done
		s.mu.Unlock()
		if info != nil {
			if err := stream.Send(info); err != nil {
				return err
			}
			known = info.Version
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-s.stop:
			return errcode.New(errcode.Unavailable, "mgmtd %s is shutting down", s.addr)
		case <-done:
			// Loop once more: the check at the top answers NotPrimary.
		case <-changed:
		}
	}
}

// chainTableTargetsLocked lists the targets a CreateChainTable request
// places (the named ones, or every target not yet in a chain), sorted by
// id, with the primary state it read them from.
func (s *Server) chainTableTargetsLocked(r *mgmtdpb.CreateChainTableReq) ([]placement.Target, *state, error) {
	st := s.primaryLocked()
	if st == nil {
		return nil, nil, s.notPrimaryLocked()
	}
	ids := slices.Clone(r.TargetIds)
	if len(ids) == 0 {
		for id, t := range st.targets {
			if t.ChainId == 0 {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return nil, nil, errcode.New(errcode.InvalidArgument, "create chain table: every registered target is already in a chain (or none is registered)")
		}
	}
	slices.Sort(ids)
	var pts []placement.Target
	for _, id := range ids {
		t := st.targets[id]
		if t == nil {
			return nil, nil, errcode.New(errcode.NotFound, "create chain table: target %d is not registered", id)
		}
		if t.ChainId != 0 {
			return nil, nil, errcode.New(errcode.AlreadyExists, "create chain table: target %d is already in chain %d", id, t.ChainId)
		}
		pts = append(pts, placement.Target{ID: id, Node: t.NodeId})
	}
	return pts, st, nil
}

func (s *Server) createChainTable(ctx context.Context, r *mgmtdpb.CreateChainTableReq) (*mgmtdpb.CreateChainTableRsp, error) {
	if r.ReplicationFactor == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "create chain table: replication factor must be at least 1")
	}
	// Placement takes about a second at 500 nodes x 20 targets, so it runs
	// without the lock: heartbeats and lease scans must not wait for it.
	// The targets are listed again under the lock; if they changed
	// meanwhile (a node registered, another table took some), place again.
	s.mu.Lock()
	pts, _, err := s.chainTableTargetsLocked(r)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	const attempts = 3
	for attempt := 1; ; attempt++ {
		groups, err := placement.Place(pts, int(r.ReplicationFactor))
		if err != nil {
			return nil, errcode.New(errcode.InvalidArgument, "create chain table: %v", err)
		}
		s.mu.Lock()
		now, st, err := s.chainTableTargetsLocked(r)
		if err == nil && slices.Equal(now, pts) {
			defer s.mu.Unlock()
			return s.commitChainTableLocked(ctx, st, r, groups)
		}
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if attempt == attempts {
			return nil, errcode.New(errcode.Busy, "create chain table: targets kept changing while placing (%d tries); retry", attempts)
		}
		pts = now
	}
}

// commitChainTableLocked stores a new table whose chains are groups
// (target ids, head first).
func (s *Server) commitChainTableLocked(ctx context.Context, st *state, r *mgmtdpb.CreateChainTableReq, groups [][]uint64) (*mgmtdpb.CreateChainTableRsp, error) {
	tableID := r.TableId
	if tableID == 0 {
		tableID = uint32(st.nextTable)
		for st.tables[tableID] != nil {
			tableID++
		}
	}
	if st.tables[tableID] != nil {
		return nil, errcode.New(errcode.AlreadyExists, "create chain table: table %d exists", tableID)
	}
	ch := &change{bumpRouting: true}
	table := &mgmtdpb.ChainTable{TableId: tableID, Version: 1, ReplicationFactor: r.ReplicationFactor}
	chainID := uint32(st.nextChain)
	for _, g := range groups {
		for st.chains[chainID] != nil {
			chainID++
		}
		// A new chain holds no data yet, so all its targets start serving;
		// the next scan demotes any whose service is down.
		c := &mgmtdpb.Chain{ChainId: chainID, Version: 1}
		for _, tid := range g {
			c.Targets = append(c.Targets, &mgmtdpb.ChainTarget{TargetId: tid, PublicState: statemachine.Serving})
			t := durableTarget(st.targets[tid])
			t.ChainId = chainID
			ch.targets = append(ch.targets, t)
		}
		ch.chains = append(ch.chains, c)
		table.ChainIds = append(table.ChainIds, chainID)
		chainID++
	}
	ch.tables = []*mgmtdpb.ChainTable{table}
	ch.nextChain = uint64(chainID)
	if uint64(tableID) >= st.nextTable {
		ch.nextTable = uint64(tableID) + 1
	}
	if err := s.commitLocked(ctx, st, ch); err != nil {
		return nil, err
	}
	s.kickScan()
	s.log.Info("chain table created", "table", tableID, "chains", len(groups), "replicas", r.ReplicationFactor)
	rsp := &mgmtdpb.CreateChainTableRsp{Table: proto.Clone(table).(*mgmtdpb.ChainTable)}
	for _, c := range ch.chains {
		rsp.Chains = append(rsp.Chains, cloneChain(c))
	}
	return rsp, nil
}

func (s *Server) setNodeDisabled(ctx context.Context, r *mgmtdpb.SetNodeDisabledReq) (*mgmtdpb.SetNodeDisabledRsp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.primaryLocked()
	if st == nil {
		return nil, s.notPrimaryLocked()
	}
	n := st.nodes[r.NodeId]
	if n == nil {
		return nil, errcode.New(errcode.NotFound, "node %d is not registered", r.NodeId)
	}
	c := proto.Clone(n).(*mgmtdpb.Node)
	if r.Disabled {
		c.Status = mgmtdpb.NodeStatus_NODE_DISABLED
	} else {
		// Enabled: active or failed as its lease says.
		c.Status = mgmtdpb.NodeStatus_NODE_FAILED
		c.Status = nodeStatus(c, st.liveNodes[c.NodeId], s.opts.Clock())
	}
	if c.Status != n.Status {
		if err := s.commitLocked(ctx, st, &change{nodes: []*mgmtdpb.Node{c}, bumpRouting: true}); err != nil {
			return nil, err
		}
		s.log.Info("node status set by admin", "node", c.NodeId, "status", NodeStatusName(c.Status))
	}
	s.kickScan()
	return &mgmtdpb.SetNodeDisabledRsp{Node: c}, nil
}

func (s *Server) offlineTarget(ctx context.Context, r *mgmtdpb.OfflineTargetReq) (*mgmtdpb.OfflineTargetRsp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.primaryLocked()
	if st == nil {
		return nil, s.notPrimaryLocked()
	}
	t := st.targets[r.TargetId]
	if t == nil {
		return nil, errcode.New(errcode.NotFound, "target %d is not registered", r.TargetId)
	}
	c := durableTarget(t)
	c.AdminOffline = !r.Undo
	if c.AdminOffline != t.AdminOffline {
		if err := s.commitLocked(ctx, st, &change{targets: []*mgmtdpb.Target{c}, bumpRouting: true}); err != nil {
			return nil, err
		}
		s.log.Info("target admin offline mark set", "target", c.TargetId, "offline", c.AdminOffline)
	}
	s.kickScan()
	return &mgmtdpb.OfflineTargetRsp{Target: c}, nil
}

// Config keys understood by SetConfig (besides namespaced extras).
const (
	ConfigHeartbeatInterval  = "heartbeat_interval_ms"
	ConfigNodeFailureTimeout = "node_failure_timeout_ms"
)

func (s *Server) setConfig(ctx context.Context, r *mgmtdpb.SetConfigReq) (*mgmtdpb.SetConfigRsp, error) {
	if len(r.Set) == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "set config: nothing to set")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.primaryLocked()
	if st == nil {
		return nil, s.notPrimaryLocked()
	}
	c := proto.Clone(st.config).(*mgmtdpb.ClusterConfig)
	keys := make([]string, 0, len(r.Set))
	for k := range r.Set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := r.Set[k]
		switch k {
		case ConfigHeartbeatInterval, ConfigNodeFailureTimeout:
			ms, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, errcode.New(errcode.InvalidArgument, "set config: %s=%q is not a number of milliseconds", k, v)
			}
			if k == ConfigHeartbeatInterval {
				c.HeartbeatIntervalMs = uint32(ms)
			} else {
				c.NodeFailureTimeoutMs = uint32(ms)
			}
		default:
			if !strings.Contains(k, ".") || strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") {
				return nil, errcode.New(errcode.InvalidArgument,
					"set config: unknown key %q (want %s, %s or a namespaced key like meta.name)", k, ConfigHeartbeatInterval, ConfigNodeFailureTimeout)
			}
			if c.Extra == nil {
				c.Extra = map[string]string{}
			}
			if v == "" {
				delete(c.Extra, k)
			} else {
				c.Extra[k] = v
			}
		}
	}
	ms := func(v uint32) time.Duration { return time.Duration(v) * time.Millisecond }
	if err := validateTimes(ms(c.HeartbeatIntervalMs), ms(c.NodeFailureTimeoutMs)); err != nil {
		return nil, errcode.New(errcode.InvalidArgument, "set config: %v", err)
	}
	if err := s.commitLocked(ctx, st, &change{config: c}); err != nil {
		return nil, err
	}
	s.log.Info("cluster config changed", "heartbeat_ms", c.HeartbeatIntervalMs, "failure_timeout_ms", c.NodeFailureTimeoutMs)
	return &mgmtdpb.SetConfigRsp{Config: proto.Clone(c).(*mgmtdpb.ClusterConfig)}, nil
}
