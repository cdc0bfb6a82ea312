// Package mgmtd is EmberFS's cluster manager: nodes register and heartbeat
// (renewing leases), mgmtd keeps the routing info (nodes, targets, chains,
// chain tables) in the KV, applies the target state machine
// (service/mgmtd/statemachine) and publishes each new routing version.
// Several instances may run over one KV; the one holding the primary lease
// key serves, the others redirect callers with errcode.NotPrimary.
// docs/mgmtd.md describes the protocol and what storage and clients do.
package mgmtd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/mgmtd/primaryhint"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// Options configures a Server. Zero durations take Config's defaults.
type Options struct {
	Engine kv.Engine
	Token  string
	// InstanceID names this instance in the primary lease (default random).
	InstanceID string
	// AdvertiseAddress is handed out in redirects (default: listen address).
	AdvertiseAddress   string
	PrimaryLease       time.Duration
	ScanInterval       time.Duration
	HeartbeatInterval  time.Duration // seeds a new cluster's config
	NodeFailureTimeout time.Duration // seeds a new cluster's config
	Logger             *slog.Logger
	// Clock is the time source of leases, heartbeats and scans (default
	// time.Now). Tests inject a manual clock and drive electOnce/scanOnce
	// themselves, so lease expiry and flapping are tested without sleeps.
	Clock func() time.Time
	// OnChainChange, if set, is called with every committed chain change
	// (a new version of a chain), in version order. It runs under the
	// server's lock, so it must be quick and must not call the server.
	OnChainChange func(*mgmtdpb.Chain)
}

// Server is one mgmtd instance.
type Server struct {
	opts    Options
	log     *slog.Logger
	eng     kv.Engine
	id      string
	grpc    *grpc.Server
	lis     net.Listener
	addr    string
	metrics *metrics

	kick     chan struct{} // asks the scan loop to run now
	stop     chan struct{}
	stopOnce sync.Once
	loops    sync.WaitGroup

	mu sync.Mutex
	st *state // nil unless primary
	// metricsAddr is this instance's /metrics host:port, published in
	// routing while it is primary ("" until SetMetricsAddress).
	metricsAddr string
	// Last lease seen, for redirects while standby.
	primaryAddr string
	lastTerm    uint64
}

// New checks options and builds a Server; Start runs it.
func New(opts Options) (*Server, error) {
	if opts.Engine == nil {
		return nil, errors.New("mgmtd: no KV engine")
	}
	if opts.Token == "" {
		return nil, errors.New("mgmtd: empty cluster token")
	}
	def := DefaultConfig()
	if opts.PrimaryLease <= 0 {
		opts.PrimaryLease = def.PrimaryLease.Duration
	}
	if opts.ScanInterval <= 0 {
		opts.ScanInterval = def.ScanInterval.Duration
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = def.HeartbeatInterval.Duration
	}
	if opts.NodeFailureTimeout <= 0 {
		opts.NodeFailureTimeout = def.NodeFailureTimeout.Duration
	}
	if err := validateTimes(opts.HeartbeatInterval, opts.NodeFailureTimeout); err != nil {
		return nil, fmt.Errorf("mgmtd: %w", err)
	}
	if opts.InstanceID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		opts.InstanceID = "mgmtd-" + hex.EncodeToString(b[:])
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	s := &Server{
		opts: opts,
		log:  opts.Logger.With("component", "mgmtd", "instance", opts.InstanceID),
		eng:  opts.Engine,
		id:   opts.InstanceID,
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
	}
	s.metrics = newMetrics(s)
	return s, nil
}

