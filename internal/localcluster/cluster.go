// Package localcluster runs an EmberFS cluster in one process: mgmtd and
// meta over Badger directories, and N storage services with their targets,
// all on loopback, with real gRPC, real data ports and real chunk engines.
// `emberfs up` runs one for a person to use; tests and benchmarks run one
// and stop or restart storage services in it. Everything lives under one
// directory, so starting again on the same directory brings back every
// file. With NoMeta it is a storage cluster alone (mgmtd and storage, no
// chain table until CreateChains): what storage tests and `emberfs bench
// storage` use (StorageOnly).
//
// It does not import the native client, so the storage layer can use it;
// connect one with client.New and MgmtdAddrs/Token.
package localcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/kvopen"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/chunkstore"
	"github.com/emberfs/emberfs/service/meta/metad"
	"github.com/emberfs/emberfs/service/mgmtd"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/service"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// MetaNodeID is the meta server's node id in mgmtd (storage nodes are 1..N).
const MetaNodeID = 1000

// ChainTable is the chain table files go to (meta's default root layout).
const ChainTable = 1

// Options describe the cluster. Zero fields take the defaults noted.
type Options struct {
	// Dir holds everything: mgmtd/ and meta/ (Badger), storage<N>/target<I>/
	// (chunk engines) and the token file. Required.
	Dir string
	// Storage is the number of storage services (default 3); Replicas the
	// replication factor of the chain table made on first start (default
	// min(3, Storage)); TargetsPerNode the targets of each service (default
	// 4), so the table has Storage*TargetsPerNode/Replicas chains.
	Storage        int
	Replicas       int
	TargetsPerNode int
	// Token is the cluster token. Default: the one saved in Dir/token, or
	// a new random one (saved there).
	Token string
	// PeerToken is the storage services' peer token (storage
	// Config.PeerToken: the secret chain traffic is proved with, which
	// clients never get). Default: the one saved in Dir/peer-token, or a
	// new random one (saved there, mode 0600).
	PeerToken string
	// MgmtdListen is mgmtd's gRPC address (default 127.0.0.1:0); MetaListen
	// the meta server's (default 127.0.0.1:0). Storage ports are picked by
	// the kernel.
	MgmtdListen string
	MetaListen  string
	// ChunkSize and StripeSize are the root layout on first start
	// (defaults 4 MiB and every chain of the table).
	ChunkSize  uint32
	StripeSize uint32
	// HeartbeatInterval and FailureTimeout seed mgmtd's config on first
	// start (defaults 200 ms and 1 s: quick recovery on one machine).
	HeartbeatInterval time.Duration
	FailureTimeout    time.Duration
	// NoSync skips fsync in the chunk engines (tests).
	NoSync bool
	// Logger gets every service's logs (default: discarded).
	Logger *slog.Logger
	// Progress, when set, gets one line per start-up step.
	Progress io.Writer
	// MetaConfig, when set, adjusts the meta server's config before it
	// starts (tests: short client leases, prune intervals).
	MetaConfig func(*metad.Config)

	// NoMeta runs mgmtd and the storage services alone: no meta server
	// and no chain table (CreateChains makes chains); Replicas is unused.
	NoMeta bool
	// MgmtdKV is mgmtd's KV spec (default badger:Dir/mgmtd; "memory" for a
	// cluster whose mgmtd never restarts).
	MgmtdKV string
	// ScanInterval is mgmtd's lease and chain scan period (0: mgmtd's
	// default); RepairInterval the storage services' (default 200 ms).
	ScanInterval   time.Duration
	RepairInterval time.Duration
	// StorageConfig, when set, adjusts storage node n's config before it
	// starts (tests: a fake KV clock, an injected transport).
	StorageConfig func(n int, cfg *service.Config)
}

// StorageOnly is the storage cluster storage tests and `emberfs bench
// storage` use: mgmtd (KV in memory) and nodes storage services of one
// target each, no meta, no chain table, and failures noticed quickly
// (heartbeat 100 ms, failure timeout 600 ms, scans every 20 ms, repair
// every 100 ms). Adjust the fields before Start.
func StorageOnly(dir string, nodes int) Options {
	return Options{Dir: dir, Storage: nodes, TargetsPerNode: 1, NoMeta: true, MgmtdKV: "memory",
		HeartbeatInterval: 100 * time.Millisecond, FailureTimeout: 600 * time.Millisecond,
		ScanInterval: 20 * time.Millisecond, RepairInterval: 100 * time.Millisecond}
}

