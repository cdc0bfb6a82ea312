package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
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
	var (
		configPath  string
		printConfig bool
		listen      string
		kvSpec      string
		token       string
		mgmtdAddrs  string
		metrics     string
		advertise   string
	)
	cmd := &cobra.Command{
		Use:   "meta",
		Short: "Run a metadata server (the POSIX namespace over the shared KV)",
		Long: `Run a meta server. It keeps no state of its own: any number of them serve one
namespace over a shared KV (FoundationDB with fdb:; a badger: directory is
usable by one process). It registers with mgmtd as a meta node (clients find
it in routing), takes chain tables for new files from routing, serves /metrics,
and runs the removal collector and the pruner of dead clients' sessions.
Settings come from --config (TOML; see --print-config for every setting and
its default); flags override the file. The token may also come from
EMBERFS_TOKEN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := metad.DefaultConfig()
			if configPath != "" {
				var err error
				if cfg, err = metad.LoadConfig(configPath); err != nil {
					return err
				}
			}
			f := cmd.Flags()
			if f.Changed("listen") {
				cfg.Listen = listen
			}
			if f.Changed("kv") {
				cfg.KV = kvSpec
			}
			if f.Changed("token") {
				cfg.Token = token
			}
			if f.Changed("mgmtd") {
				cfg.Mgmtd = splitAddrs(mgmtdAddrs)
			}
			if f.Changed("metrics-listen") {
				cfg.MetricsListen = metrics
			}
			if f.Changed("advertise") {
				cfg.AdvertiseAddress = advertise
			}
			if cfg.Token == "" {
				cfg.Token = os.Getenv("EMBERFS_TOKEN")
			}
			if printConfig {
				fmt.Fprint(cmd.OutOrStdout(), cfg.TOML())
				return nil
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runMeta(ctx, cfg, cmd)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "TOML config file")
	f.BoolVar(&printConfig, "print-config", false, "print the effective config (defaults, file, flags) and exit")
	f.StringVar(&listen, "listen", "", "gRPC listen address (overrides the config)")
	f.StringVar(&kvSpec, "kv", "", `KV store: "memory", "badger:/dir" or "fdb:/cluster-file" (overrides the config)`)
	f.StringVar(&token, "token", "", "cluster token (overrides the config)")
	f.StringVar(&mgmtdAddrs, "mgmtd", "", `mgmtd addresses, comma separated ("" runs standalone; overrides the config)`)
	f.StringVar(&metrics, "metrics-listen", "", `HTTP address for /metrics ("" disables; overrides the config)`)
	f.StringVar(&advertise, "advertise", "", "address registered in mgmtd for clients (overrides the config)")
	return cmd
}

// runMeta serves until ctx ends (SIGINT, SIGTERM), then stops cleanly.
func runMeta(ctx context.Context, cfg metad.Config, cmd *cobra.Command) error {
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