// Start serves gRPC on lis and starts the election and scan loops.
func (s *Server) Start(lis net.Listener) {
	s.lis = lis
	s.addr = lis.Addr().String()
	if s.opts.AdvertiseAddress != "" {
		s.addr = s.opts.AdvertiseAddress
	}
	s.grpc = grpc.NewServer(append(rpcauth.ServerOptions(s.opts.Token), grpc.KeepaliveEnforcementPolicy(mgmtdclient.KeepalivePolicy))...)
	mgmtdpb.RegisterMgmtdServer(s.grpc, &handlers{s: s})
	s.loops.Add(3)
	go func() {
		defer s.loops.Done()
		if err := s.grpc.Serve(lis); err != nil {
			s.log.Error("grpc serve ended", "err", err)
		}
	}()
	go func() { defer s.loops.Done(); s.electionLoop() }()
	go func() { defer s.loops.Done(); s.scanLoop() }()
	s.log.Info("mgmtd started", "addr", s.addr, "kv", s.eng.Name())
}

// Addr is the address this instance advertises.
func (s *Server) Addr() string { return s.addr }

// ID is this instance's id in the primary lease.
func (s *Server) ID() string { return s.id }

// MetricsHandler serves this instance's Prometheus metrics.
func (s *Server) MetricsHandler() http.Handler { return s.metrics.handler() }

// IsPrimary reports whether this instance currently holds a live lease.
func (s *Server) IsPrimary() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primaryLocked() != nil
}

// RoutingVersion is the current routing version (0 when not primary).
func (s *Server) RoutingVersion() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.primaryLocked(); st != nil {
		return st.version
	}
	return 0
}

// Stop ends the instance abruptly, like a crash: the primary lease is not
// released, so a standby takes over only once it expires.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.mu.Lock()
		s.stepDownLocked("stopped")
		s.mu.Unlock()
		if s.grpc != nil {
			s.grpc.Stop()
		}
		s.loops.Wait()
	})
}

// Shutdown stops the instance and releases the primary lease if it holds
// it, so that a standby takes over at its next election round.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	term := uint64(0)
	if s.st != nil {
		term = s.st.term
	}
	s.mu.Unlock()
	s.Stop()
	if term == 0 {
		return
	}
	err := s.eng.Transact(ctx, func(tx kv.Tx) error {
		rec, ok, err := readLease(tx)
		if err != nil || !ok || rec.Holder != s.id || rec.Term != term {
			return err
		}
		rec.ExpiresMs = 0
		return writeLease(tx, rec)
	})
	if err != nil {
		s.log.Warn("releasing primary lease failed", "err", err)
	}
}

// primaryLocked returns the primary state if this instance is primary and
// its lease is still live by its own clock.
func (s *Server) primaryLocked() *state {
	if s.st == nil || s.opts.Clock().Sub(s.st.renewedAt) >= s.opts.PrimaryLease {
		return nil
	}
	return s.st
}

func (s *Server) notPrimaryLocked() error {
	addr := s.primaryAddr
	if addr == s.addr {
		addr = ""
	}
	return primaryhint.Error(s.addr, addr)
}

func (s *Server) stepDownLocked(why string) {
	if s.st == nil {
		return
	}
	s.log.Warn("stepping down as primary", "term", s.st.term, "reason", why)
	close(s.st.done)
	s.st = nil
	s.metrics.isPrimary.Set(0)
}

func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.stop:
		return false
	case <-t.C:
		return true
	}
}

func (s *Server) electionLoop() {
	for {
		s.electOnce()
		if !s.sleep(s.opts.PrimaryLease / 4) {
			return
		}
	}
}

