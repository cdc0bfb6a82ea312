package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/internal/logging"
	"github.com/emberfs/emberfs/storage/service"
)

func init() { subcommands = append(subcommands, newStorageCmd) }

func newStorageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "storage",
		Short: "Run a storage service (chunk targets, CRAQ replication)",
		Long: `Run a storage service with its targets (one directory each). It registers
with mgmtd, heartbeats, follows routing, and serves chunk reads and writes
on its data port (CRAQ along chains) and control calls on gRPC.
Settings come from --config (TOML; see --print-config for every setting and
its default); flags override the file. The token may also come from
EMBERFS_TOKEN, the peer token (peer_token: the secret storage services
prove the storage role to each other with, never given to clients) from
EMBERFS_PEER_TOKEN.`,
		Args: cobra.NoArgs,
	}
	rc := newRoleConfig(cmd, service.DefaultConfig, service.LoadConfig,
		func(c *service.Config) *string { return &c.Token }, func(c *service.Config) string { return c.TOML() })
	f := cmd.Flags()
	f.Var(addrList{&rc.cfg.Mgmtd}, "mgmtd", "comma-separated mgmtd addresses (overrides the config)")
	f.Uint32Var(&rc.cfg.NodeID, "node-id", rc.cfg.NodeID, "node id (overrides the config)")
	f.StringVar(&rc.cfg.PeerToken, "peer-token", "", "peer token shared by the storage services only (overrides the config)")
	rc.secretFromEnv("EMBERFS_PEER_TOKEN", func(c *service.Config) *string { return &c.PeerToken })
	cmd.RunE = rc.runE((*service.Config).Validate, func(ctx context.Context, cmd *cobra.Command, cfg service.Config) error {
		logger, err := logging.New(os.Stderr, cfg.LogLevel, "storage")
		if err != nil {
			return err
		}
		svc, err := service.Start(cfg, logger)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "storage node %d control %s data %s targets %v\n", cfg.NodeID, svc.Addr(), svc.DataAddr(), svc.TargetIDs())
		<-ctx.Done()
		svc.Close()
		logger.Info("storage stopped", "reason", strings.TrimSpace(fmt.Sprint(context.Cause(ctx))))
		return nil
	})
	return cmd
}
