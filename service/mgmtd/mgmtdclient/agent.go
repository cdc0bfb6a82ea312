// Package mgmtdclient is the client side of mgmtd. Conn talks to a set of
// mgmtd instances, following redirects to the primary and failing over
// when one is down; Cache keeps the latest routing info (pushed by mgmtd's
// watch stream, fetched on demand after a stale-version error). Agent is
// what a service (storage, meta) runs to take part in the cluster: it
// registers with mgmtd, heartbeats in the background and tells the service
// whether its lease is valid. A service must stop accepting writes while
// LeaseValid is false (3FS: a service that cannot reach mgmtd for half the
// lease stops serving, because mgmtd will declare it failed after the full
// lease). interfaces.go names the parts each kind of caller uses.
package mgmtdclient

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// Options describes the service that registers.
type Options struct {
	Conn *Conn
	Role mgmtdpb.NodeRole
	// NodeID is the service's persisted id; 0 asks mgmtd for one (read it
	// with NodeID after registration and persist it).
	NodeID      uint32
	Address     string
	DataAddress string
	Hostname    string
	// MetricsAddress is the HTTP host:port of the service's /metrics ("" if
	// none), published in routing so that `emberfs top` finds every role.
	MetricsAddress string
	// Targets reports the service's targets at each heartbeat (storage).
	Targets func() []*mgmtdpb.TargetReport
	Logger  *slog.Logger
}

// Agent registers and heartbeats for one service process.
type Agent struct {
	opts   Options
	log    *slog.Logger
	bootID uint64
	cancel context.CancelFunc
	done   chan struct{}

	mu             sync.Mutex
	nodeID         uint32
	registered     bool
	registeredCh   chan struct{}
	lastOK         time.Time // send time of the last accepted heartbeat
	interval       time.Duration
	failureTimeout time.Duration
	status         mgmtdpb.NodeStatus
	lastErr        error
	routingVersion uint64
}

// Start begins registering and heartbeating in the background. A service
// that restarted is registered only once mgmtd has marked all its targets
// offline (mgmtd answers Busy until then, and the agent keeps trying).
func Start(opts Options) (*Agent, error) {
	if opts.Conn == nil {
		return nil, errors.New("mgmtdclient: no mgmtd connection")
	}
	if opts.Role == mgmtdpb.NodeRole_ROLE_UNSPECIFIED {
		return nil, errors.New("mgmtdclient: node role missing")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Targets == nil {
		opts.Targets = func() []*mgmtdpb.TargetReport { return nil }
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{
		opts:           opts,
		log:            opts.Logger.With("component", "mgmtdclient"),
		bootID:         binary.LittleEndian.Uint64(b[:]) | 1,
		cancel:         cancel,
		done:           make(chan struct{}),
		nodeID:         opts.NodeID,
		registeredCh:   make(chan struct{}),
		interval:       500 * time.Millisecond,
		failureTimeout: 2 * time.Second,
	}
	go a.run(ctx)
	return a, nil
}

// Stop ends heartbeating (the lease then runs out at mgmtd).
func (a *Agent) Stop() {
	a.cancel()
	<-a.done
}

// NodeID is the node id (assigned by mgmtd if Options.NodeID was 0).
func (a *Agent) NodeID() uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nodeID
}

// BootID is this process's random boot id.
func (a *Agent) BootID() uint64 { return a.bootID }

// LeaseValid reports whether mgmtd accepted a heartbeat within the last
// half failure timeout. While false the service must not accept writes.
func (a *Agent) LeaseValid() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.registered && a.status != mgmtdpb.NodeStatus_NODE_DISABLED &&
		time.Since(a.lastOK) < a.failureTimeout/2
}

// LastError is the last registration or heartbeat error (nil after a success).
func (a *Agent) LastError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastErr
}

// RoutingVersion is the routing version mgmtd reported last; a service
// whose cache is older should refresh it.
func (a *Agent) RoutingVersion() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.routingVersion
}

