package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/internal/logging"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/metad"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
)

func init() { subcommands = append(subcommands, newMetaCmd) }

// newMetaChunkStore, when set (by the file that wires storage into the
// binary), gives `emberfs meta` its storage-backed ChunkStore. While it is
// nil the meta server runs without storage (see metad.Options.NewChunks).
var newMetaChunkStore func(cache *mgmtdclient.Cache, token string) (meta.ChunkStore, error)

func newMetaCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "meta",
		Short: "Run a metadata server (the POSIX namespace over the shared KV)",
		Long: `Run a meta server. It keeps no state of its own: any number of them serve one
namespace over a shared KV (etcd with etcd:, FoundationDB with fdb:; a badger: directory is
usable by one process). It registers with mgmtd as a meta node (clients find
it in routing), takes chain tables for new files from routing, serves /metrics,
and runs the removal collector and the pruner of dead clients' sessions.
Settings come from --config (TOML; see --print-config for every setting and
its default); flags override the file. The token may also come from
EMBERFS_TOKEN.`,
		Args: cobra.NoArgs,
	}
	rc := newRoleConfig(cmd, metad.DefaultConfig, metad.LoadConfig,
		func(c *metad.Config) *string { return &c.Token }, func(c *metad.Config) string { return c.TOML() })
	f := cmd.Flags()
	f.StringVar(&rc.cfg.Listen, "listen", rc.cfg.Listen, "gRPC listen address (overrides the config)")
	f.StringVar(&rc.cfg.KV, "kv", rc.cfg.KV, `KV store: "memory", "badger:/dir", "fdb:/cluster-file" or "etcd:host:port,host:port[/prefix]" (overrides the config)`)
	f.Var(addrList{&rc.cfg.Mgmtd}, "mgmtd", `mgmtd addresses, comma separated ("" runs standalone; overrides the config)`)
	f.StringVar(&rc.cfg.MetricsListen, "metrics-listen", rc.cfg.MetricsListen, `HTTP address for /metrics ("" disables; overrides the config)`)
	f.StringVar(&rc.cfg.AdvertiseAddress, "advertise", rc.cfg.AdvertiseAddress, "address registered in mgmtd for clients (overrides the config)")
	cmd.RunE = rc.runE((*metad.Config).Validate, runMeta)
	return cmd
}

// runMeta serves until ctx ends (SIGINT, SIGTERM), then stops cleanly.
func runMeta(ctx context.Context, cmd *cobra.Command, cfg metad.Config) error {
	logger, err := logging.New(cmd.ErrOrStderr(), cfg.LogLevel, "meta")
	if err != nil {
		return err
	}
	opts := metad.Options{Config: cfg, Logger: logger}
	if newMetaChunkStore != nil {
		opts.NewChunks = func(cache *mgmtdclient.Cache) (meta.ChunkStore, error) { return newMetaChunkStore(cache, cfg.Token) }
	}
	d, err := metad.Start(ctx, opts)
	if err != nil {
		return err
	}
	metricsNote := ""
	if d.MetricsAddr() != "" {
		metricsNote = " metrics http://" + d.MetricsAddr() + "/metrics"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "meta listening on %s kv %s%s\n", d.Addr(), cfg.KV, metricsNote)
	<-ctx.Done()
	logger.Info("meta stopping", "reason", context.Cause(ctx))
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.Stop(shutCtx)
	logger.Info("meta stopped")
	return nil
}
