package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/internal/logging"
	"github.com/emberfs/emberfs/service/kv/kvopen"
	"github.com/emberfs/emberfs/service/mgmtd"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
)

func init() { subcommands = append(subcommands, newMgmtdCmd) }

func newMgmtdCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mgmtd",
		Short: "Run the cluster manager (membership, leases, chains, routing)",
		Long: `Run an mgmtd instance. Several instances may share one KV (badger on a
shared engine is single-process; use etcd: or fdb: for instances on several hosts):
one becomes primary, the others redirect callers to it.
Settings come from --config (TOML; see --print-config for every setting and
its default); flags override the file. The token may also come from
EMBERFS_TOKEN.`,
		Args: cobra.NoArgs,
	}
	rc := newRoleConfig(cmd, mgmtd.DefaultConfig, mgmtd.LoadConfig,
		func(c *mgmtd.Config) *string { return &c.Token }, func(c *mgmtd.Config) string { return c.TOML() })
	f := cmd.Flags()
	f.StringVar(&rc.cfg.Listen, "listen", rc.cfg.Listen, "gRPC listen address (overrides the config)")
	f.StringVar(&rc.cfg.KV, "kv", rc.cfg.KV, `KV store: "memory", "badger:/dir", "fdb:/cluster-file" or "etcd:host:port,host:port[/prefix]" (overrides the config)`)
	f.StringVar(&rc.cfg.MetricsListen, "metrics-listen", rc.cfg.MetricsListen, `HTTP address for /metrics ("" disables; overrides the config)`)
	f.StringVar(&rc.cfg.AdvertiseAddress, "advertise", rc.cfg.AdvertiseAddress, "address handed to callers in redirects (overrides the config)")
	cmd.RunE = rc.runE(func(cfg *mgmtd.Config) error {
		if cfg.Token == "" {
			return errors.New("mgmtd: no cluster token: set token in the config, pass --token, or set EMBERFS_TOKEN")
		}
		return cfg.Validate()
	}, runMgmtd)
	return cmd
}

// runMgmtd serves until ctx ends, then releases the primary lease.
func runMgmtd(ctx context.Context, cmd *cobra.Command, cfg mgmtd.Config) error {
	logger, err := logging.New(os.Stderr, cfg.LogLevel, "mgmtd")
	if err != nil {
		return err
	}
	eng, err := kvopen.OpenWith(cfg.KV, kvopen.Options{Logger: logger})
	if err != nil {
		return fmt.Errorf("mgmtd: open KV %q: %w", cfg.KV, err)
	}
	defer eng.Close()
	srv, err := mgmtd.New(mgmtd.Options{
		Engine:             eng,
		Token:              cfg.Token,
		InstanceID:         cfg.InstanceID,
		AdvertiseAddress:   cfg.AdvertiseAddress,
		PrimaryLease:       cfg.PrimaryLease.Duration,
		ScanInterval:       cfg.ScanInterval.Duration,
		HeartbeatInterval:  cfg.HeartbeatInterval.Duration,
		NodeFailureTimeout: cfg.NodeFailureTimeout.Duration,
		Logger:             logger,
	})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("mgmtd: listen on %s: %w", cfg.Listen, err)
	}
	srv.Start(lis)
	var metricsSrv *http.Server
	metricsAddr := ""
	if cfg.MetricsListen != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			srv.Stop()
			return fmt.Errorf("mgmtd: metrics listen on %s: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.MetricsHandler())
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = metricsSrv.Serve(mlis) }()
		metricsAddr = " metrics http://" + mlis.Addr().String() + "/metrics"
		srv.SetMetricsAddress(mgmtdclient.AdvertisedMetricsAddress(mlis.Addr().String(), srv.Addr()))
	}
	fmt.Fprintf(cmd.OutOrStdout(), "mgmtd %s listening on %s kv %s%s\n", srv.ID(), srv.Addr(), eng.Name(), metricsAddr)
	<-ctx.Done()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutCtx)
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(shutCtx)
	}
	logger.Info("mgmtd stopped", "reason", strings.TrimSpace(fmt.Sprint(context.Cause(ctx))))
	return nil
}