// Cluster is a running cluster.
type Cluster struct {
	opts     Options
	mgmtdEng kv.Engine
	Mgmtd    *mgmtd.Server
	// Conn reaches mgmtd; Cache follows its routing.
	Conn   *mgmtdclient.Conn
	Cache  *mgmtdclient.Cache
	Meta   *metad.Daemon // nil with NoMeta
	metaSC *storageclient.Client

	mu       sync.Mutex
	storage  []*service.Service // index node-1; nil while stopped
	storCfgs []service.Config
}

func (o *Options) setDefaults() error {
	if o.Dir == "" {
		return errors.New("cluster: a data directory is required")
	}
	if o.Storage <= 0 {
		o.Storage = 3
	}
	if o.Replicas <= 0 {
		o.Replicas = min(3, o.Storage)
	}
	if o.TargetsPerNode <= 0 {
		o.TargetsPerNode = 4
	}
	if o.MgmtdKV == "" {
		o.MgmtdKV = "badger:" + filepath.Join(o.Dir, "mgmtd")
	}
	if o.RepairInterval <= 0 {
		o.RepairInterval = 200 * time.Millisecond
	}
	// With NoMeta there is no table to check: CreateChains names its
	// replication factor.
	if !o.NoMeta && o.Replicas > o.Storage {
		return fmt.Errorf("cluster: %d replicas need at least %d storage services, have %d", o.Replicas, o.Replicas, o.Storage)
	}
	if !o.NoMeta && (o.Storage*o.TargetsPerNode)%o.Replicas != 0 {
		return fmt.Errorf("cluster: %d storage services x %d targets is not a multiple of %d replicas", o.Storage, o.TargetsPerNode, o.Replicas)
	}
	if o.MgmtdListen == "" {
		o.MgmtdListen = "127.0.0.1:0"
	}
	if o.MetaListen == "" {
		o.MetaListen = "127.0.0.1:0"
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = 4 << 20
	}
	if o.StripeSize == 0 {
		o.StripeSize = uint32(o.Storage * o.TargetsPerNode / o.Replicas)
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 200 * time.Millisecond
	}
	if o.FailureTimeout <= 0 {
		o.FailureTimeout = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return nil
}

// loadToken returns the secret to use (given, else the one saved in
// Dir/name, else a new random one) and saves it in Dir/name, so a
// restart on the same Dir keeps it.
func loadToken(dir, name, given string) (string, error) {
	path := filepath.Join(dir, name)
	if given != "" {
		return given, os.WriteFile(path, []byte(given+"\n"), 0o600)
	}
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	return tok, os.WriteFile(path, []byte(tok+"\n"), 0o600)
}

// Start starts (or restarts, on the same Dir) the cluster and returns
// once every chain has a serving replica and meta is registered.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: data directory: %w", err)
	}
	if opts.Token, err = loadToken(opts.Dir, "token", opts.Token); err != nil {
		return nil, fmt.Errorf("cluster: token file: %w", err)
	}
	if opts.PeerToken, err = loadToken(opts.Dir, "peer-token", opts.PeerToken); err != nil {
		return nil, fmt.Errorf("cluster: peer token file: %w", err)
	}
	c := &Cluster{opts: opts}
	defer func() {
		if err != nil {
			c.Close(context.Background())
		}
	}()
	log := opts.Logger
	step := func(format string, args ...any) { fmt.Fprintf(opts.Progress, format+"\n", args...) }

	// mgmtd
	if c.mgmtdEng, err = kvopen.OpenWith(opts.MgmtdKV, kvopen.Options{Logger: log}); err != nil {
		return nil, fmt.Errorf("cluster: mgmtd KV: %w", err)
	}
	c.Mgmtd, err = mgmtd.New(mgmtd.Options{Engine: c.mgmtdEng, Token: opts.Token, InstanceID: "emberfs-up",
		PrimaryLease: 2 * time.Second, ScanInterval: opts.ScanInterval,
		HeartbeatInterval: opts.HeartbeatInterval, NodeFailureTimeout: opts.FailureTimeout,
		Logger: log.With("role", "mgmtd")})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", opts.MgmtdListen)
	if err != nil {
		return nil, fmt.Errorf("cluster: mgmtd listen on %s: %w", opts.MgmtdListen, err)
	}
	c.Mgmtd.Start(lis)
	step("mgmtd listening on %s", c.Mgmtd.Addr())
	if c.Conn, err = mgmtdclient.Dial([]string{c.Mgmtd.Addr()}, opts.Token); err != nil {
		return nil, err
	}
	c.Cache = mgmtdclient.NewCache(c.Conn)
	c.Cache.Start()

	// storage
	for n := 1; n <= opts.Storage; n++ {
		cfg := service.DefaultConfig()
		cfg.NodeID = uint32(n)
		cfg.Targets = nil
		for i := range opts.TargetsPerNode {
			cfg.Targets = append(cfg.Targets, filepath.Join(opts.Dir, fmt.Sprintf("storage%d", n), fmt.Sprintf("target%d", i)))
		}
		cfg.Mgmtd = []string{c.Mgmtd.Addr()}
		cfg.Token = opts.Token
		cfg.PeerToken = opts.PeerToken
		cfg.Listen, cfg.DataListen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", ""
		cfg.NoSync = opts.NoSync
		cfg.RepairInterval.Duration = opts.RepairInterval
		if opts.StorageConfig != nil {
			opts.StorageConfig(n, &cfg)
		}
		c.storCfgs = append(c.storCfgs, cfg)
		c.storage = append(c.storage, nil)
		if err := c.StartStorage(n); err != nil {
			return nil, err
		}
	}
	step("waiting for %d storage services to register (after a restart this takes about one failure timeout)", opts.Storage)
	for n := 1; n <= opts.Storage; n++ {
		if err := c.StorageService(n).WaitRegistered(ctx); err != nil {
			return nil, fmt.Errorf("cluster: storage %d did not register: %w", n, err)
		}
	}
	if opts.NoMeta {
		return c, nil
	}
	if err := c.ensureChainTable(ctx); err != nil {
		return nil, err
	}
	step("waiting for every chain to serve")
	if err := c.WaitHealthy(ctx, 1); err != nil {
		return nil, err
	}

	// meta
	mcfg := metad.DefaultConfig()
	mcfg.Listen, mcfg.MetricsListen = opts.MetaListen, ""
	mcfg.KV = "badger:" + filepath.Join(opts.Dir, "meta")
	mcfg.Token = opts.Token
	mcfg.Mgmtd = []string{c.Mgmtd.Addr()}
	mcfg.NodeID = MetaNodeID // the same node across restarts, not a new one each time
	mcfg.RootChainTable, mcfg.RootChunkSize, mcfg.RootStripeSize = ChainTable, opts.ChunkSize, opts.StripeSize
	mcfg.GCInterval.Duration = time.Second
	if opts.MetaConfig != nil {
		opts.MetaConfig(&mcfg)
	}
	c.Meta, err = metad.Start(ctx, metad.Options{Config: mcfg, Logger: log.With("role", "meta"),
		NewChunks: func(cache *mgmtdclient.Cache) (meta.ChunkStore, error) {
			c.metaSC = storageclient.New(cache, storageclient.Config{Token: opts.Token})
			return chunkstore.New(cache, c.metaSC), nil
		}})
	if err != nil {
		return nil, err
	}
	if err := c.Meta.WaitRegistered(ctx); err != nil {
		return nil, fmt.Errorf("cluster: meta did not register: %w", err)
	}
	if _, err := c.Cache.WaitFor(ctx, func(r *routing.Routing) bool {
		return len(r.ActiveNodes(mgmtdpb.NodeRole_ROLE_META)) > 0
	}); err != nil {
		return nil, fmt.Errorf("cluster: meta not in routing: %w", err)
	}
	step("meta listening on %s", c.Meta.Addr())
	return c, nil
}