// electOnce renews this instance's lease, or takes the lease if it is
// free or expired, or learns who the primary is.
func (s *Server) electOnce() {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.PrimaryLease)
	defer cancel()
	s.mu.Lock()
	var myTerm uint64
	if s.st != nil {
		myTerm = s.st.term
	}
	s.mu.Unlock()

	now := s.opts.Clock()
	var rec leaseRecord
	var renewed, became bool
	err := s.eng.Transact(ctx, func(tx kv.Tx) error {
		renewed, became = false, false
		cur, ok, err := readLease(tx)
		if err != nil {
			return err
		}
		expires := now.Add(s.opts.PrimaryLease).UnixMilli()
		switch {
		case ok && myTerm != 0 && cur.Holder == s.id && cur.Term == myTerm:
			cur.ExpiresMs, cur.Address = expires, s.addr
			renewed, rec = true, cur
		case !ok || cur.ExpiresMs < now.UnixMilli() || (myTerm == 0 && cur.Holder == s.id):
			// Free, expired, or held by an earlier run of this very instance.
			rec = leaseRecord{Holder: s.id, Address: s.addr, Term: cur.Term + 1, ExpiresMs: expires}
			became = true
		default:
			rec = cur
			return nil
		}
		return writeLease(tx, rec)
	})

	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
		return
	default:
	}
	if err != nil {
		s.log.Warn("primary lease round failed", "err", err)
		if s.st != nil && s.opts.Clock().Sub(s.st.renewedAt) >= s.opts.PrimaryLease {
			s.stepDownLocked("lease not renewed in time")
		}
		return
	}
	s.primaryAddr, s.lastTerm = rec.Address, rec.Term
	switch {
	case renewed:
		// The state may have been dropped while the renewal was in flight
		// (its own clock ran out); the next round then takes a new term.
		if s.st != nil && s.st.term == myTerm {
			s.st.renewedAt = now
		}
	case became:
		s.stepDownLocked("lease taken again with a new term")
		if err := s.takeOverLocked(ctx, rec.Term, now); err != nil {
			s.log.Error("taking over as primary failed", "term", rec.Term, "err", err)
		}
	default:
		s.stepDownLocked(fmt.Sprintf("lease held by %s (%s)", rec.Holder, rec.Address))
	}
}

// takeOverLocked loads durable state and starts serving as primary.
func (s *Server) takeOverLocked(ctx context.Context, term uint64, leaseStart time.Time) error {
	d, err := loadDurable(ctx, s.eng)
	if err != nil {
		return err
	}
	st := newState(d, term, leaseStart, s.opts)
	s.st = st
	// A new term publishes a new routing version, so that everyone who
	// watches sees versions strictly increase across failovers.
	ch := &change{bumpRouting: true}
	if d.config == nil {
		ch.config = st.config
	}
	if err := s.commitLocked(ctx, st, ch); err != nil {
		s.st = nil
		return err
	}
	s.metrics.isPrimary.Set(1)
	s.log.Info("became primary", "term", term, "routing_version", st.version,
		"nodes", len(st.nodes), "chains", len(st.chains))
	s.kickScan()
	return nil
}

// commitLocked writes ch in one transaction that first checks this
// instance still holds the lease with st's term (fencing: a deposed primary
// can never overwrite its successor's state), then applies it to memory.
func (s *Server) commitLocked(ctx context.Context, st *state, ch *change) error {
	if ch.empty() {
		return nil
	}
	newVersion := st.version
	if ch.bumpRouting {
		newVersion++
	}
	err := s.eng.Transact(ctx, func(tx kv.Tx) error {
		rec, ok, err := readLease(tx)
		if err != nil {
			return err
		}
		if !ok || rec.Holder != s.id || rec.Term != st.term {
			return errNotHolder
		}
		return ch.write(tx, newVersion)
	})
	if errors.Is(err, errNotHolder) {
		s.stepDownLocked("lease lost (seen while committing)")
		return s.notPrimaryLocked()
	}
	if err != nil {
		return errcode.New(errcode.Unavailable, "mgmtd: writing cluster state: %v", err)
	}
	st.apply(ch, newVersion)
	for _, c := range ch.chains {
		s.metrics.chainChanges.Inc()
		if s.opts.OnChainChange != nil {
			s.opts.OnChainChange(cloneChain(c))
		}
	}
	if ch.bumpRouting {
		s.metrics.routingVersion.Set(float64(newVersion))
		close(st.changed)
		st.changed = make(chan struct{})
	}
	return nil
}

var errNotHolder = errors.New("mgmtd: primary lease held by another instance")

func (s *Server) kickScan() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// SetMetricsAddress publishes addr (host:port of an HTTP server with
// /metrics for this instance) in routing info while this instance is the
// primary, so that tools find it through mgmtd. It is a setter rather than
// an option because the HTTP server usually starts after the gRPC one.
func (s *Server) SetMetricsAddress(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.metricsAddr = addr
}
