package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/internal/logging"
	"github.com/emberfs/emberfs/storage/service"
)

func init() { subcommands = append(subcommands, newStorageCmd) }

func newStorageCmd() *cobra.Command {
	var (
		configPath  string
		printConfig bool
		token       string
		mgmtdAddrs  string
		nodeID      uint32
	)
	cmd := &cobra.Command{
		Use:   "storage",
		Short: "Run a storage service (chunk targets, CRAQ replication)",
		Long: `Run a storage service with its targets (one directory each). It registers
with mgmtd, heartbeats, follows routing, and serves chunk reads and writes
on its data port (CRAQ along chains) and control calls on gRPC.
Settings come from --config (TOML; see --print-config for every setting and
its default); flags override the file. The token may also come from
EMBERFS_TOKEN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := service.DefaultConfig()
			if configPath != "" {
				var err error
				if cfg, err = service.LoadConfig(configPath); err != nil {
					return err
				}
			}
			f := cmd.Flags()
			if f.Changed("token") {
				cfg.Token = token
			}
			if f.Changed("mgmtd") {
				cfg.Mgmtd = splitAddrs(mgmtdAddrs)
			}
			if f.Changed("node-id") {
				cfg.NodeID = nodeID
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
			logger, err := logging.New(os.Stderr, cfg.LogLevel, "storage")
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			svc, err := service.Start(cfg, logger)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "storage node %d control %s data %s targets %v\n", cfg.NodeID, svc.Addr(), svc.DataAddr(), svc.TargetIDs())
			<-ctx.Done()
			svc.Close()
			logger.Info("storage stopped", "reason", strings.TrimSpace(fmt.Sprint(context.Cause(ctx))))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "TOML config file")
	f.BoolVar(&printConfig, "print-config", false, "print the effective config (defaults, file, flags) and exit")
	f.StringVar(&token, "token", "", "cluster token (overrides the config)")
	f.StringVar(&mgmtdAddrs, "mgmtd", "", "comma-separated mgmtd addresses (overrides the config)")
	f.Uint32Var(&nodeID, "node-id", 0, "node id (overrides the config)")
	return cmd
}
