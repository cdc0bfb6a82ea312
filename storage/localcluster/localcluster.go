// Package localcluster runs a whole storage cluster inside one process on
// loopback: an in-memory mgmtd and N storage services with real data
// ports, real gRPC and real chunk engines in directories. Tests and
// `emberfs bench storage` use it; services can be stopped abruptly and
// started again on the same directories.
package localcluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/badgerkv"
	"github.com/emberfs/emberfs/service/mgmtd"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/service"
	"github.com/emberfs/emberfs/storage/storageclient"
	"github.com/emberfs/emberfs/transport"
)

// Options describe the cluster.
type Options struct {
	Dir            string // parent of every target directory
	Nodes          int
	TargetsPerNode int    // default 1
	Token          string // default "localcluster-token"
	NoSync         bool
	// HeartbeatInterval and FailureTimeout (defaults 100 ms / 600 ms):
	// short, so failures are noticed quickly in tests.
	HeartbeatInterval time.Duration
	FailureTimeout    time.Duration
	// VerifyInterval is passed to the chunk engines (0: engine default).
	VerifyInterval time.Duration
	// KVNow is the storage services' KV clock (expiry, access times);
	// nil: time.Now. KVReclaimInterval: see service.Config (0: default).
	KVNow             func() time.Time
	KVReclaimInterval time.Duration
	// KVInlineMax: see service.Config (0: default).
	KVInlineMax int
	// Transport makes the services' data-path ends (nil: TCP).
	Transport transport.Factory
	Logger    *slog.Logger
}

// Cluster is a running local cluster.
type Cluster struct {
	opts  Options
	eng   kv.Engine
	Mgmtd *mgmtd.Server
	Conn  *mgmtdclient.Conn
	Cache *mgmtdclient.Cache

	mu       sync.Mutex
	services []*service.Service // index = node id - 1; nil while stopped
	configs  []service.Config
}

// Start starts mgmtd and every storage service and waits until all are
// registered.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.TargetsPerNode <= 0 {
		opts.TargetsPerNode = 1
	}
	if opts.Token == "" {
		opts.Token = "localcluster-token"
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 100 * time.Millisecond
	}
	if opts.FailureTimeout <= 0 {
		opts.FailureTimeout = 600 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Cluster{opts: opts}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	var err error
	if c.eng, err = badgerkv.OpenMemory(badgerkv.Options{}); err != nil {
		return nil, err
	}
	c.Mgmtd, err = mgmtd.New(mgmtd.Options{
		Engine: c.eng, Token: opts.Token, PrimaryLease: 2 * time.Second, ScanInterval: 20 * time.Millisecond,
		HeartbeatInterval: opts.HeartbeatInterval, NodeFailureTimeout: opts.FailureTimeout, Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.Mgmtd.Start(lis)
	if c.Conn, err = mgmtdclient.Dial([]string{c.Mgmtd.Addr()}, opts.Token); err != nil {
		return nil, err
	}
	c.Cache = mgmtdclient.NewCache(c.Conn)
	c.Cache.Start()
	for n := 1; n <= opts.Nodes; n++ {
		cfg := service.DefaultConfig()
		cfg.NodeID = uint32(n)
		cfg.Targets = nil
		for i := range opts.TargetsPerNode {
			cfg.Targets = append(cfg.Targets, filepath.Join(opts.Dir, fmt.Sprintf("node%d", n), fmt.Sprintf("target%d", i)))
		}
		cfg.Mgmtd = []string{c.Mgmtd.Addr()}
		cfg.Token = opts.Token
		cfg.Listen, cfg.DataListen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", ""
		cfg.NoSync = opts.NoSync
		cfg.RepairInterval.Duration = 100 * time.Millisecond
		cfg.KVNow = opts.KVNow
		cfg.KVInlineMax = opts.KVInlineMax
		cfg.Transport = opts.Transport
		if opts.KVReclaimInterval != 0 {
			cfg.KVReclaimInterval.Duration = opts.KVReclaimInterval
		}
		if opts.VerifyInterval != 0 {
			cfg.VerifyInterval.Duration = opts.VerifyInterval
		}
		c.configs = append(c.configs, cfg)
		c.services = append(c.services, nil)
		if err := c.StartNode(n); err != nil {
			return nil, err
		}
	}
	for n := 1; n <= opts.Nodes; n++ {
		if err := c.Service(n).WaitRegistered(ctx); err != nil {
			return nil, fmt.Errorf("node %d did not register: %w", n, err)
		}
	}
	ok = true
	return c, nil
}

// Token is the cluster token.
func (c *Cluster) Token() string { return c.opts.Token }

// Service returns node n's service (nil while stopped).
func (c *Cluster) Service(n int) *service.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.services[n-1]
}

// TargetDir is the directory of node n's i-th target.
func (c *Cluster) TargetDir(n, i int) string { return c.configs[n-1].Targets[i] }

// StartNode starts (or restarts) node n on its directories.
func (c *Cluster) StartNode(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.services[n-1] != nil {
		return fmt.Errorf("node %d is running", n)
	}
	s, err := service.Start(c.configs[n-1], c.opts.Logger.With("node", n))
	if err != nil {
		return err
	}
	c.services[n-1] = s
	return nil
}

// StopNode stops node n abruptly (to the cluster it looks like a crash).
func (c *Cluster) StopNode(n int) {
	c.mu.Lock()
	s := c.services[n-1]
	c.services[n-1] = nil
	c.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

// CreateChains places every target into chains of replicas targets.
func (c *Cluster) CreateChains(ctx context.Context, replicas int) ([]uint32, error) {
	var rsp *mgmtdpb.CreateChainTableRsp
	err := c.Conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		var err error
		rsp, err = cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{ReplicationFactor: uint32(replicas)})
		return err
	})
	if err != nil {
		return nil, err
	}
	ids := make([]uint32, len(rsp.Chains))
	for i, ch := range rsp.Chains {
		ids[i] = ch.ChainId
	}
	// Wait until every chain is fully serving in our cache and in every
	// service's routing view.
	_, err = c.WaitRouting(ctx, func(r *routing.Routing) bool {
		for _, id := range ids {
			if len(r.ServingTargets(id)) != replicas {
				return false
			}
		}
		return true
	})
	return ids, err
}

// WaitRouting waits until the cluster's routing satisfies ok.
func (c *Cluster) WaitRouting(ctx context.Context, ok func(*routing.Routing) bool) (*routing.Routing, error) {
	_ = c.Cache.Refresh(ctx)
	return c.Cache.WaitFor(ctx, ok)
}

// WaitAllServing waits until every target of chain serves.
func (c *Cluster) WaitAllServing(ctx context.Context, chain uint32, n int) error {
	_, err := c.WaitRouting(ctx, func(r *routing.Routing) bool { return len(r.ServingTargets(chain)) == n })
	return err
}

// Client makes a storage client on the cluster's routing cache.
func (c *Cluster) Client(cfg storageclient.Config) *storageclient.Client {
	cfg.Token = c.opts.Token
	return storageclient.New(c.Cache, cfg)
}

// Close stops everything.
func (c *Cluster) Close() {
	for n := 1; n <= len(c.services); n++ {
		c.StopNode(n)
	}
	if c.Cache != nil {
		c.Cache.Close()
	}
	if c.Conn != nil {
		c.Conn.Close()
	}
	if c.Mgmtd != nil {
		c.Mgmtd.Stop()
	}
	if c.eng != nil {
		c.eng.Close()
	}
}

// Current returns the cluster cache's routing.
func (c *Cluster) Current() *routing.Routing { return c.Cache.Current() }
