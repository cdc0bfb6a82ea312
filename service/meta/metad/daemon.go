package metad

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"google.golang.org/grpc"

	"github.com/emberfs/emberfs/internal/logging"
	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/kvopen"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/metapb"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// Options are what Start needs besides the config.
type Options struct {
	Config Config
	Logger *slog.Logger // default: text to stderr at Config.LogLevel
	// NewChunks builds the storage-backed ChunkStore (file lengths on
	// fsync/close, truncation, chunk removal of deleted files) from the
	// routing cache (nil when the config names no mgmtd). When NewChunks
	// is nil the server runs without storage: lengths are what clients
	// set, and removed files leave the queue without their chunks being
	// deleted. `emberfs up` wires the storage client here.
	NewChunks func(cache *mgmtdclient.Cache) (meta.ChunkStore, error)
}

// Daemon is a running meta server process.
type Daemon struct {
	log     *slog.Logger
	eng     kv.Engine
	srv     *meta.Server
	grpc    *grpc.Server
	addr    string
	conn    *mgmtdclient.Conn
	cache   *mgmtdclient.Cache
	agent   *mgmtdclient.Agent
	metrics *http.Server
	mreg    *prometheus.Registry // this daemon's metrics, served or gathered by a host process
	maddr   string
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stop    sync.Once
}

// Start opens everything and serves in the background until Stop.
func Start(ctx context.Context, opts Options) (_ *Daemon, err error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		if log, err = logging.New(os.Stderr, cfg.LogLevel, "meta"); err != nil {
			return nil, err
		}
	}
	d := &Daemon{log: log}
	defer func() {
		if err != nil {
			d.Stop(context.Background())
		}
	}()
	if d.eng, err = kvopen.OpenWith(cfg.KV, kvopen.Options{Logger: log}); err != nil {
		return nil, fmt.Errorf("meta: open KV %q: %w", cfg.KV, err)
	}
	mcfg := meta.Config{
		RootLayout:    meta.Layout{ChainTable: cfg.RootChainTable, ChunkSize: cfg.RootChunkSize, StripeSize: cfg.RootStripeSize},
		IDBatch:       cfg.IDBatch,
		ClientTTL:     cfg.ClientTTL.Duration,
		GCInterval:    cfg.GCInterval.Duration,
		PruneInterval: cfg.PruneInterval.Duration,
		GCBatch:       cfg.GCBatch,
		Logger:        log,
	}
	if len(cfg.Mgmtd) > 0 {
		if d.conn, err = mgmtdclient.Dial(cfg.Mgmtd, cfg.Token); err != nil {
			return nil, fmt.Errorf("meta: mgmtd: %w", err)
		}
		d.cache = mgmtdclient.NewCache(d.conn)
		d.cache.Start()
		mcfg.Chains = meta.RoutingChainTables{Cache: d.cache}
	} else {
		log.Warn("no mgmtd configured: running standalone; new files all start at chain 0 of their table")
	}
	if opts.NewChunks != nil {
		if mcfg.Chunks, err = opts.NewChunks(d.cache); err != nil {
			return nil, fmt.Errorf("meta: chunk store: %w", err)
		}
	} else {
		log.Warn("no chunk store: file lengths come from clients and removed files' chunks are not deleted from storage")
	}
	if d.srv, err = meta.New(ctx, d.eng, mcfg); err != nil {
		return nil, err
	}

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("meta: listen on %s: %w", cfg.Listen, err)
	}
	d.addr = lis.Addr().String()
	m := newMetrics(func() float64 {
		if d.agent != nil && d.agent.LeaseValid() {
			return 1
		}
		return 0
	})
	d.grpc = grpc.NewServer(append(rpcauth.ServerOptions(cfg.Token), grpc.ChainUnaryInterceptor(m.intercept(log)))...)
	metapb.RegisterMetaServer(d.grpc, meta.NewGRPCService(d.srv))
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.grpc.Serve(lis); err != nil {
			log.Error("meta gRPC server stopped", "err", err)
		}
	}()

	d.mreg = m.reg
	if cfg.MetricsListen != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return nil, fmt.Errorf("meta: metrics listen on %s: %w", cfg.MetricsListen, err)
		}
		d.maddr = mlis.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.handler())
		d.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = d.metrics.Serve(mlis) }()
	}

	if d.conn != nil {
		advertise := cfg.AdvertiseAddress
		if advertise == "" {
			advertise = d.addr
		}
		host := cfg.Hostname
		if host == "" {
			host, _ = os.Hostname()
		}
		d.agent, err = mgmtdclient.Start(mgmtdclient.Options{Conn: d.conn, Role: mgmtdpb.NodeRole_ROLE_META,
			NodeID: cfg.NodeID, Address: advertise, Hostname: host, Logger: log,
			MetricsAddress: mgmtdclient.AdvertisedMetricsAddress(d.maddr, advertise)})
		if err != nil {
			return nil, err
		}
	}

	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.srv.Run(runCtx)
	}()
	log.Info("meta server started", "addr", d.addr, "kv", d.eng.Name(), "metrics", d.maddr, "mgmtd", cfg.Mgmtd)
	return d, nil
}

// Addr is the gRPC address listened on.
func (d *Daemon) Addr() string { return d.addr }

// MetricsAddr is the /metrics HTTP address ("" when disabled).
func (d *Daemon) MetricsAddr() string { return d.maddr }

// Server is the metadata server (in-process calls, fsck).
func (d *Daemon) Server() *meta.Server { return d.srv }

// WaitRegistered blocks until mgmtd accepted the registration (at once
// when running standalone).
func (d *Daemon) WaitRegistered(ctx context.Context) error {
	if d.agent == nil {
		return nil
	}
	return d.agent.WaitRegistered(ctx)
}

// NodeID is the node id mgmtd gave (0 standalone or before registration).
func (d *Daemon) NodeID() uint32 {
	if d.agent == nil {
		return 0
	}
	return d.agent.NodeID()
}

// Stop stops heartbeating (mgmtd marks the node failed when the lease
// runs out, and clients move to other meta servers), lets calls in flight
// finish until ctx ends, stops the background loops and closes the KV.
func (d *Daemon) Stop(ctx context.Context) {
	d.stop.Do(func() {
		if d.agent != nil {
			d.agent.Stop()
		}
		if d.grpc != nil {
			done := make(chan struct{})
			go func() { d.grpc.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				d.grpc.Stop()
			}
		}
		if d.metrics != nil {
			_ = d.metrics.Shutdown(ctx)
		}
		if d.cancel != nil {
			d.cancel()
		}
		d.wg.Wait()
		if d.cache != nil {
			d.cache.Close()
		}
		if d.conn != nil {
			_ = d.conn.Close()
		}
		if d.eng != nil {
			if err := d.eng.Close(); err != nil && !errors.Is(err, context.Canceled) {
				d.log.Warn("closing KV", "err", err)
			}
		}
	})
}