// ensureChainTable creates the chain table over every target on first start.
func (c *Cluster) ensureChainTable(ctx context.Context) error {
	if err := c.Cache.Refresh(ctx); err != nil {
		return err
	}
	if _, ok := c.Cache.Current().Table(ChainTable); ok {
		return nil
	}
	err := c.Conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{TableId: ChainTable, ReplicationFactor: uint32(c.opts.Replicas)})
		return err
	})
	if err != nil {
		return fmt.Errorf("cluster: create chain table %d: %w", ChainTable, err)
	}
	_, err = c.Cache.WaitFor(ctx, func(r *routing.Routing) bool { _, ok := r.Table(ChainTable); return ok })
	return err
}

// WaitHealthy waits until every chain of the table has at least min
// serving targets (0: all of its targets).
func (c *Cluster) WaitHealthy(ctx context.Context, minServing int) error {
	_, err := c.WaitRouting(ctx, func(r *routing.Routing) bool {
		t, ok := r.Table(ChainTable)
		if !ok {
			return false
		}
		for _, id := range t.ChainIds {
			ch, _ := r.Chain(id)
			want := minServing
			if want <= 0 {
				want = len(ch.GetTargets())
			}
			if len(r.ServingTargets(id)) < want {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("cluster: chains not serving: %w", err)
	}
	return nil
}

// Token is the cluster token.
func (c *Cluster) Token() string { return c.opts.Token }

// PeerToken is the storage services' peer token (tests that act as a
// storage peer need it; clients never get it).
func (c *Cluster) PeerToken() string { return c.opts.PeerToken }

// MgmtdAddr is the address clients connect to.
func (c *Cluster) MgmtdAddr() string { return c.Mgmtd.Addr() }

// MgmtdAddrs is MgmtdAddr as the list client configs take.
func (c *Cluster) MgmtdAddrs() []string { return []string{c.Mgmtd.Addr()} }

// Current is the routing the cluster's cache holds now.
func (c *Cluster) Current() *routing.Routing { return c.Cache.Current() }

// Options returns the options in effect (defaults filled in).
func (c *Cluster) Options() Options { return c.opts }

// StorageService is storage node n (1-based; nil while stopped).
func (c *Cluster) StorageService(n int) *service.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.storage[n-1]
}

// TargetDir is the directory of storage node n's i-th target (from 0).
func (c *Cluster) TargetDir(n, i int) string { return c.storCfgs[n-1].Targets[i] }

// StartStorage starts (or restarts) storage node n on its directories.
func (c *Cluster) StartStorage(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.storage[n-1] != nil {
		return fmt.Errorf("cluster: storage %d is running", n)
	}
	s, err := service.Start(c.storCfgs[n-1], c.opts.Logger.With("role", "storage", "node", n))
	if err != nil {
		return fmt.Errorf("cluster: storage %d: %w", n, err)
	}
	c.storage[n-1] = s
	return nil
}

// StopStorage stops storage node n abruptly (a crash, to the others).
func (c *Cluster) StopStorage(n int) {
	c.mu.Lock()
	s := c.storage[n-1]
	c.storage[n-1] = nil
	c.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

// CreateChains places every target not yet in a chain into chains of
// replicas targets (a new chain table) and waits until each chain serves
// on all of them. It returns the chain ids.
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

// WaitAllServing waits until n targets of chain serve.
func (c *Cluster) WaitAllServing(ctx context.Context, chain uint32, n int) error {
	_, err := c.WaitRouting(ctx, func(r *routing.Routing) bool { return len(r.ServingTargets(chain)) == n })
	return err
}

// StorageClient makes a storage client on the cluster's routing cache.
func (c *Cluster) StorageClient(cfg storageclient.Config) *storageclient.Client {
	cfg.Token = c.opts.Token
	return storageclient.New(c.Cache, cfg)
}

// Close stops meta, storage and mgmtd, in that order, and closes the KVs.
func (c *Cluster) Close(ctx context.Context) {
	if c.Meta != nil {
		c.Meta.Stop(ctx)
	}
	if c.metaSC != nil {
		_ = c.metaSC.Close()
	}
	for n := 1; n <= len(c.storage); n++ {
		c.StopStorage(n)
	}
	if c.Cache != nil {
		c.Cache.Close()
	}
	if c.Conn != nil {
		_ = c.Conn.Close()
	}
	if c.Mgmtd != nil {
		c.Mgmtd.Shutdown(ctx)
	}
	if c.mgmtdEng != nil {
		_ = c.mgmtdEng.Close()
	}
}
