// Package service is the EmberFS storage service: it owns a node's
// targets (one chunk engine each), registers and heartbeats with mgmtd,
// follows routing, and replicates chunk updates along chains with CRAQ
// over the data transport. Control calls (dump chunk metadata for
// recovery, sync-done, repair, list targets) are gRPC. docs/storage.md
// describes the protocol, recovery and repair.
package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/proto/storagepb"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvstore"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

const targetIDFile = "target-id"

// target is one chunk engine and what the service knows about its role.
type target struct {
	id   uint64
	path string
	eng  *chunkengine.Engine
	kv   *kvstore.Store // the KVCache side of the target

	mu sync.Mutex
	// recovered: the target holds all committed data of its chain (got
	// sync-done, or routing showed it serving after this process
	// registered). Reported to mgmtd as up-to-date, else online.
	recovered bool
	// recoveredVer is the chain version at which recovered was last
	// established: the version a sync-done named, or the last one that
	// showed the target serving. A sync-done vouches only for its own
	// chain version: the routing watch delivers the latest state and can
	// skip versions, so a process may never see the versions in which its
	// target was offline (and writes went around it) and next see it
	// syncing again under a later version. Such a flag is stale; see
	// followRouting and reports.
	recoveredVer uint64

	// updates counts the updates running here by the chain version they
	// were admitted under (a sync waits out the older ones).
	updates inflight
}

func (t *target) isRecovered() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.recovered
}

// recoveredAt says whether the target is recovered and at which chain version.
func (t *target) recoveredAt() (bool, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.recovered, t.recoveredVer
}

// markRecovered marks the target recovered at chainVer; it says whether
// the target was not recovered before.
func (t *target) markRecovered(chainVer uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	changed := !t.recovered
	t.recovered, t.recoveredVer = true, chainVer
	return changed
}

// clearRecovered marks the target as needing recovery before it serves;
// it says whether it was recovered.
func (t *target) clearRecovered() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	changed := t.recovered
	t.recovered, t.recoveredVer = false, 0
	return changed
}

// Service is a running storage service.
type Service struct {
	cfg Config
	log *slog.Logger

	targets map[uint64]*target
	order   []*target

	data    transport.DataServer
	grpc    *grpc.Server
	grpcLis net.Listener
	addr    string
	dataAdr string
	metrics *metrics
	httpSrv *http.Server

	tc    transport.Caller
	conn  *mgmtdclient.Conn
	cache *mgmtdclient.Cache
	agent *mgmtdclient.Agent

	locks  chunkLocks
	dedupe *dedupeTable

	// regVersion is the routing version mgmtd reported when this process
	// registered; routing older than it may still show targets serving
	// from before a restart, so it never marks a target recovered.
	regMu      sync.Mutex
	regVersion uint64
	registered bool

	syncMu  sync.Mutex
	syncing map[uint64]bool // own target id -> a sync of its successor runs

	ctlMu    sync.Mutex
	ctlConns map[string]*grpc.ClientConn

	repairKick chan struct{}

	// openRegions / peakRegions: data files batch reads hold open now and
	// at most (the bound is maxOpenRegionsPerBatch per frame).
	openRegions, peakRegions atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// admittedHook, set only by tests (export_test.go), runs in runUpdate
	// once an update is admitted under its chain version.
	admittedHook atomic.Pointer[func(target uint64, chunk chunkengine.ChunkID)]
}