// WaitRegistered blocks until the first registration succeeds.
func (a *Agent) WaitRegistered(ctx context.Context) error {
	select {
	case <-a.registeredCh:
		return nil
	case <-ctx.Done():
		if err := a.LastError(); err != nil {
			return errors.Join(ctx.Err(), err)
		}
		return ctx.Err()
	}
}

func (a *Agent) run(ctx context.Context) {
	defer close(a.done)
	for {
		a.mu.Lock()
		registered, interval := a.registered, a.interval
		a.mu.Unlock()
		sent := time.Now()
		callCtx, cancel := context.WithTimeout(ctx, interval*2)
		var err error
		if registered {
			err = a.heartbeat(callCtx, sent)
		} else {
			err = a.register(callCtx, sent)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		a.mu.Lock()
		a.lastErr = err
		if errcode.Is(err, errcode.NotFound) {
			// mgmtd lost or replaced our registration: register again now.
			a.registered = false
			a.mu.Unlock()
			a.log.Warn("heartbeat refused; registering again", "err", err)
			continue
		}
		interval = a.interval
		a.mu.Unlock()
		if err != nil && !errcode.Is(err, errcode.Busy) {
			a.log.Warn("mgmtd heartbeat failed", "err", err)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (a *Agent) register(ctx context.Context, sent time.Time) error {
	req := &mgmtdpb.RegisterNodeReq{
		NodeId: a.NodeID(), Role: a.opts.Role, Address: a.opts.Address, DataAddress: a.opts.DataAddress,
		Hostname: a.opts.Hostname, BootId: a.bootID, Targets: a.opts.Targets(), MetricsAddress: a.opts.MetricsAddress,
	}
	var rsp *mgmtdpb.RegisterNodeRsp
	err := a.opts.Conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		var err error
		rsp, err = cl.RegisterNode(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nodeID = rsp.NodeId
	a.registered = true
	a.status = mgmtdpb.NodeStatus_NODE_ACTIVE
	a.accepted(sent, rsp.HeartbeatIntervalMs, rsp.NodeFailureTimeoutMs, rsp.RoutingVersion)
	select {
	case <-a.registeredCh:
	default:
		close(a.registeredCh)
		a.log.Info("registered with mgmtd", "node", rsp.NodeId, "boot_id", a.bootID)
	}
	return nil
}

func (a *Agent) heartbeat(ctx context.Context, sent time.Time) error {
	req := &mgmtdpb.HeartbeatReq{
		NodeId: a.NodeID(), BootId: a.bootID, Role: a.opts.Role,
		Address: a.opts.Address, DataAddress: a.opts.DataAddress, Targets: a.opts.Targets(),
		MetricsAddress: a.opts.MetricsAddress,
	}
	var rsp *mgmtdpb.HeartbeatRsp
	err := a.opts.Conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		var err error
		rsp, err = cl.Heartbeat(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status = rsp.Status
	a.accepted(sent, rsp.HeartbeatIntervalMs, rsp.NodeFailureTimeoutMs, rsp.RoutingVersion)
	return nil
}

// accepted records a renewed lease. The lease is counted from when the
// request was sent, which is never later than when mgmtd granted it.
func (a *Agent) accepted(sent time.Time, hbMs, failMs uint32, version uint64) {
	a.lastOK = sent
	if hbMs > 0 {
		a.interval = time.Duration(hbMs) * time.Millisecond
	}
	if failMs > 0 {
		a.failureTimeout = time.Duration(failMs) * time.Millisecond
	}
	a.routingVersion = version
}

// AdvertisedMetricsAddress is what a service registers as its /metrics
// address: the address its HTTP listener bound, except that a wildcard
// host (":7191", "0.0.0.0:7191") is replaced by the host of the service's
// advertised control address, which other machines can reach.
func AdvertisedMetricsAddress(bound, control string) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil || bound == "" {
		return bound
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return bound
	}
	if chost, _, err := net.SplitHostPort(control); err == nil && chost != "" {
		if ip := net.ParseIP(chost); ip == nil || !ip.IsUnspecified() {
			return net.JoinHostPort(chost, port)
		}
	}
	return bound
}