// Start opens the targets, starts the data and control servers and joins
// the cluster (registration completes in the background; WaitRegistered
// waits for it).
func Start(cfg Config, logger *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg: cfg, log: logger.With("component", "storage", "node", cfg.NodeID),
		targets: map[uint64]*target{}, dedupe: newDedupeTable(cfg.DedupeMaxEntries), syncing: map[uint64]bool{},
		ctlConns: map[string]*grpc.ClientConn{}, repairKick: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel,
	}
	s.locks.init()
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	for i, dir := range cfg.Targets {
		t, err := s.openTarget(dir, uint64(cfg.NodeID)*100+uint64(i))
		if err != nil {
			return nil, err
		}
		if _, dup := s.targets[t.id]; dup {
			t.eng.Close()
			return nil, fmt.Errorf("storage: target id %d of %s used twice", t.id, dir)
		}
		s.targets[t.id] = t
		s.order = append(s.order, t)
		// Write outcomes persisted with their updates: a client retrying
		// a write this process applied before it restarted is answered,
		// not applied again (issue 13, hole 6).
		s.dedupe.merge(outcomeRecords(t.eng.WriteOutcomes()))
	}
	s.metrics = newMetrics(s)

	tf := cfg.Transport
	if tf == nil {
		tf = transport.TCP{}
	}
	var err error
	s.data, err = tf.Listen(transport.ServerConfig{Addr: cfg.DataListen, Token: cfg.Token, PeerToken: cfg.PeerToken, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("storage: data listen on %s: %w", cfg.DataListen, err)
	}
	s.registerHandlers(s.data)
	s.grpcLis, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("storage: listen on %s: %w", cfg.Listen, err)
	}
	s.grpc = grpc.NewServer(rpcauth.ServerOptions(cfg.Token)...)
	storagepb.RegisterStorageServer(s.grpc, &controlServer{s: s})
	go func() { _ = s.grpc.Serve(s.grpcLis) }()
	s.addr = cmp.Or(cfg.AdvertiseAddress, s.grpcLis.Addr().String())
	s.dataAdr = cmp.Or(cfg.DataAdvertiseAddress, s.data.Addr())

	metricsAddr := ""
	if cfg.MetricsListen != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return nil, fmt.Errorf("storage: metrics listen on %s: %w", cfg.MetricsListen, err)
		}
		metricsAddr = mgmtdclient.AdvertisedMetricsAddress(mlis.Addr().String(), s.addr)
		mux := http.NewServeMux()
		mux.Handle("/metrics", s.metrics.handler())
		s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = s.httpSrv.Serve(mlis) }()
		s.log.Info("metrics", "url", "http://"+mlis.Addr().String()+"/metrics")
	}

	// Chain traffic (forwards, syncs) says it comes from this storage
	// node, proved with the peer token: receivers take it only from
	// storage connections (admitPeer), and the handshake only from a
	// caller that holds the peer token and claims its own node id.
	s.tc = tf.NewCaller(transport.ClientConfig{Token: cfg.Token, Logger: logger,
		Peer: transport.Peer{Role: transport.PeerStorage, Node: cfg.NodeID}, PeerToken: cfg.PeerToken})
	s.conn, err = mgmtdclient.Dial(cfg.Mgmtd, cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	s.cache = mgmtdclient.NewCache(s.conn)
	s.cache.Start()
	host, _ := os.Hostname()
	s.agent, err = mgmtdclient.Start(mgmtdclient.Options{
		Conn: s.conn, Role: mgmtdpb.NodeRole_ROLE_STORAGE, NodeID: cfg.NodeID,
		Address: s.addr, DataAddress: s.dataAdr, Hostname: host, Targets: s.reports, Logger: logger,
		MetricsAddress: metricsAddr,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	s.goLoop(s.registrationLoop)
	s.goLoop(s.routingLoop)
	s.goLoop(s.repairLoop)
	s.goLoop(s.dedupeGCLoop)
	s.goLoop(s.kvReclaimLoop)
	ok = true
	s.log.Info("storage service started", "control", s.addr, "data", s.dataAdr, "targets", len(s.order))
	return s, nil
}

func (s *Service) goLoop(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// openTarget opens a target directory; its id is fixed at the first open.
func (s *Service) openTarget(dir string, defaultID uint64) (*target, error) {
	eng, err := chunkengine.Open(dir, chunkengine.Options{
		NoSync: s.cfg.NoSync, VerifyInterval: s.cfg.VerifyInterval.Duration,
		Logger: s.log, MaxWriteOutcomes: s.cfg.DedupeMaxEntries, BufferedIO: s.cfg.BufferedIO,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: open target %s: %w", dir, err)
	}
	idPath := filepath.Join(dir, targetIDFile)
	id := defaultID
	if b, err := os.ReadFile(idPath); err == nil {
		id, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			eng.Close()
			return nil, fmt.Errorf("storage: target %s: bad %s file: %v", dir, targetIDFile, err)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(idPath, []byte(strconv.FormatUint(id, 10)+"\n"), 0o644); err != nil {
			eng.Close()
			return nil, fmt.Errorf("storage: target %s: write %s: %v", dir, targetIDFile, err)
		}
	} else {
		eng.Close()
		return nil, fmt.Errorf("storage: target %s: read %s: %v", dir, targetIDFile, err)
	}
	for _, d := range eng.MetaDamage() {
		// The engine recovered around damaged metadata records (nothing
		// deleted, affected chunks marked corrupt); the target is resynced
		// from its chain like any restarted target before it serves.
		s.log.Error("target metadata was damaged; recovered the rest, it resyncs from its chain", "target", id, "dir", dir, "damage", d)
	}
	kv := kvstore.Open(eng, kvstore.Options{Now: s.cfg.KVNow, InlineMax: s.cfg.KVInlineMax, Logger: s.log.With("target", id)})
	return &target{id: id, path: dir, eng: eng, kv: kv}, nil
}

// Close stops the service. Nothing is handed over: to the cluster this is
// the same as a crash (mgmtd notices the missing heartbeats).
func (s *Service) Close() {
	s.cancel()
	if s.agent != nil {
		s.agent.Stop()
	}
	if s.data != nil {
		s.data.Close()
	}
	if s.grpc != nil {
		s.grpc.Stop()
	}
	if s.httpSrv != nil {
		s.httpSrv.Close()
	}
	if s.cache != nil {
		s.cache.Close()
	}
	s.wg.Wait()
	if s.tc != nil {
		s.tc.Close()
	}
	if s.conn != nil {
		s.conn.Close()
	}
	s.ctlMu.Lock()
	for _, c := range s.ctlConns {
		c.Close()
	}
	s.ctlConns = map[string]*grpc.ClientConn{}
	s.ctlMu.Unlock()
	for _, t := range s.order {
		t.eng.Close()
	}
}

// Addr is the gRPC control address; DataAddr the data transport address.
func (s *Service) Addr() string     { return s.addr }
func (s *Service) DataAddr() string { return s.dataAdr }

// TargetIDs lists the service's target ids in configuration order.
func (s *Service) TargetIDs() []uint64 {
	out := make([]uint64, len(s.order))
	for i, t := range s.order {
		out[i] = t.id
	}
	return out
}

// Engine returns a target's chunk engine (tests and tools).
func (s *Service) Engine(targetID uint64) *chunkengine.Engine {
	if t := s.targets[targetID]; t != nil {
		return t.eng
	}
	return nil
}

// KVStore returns a target's KVCache side (tests and tools).
func (s *Service) KVStore(targetID uint64) *kvstore.Store {
	if t := s.targets[targetID]; t != nil {
		return t.kv
	}
	return nil
}

// WaitRegistered blocks until mgmtd accepted the registration.
func (s *Service) WaitRegistered(ctx context.Context) error { return s.agent.WaitRegistered(ctx) }

// Routing is the service's current routing view (nil before the first).
func (s *Service) Routing() *routing.Routing { return s.cache.Current() }

func (s *Service) target(id uint64) (*target, error) {
	t := s.targets[id]
	if t == nil {
		// Not NotFound: readers take NotFound as the chunk's answer (a
		// hole). A target missing here means the sender's routing is wrong.
		return nil, errcode.New(errcode.StaleVersion, "target %d is not on storage node %d", id, s.cfg.NodeID)
	}
	return t, nil
}

func (s *Service) registrationLoop() {
	if err := s.agent.WaitRegistered(s.ctx); err != nil {
		return
	}
	s.regMu.Lock()
	s.regVersion, s.registered = s.agent.RoutingVersion(), true
	s.regMu.Unlock()
	s.followRouting(s.cache.Current())
}

// reports is the heartbeat's view of the targets.
func (s *Service) reports() []*mgmtdpb.TargetReport {
	r := s.cache.Current()
	out := make([]*mgmtdpb.TargetReport, 0, len(s.order))
	for _, t := range s.order {
		rep := &mgmtdpb.TargetReport{TargetId: t.id, LocalState: mgmtdpb.LocalState_LOCAL_ONLINE}
		recovered, at := t.recoveredAt()
		if si, err := t.eng.SpaceInfo(); err == nil {
			rep.FreeBytes, rep.CapacityBytes = si.Free, si.Capacity
		}
		if r != nil {
			if tt, ok := r.Target(t.id); ok && tt.ChainId != 0 {
				rep.ChainId = tt.ChainId
				rep.ChainVersion = r.ChainVersion(tt.ChainId)
				// mgmtd promotes a syncing target only on an up-to-date
				// report at its current chain version.
				recovered = vouchesUpToDate(recovered, at, r.TargetState(t.id), rep.ChainVersion)
			}
		}
		if recovered {
			rep.LocalState = mgmtdpb.LocalState_LOCAL_UPTODATE
		}
		out = append(out, rep)
	}
	return out
}

// routingLoop reacts to every routing version: recovered flags, syncs to
// start. It also re-checks periodically (a failed sync is retried).
func (s *Service) routingLoop() {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ch := s.cache.Changed()
		s.followRouting(s.cache.Current())
		select {
		case <-s.ctx.Done():
			return
		case <-ch:
		case <-tick.C:
		}
	}
}

func (s *Service) followRouting(r *routing.Routing) {
	if r == nil {
		return
	}
	s.regMu.Lock()
	regVer, registered := s.regVersion, s.registered
	s.regMu.Unlock()
	for _, t := range s.order {
		tt, ok := r.Target(t.id)
		if !ok || tt.ChainId == 0 {
			continue
		}
		chainVer := r.ChainVersion(tt.ChainId)
		switch st := r.TargetState(t.id); st {
		case mgmtdpb.PublicState_PUBLIC_SERVING:
			if registered && r.Version() >= regVer && t.markRecovered(chainVer) {
				s.log.Info("target serving", "target", t.id, "chain", tt.ChainId, "routing", r.Version())
			}
			// Only a recovered target may be a sync source. Routing older
			// than our registration (a restart inside mgmtd's failure
			// timeout) still shows our target serving, but this process's
			// copy may lack what the chain acknowledged (a version that
			// was pending here and committed downstream): syncing from it
			// would roll the successor back, and its sync-done would make
			// that stale copy serve.
			if succ, sst, ok := r.Successor(tt.ChainId, t.id); ok && sst == mgmtdpb.PublicState_PUBLIC_SYNCING && t.isRecovered() {
				s.startSync(t, tt.ChainId, succ)
			}
		case mgmtdpb.PublicState_PUBLIC_SYNCING:
			// Recovered at another chain version (a sync-done for an
			// earlier syncing period, or serving before): this process
			// cannot know it stayed on the write path since, as the
			// versions in between may have gone unseen. Sync again.
			if ok, at := t.recoveredAt(); ok && !vouchesUpToDate(ok, at, st, chainVer) {
				t.clearRecovered()
				s.log.Warn("target syncing under a newer chain version than it was recovered at; it must be synced again",
					"target", t.id, "chain", tt.ChainId, "recovered_at", at, "chain_version", chainVer, "routing", r.Version())
			}
		default:
			// Waiting, offline or lastsrv while we run: we were cut off
			// (or are returning); our copy needs recovery before serving.
			if t.clearRecovered() {
				s.log.Warn("target left the chain; it must be recovered before serving again",
					"target", t.id, "chain", tt.ChainId, "state", st, "routing", r.Version())
			}
		}
	}
}

// checkChain validates a request's chain version against our routing. A
// request with a newer version than ours waits briefly for our routing to
// catch up; an older one is refused with StaleVersion.
func (s *Service) checkChain(ctx context.Context, chain uint32, ver uint64) (*routing.Routing, error) {
	r := s.cache.Current()
	if r == nil || r.ChainVersion(chain) < ver {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		go func() {
			if err := s.cache.Refresh(wctx); err != nil && wctx.Err() == nil {
				s.log.Debug("routing refresh failed", "err", err)
			}
		}()
		r, _ = s.cache.WaitFor(wctx, func(r *routing.Routing) bool { return r.ChainVersion(chain) >= ver })
		cancel()
	}
	if r == nil {
		return nil, errcode.New(errcode.Unavailable, "storage node %d has no routing info yet", s.cfg.NodeID)
	}
	c, ok := r.Chain(chain)
	if !ok {
		return nil, errcode.New(errcode.StaleVersion, "chain %d unknown at routing version %d", chain, r.Version())
	}
	switch {
	case c.Version > ver:
		return nil, errcode.New(errcode.StaleVersion, "chain %d: request has chain version %d, current is %d", chain, ver, c.Version)
	case c.Version < ver:
		return nil, errcode.New(errcode.Unavailable, "chain %d: request has chain version %d, storage node %d only knows %d", chain, ver, s.cfg.NodeID, c.Version)
	}
	return r, nil
}

// leaseOK refuses service while our mgmtd lease is not valid: mgmtd may
// already have moved our targets out of their chains.
func (s *Service) leaseOK() error {
	if !s.agent.LeaseValid() {
		return errcode.New(errcode.Unavailable, "storage node %d has no valid lease with mgmtd", s.cfg.NodeID)
	}
	return nil
}

func (s *Service) registerHandlers(r transport.Registrar) {
	r.Handle(wire.OpWrite, s.instrument(wire.OpWrite, s.handleWrite))
	r.Handle(wire.OpForward, s.instrument(wire.OpForward, s.handleForward))
	r.Handle(wire.OpRead, s.instrument(wire.OpRead, s.handleRead))
	r.Handle(wire.OpReadBatch, s.instrument(wire.OpReadBatch, transport.HandleBatch(s.handleReadBatch)))
	r.Handle(wire.OpQueryLast, s.instrument(wire.OpQueryLast, s.handleQueryLast))
	r.Handle(wire.OpRemoveInode, s.instrument(wire.OpRemoveInode, s.handleRemoveInode))
	r.Handle(wire.OpSync, s.instrument(wire.OpSync, s.handleSync))
	r.Handle(wire.OpSyncDedupe, s.instrument(wire.OpSyncDedupe, s.handleSyncDedupe))
	r.Handle(wire.OpKVGet, s.instrument(wire.OpKVGet, s.handleKVGet))
	r.Handle(wire.OpKVGetBatch, s.instrument(wire.OpKVGetBatch, transport.HandleBatch(s.handleKVGetBatch)))
	r.Handle(wire.OpKVExists, s.instrument(wire.OpKVExists, transport.HandleBatch(s.handleKVExists)))
	r.Handle(wire.OpKVStats, s.instrument(wire.OpKVStats, s.handleKVStats))
	r.Handle(wire.OpKVDrop, s.instrument(wire.OpKVDrop, s.handleKVDrop))
}

// control returns a gRPC client to another storage service.
func (s *Service) control(addr string) (storagepb.StorageClient, error) {
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	if c, ok := s.ctlConns[addr]; ok {
		return storagepb.NewStorageClient(c), nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), rpcauth.DialOption(s.cfg.Token))
	if err != nil {
		return nil, err
	}
	s.ctlConns[addr] = c
	return storagepb.NewStorageClient(c), nil
}
