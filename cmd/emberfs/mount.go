package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
)

func init() { subcommands = append(subcommands, newMountCmd, newUmountCmd) }

// newMountCmd is `emberfs mount MNT`: it serves the mount in the foreground
// until it is unmounted (emberfs umount, fusermount3 -u) or gets SIGINT or
// SIGTERM, which unmount it cleanly (open files are closed and their lengths
// finalized as the kernel releases them).
func newMountCmd() *cobra.Command {
	var (
		addrs, token, clientID string
		opts                   fuse.Options
		connectTimeout         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "mount MNT",
		Short: "Mount EmberFS at MNT through FUSE (foreground; Ctrl-C unmounts)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if addrs == "" {
				return fmt.Errorf("--mgmtd is required (or set $EMBERFS_MGMTD)")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// An unreachable cluster fails the mount after connectTimeout
			// with a message saying what was tried, not after minutes.
			cctx, ccancel := context.WithTimeout(ctx, connectTimeout)
			c, err := client.New(cctx, client.Config{MgmtdAddrs: splitAddrs(addrs), Token: token, ClientID: clientID})
			ccancel()
			if err != nil {
				return fmt.Errorf("cannot reach the cluster: no routing from mgmtd at %s within %v (is it running, and are --mgmtd and --token right?): %w", addrs, connectTimeout, err)
			}
			defer c.Close()
			srv, err := fuse.Mount(ctx, fuse.ClientBackend(c), args[0], opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "emberfs mounted at %s (Ctrl-C or `emberfs umount %s` to unmount)\n", args[0], args[0])
			done := make(chan struct{})
			go func() { srv.Wait(); close(done) }()
			select {
			case <-done: // unmounted from outside
				return nil
			case <-ctx.Done():
			}
			if err := srv.Unmount(); err != nil {
				return err
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("unmounted %s but the FUSE server did not stop", args[0])
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addrs, "mgmtd", os.Getenv("EMBERFS_MGMTD"), "mgmtd addresses, comma separated (default $EMBERFS_MGMTD)")
	f.StringVar(&token, "token", os.Getenv("EMBERFS_TOKEN"), "cluster token (default $EMBERFS_TOKEN)")
	f.StringVar(&clientID, "client-id", "", "client id for write sessions (default: host name and process id)")
	f.BoolVar(&opts.WritebackCache, "writeback-cache", false, "let the kernel buffer writes (faster small writes)")
	f.BoolVar(&opts.DirectIO, "direct-io", false, "bypass the page cache for file data")
	f.BoolVar(&opts.AllowOther, "allow-other", false, "let other users use the mount (needs root or user_allow_other in /etc/fuse.conf)")
	f.BoolVar(&opts.Debug, "debug", false, "log every FUSE request")
	f.DurationVar(&connectTimeout, "connect-timeout", 10*time.Second, "how long to wait for the cluster before the mount fails")
	f.DurationVar(&opts.MetaTimeout, "meta-timeout", fuse.DefaultMetaTimeout, "bound on each metadata call; past it the system call fails with ETIMEDOUT")
	f.DurationVar(&opts.AttrTimeout, "attr-timeout", time.Second, "how long the kernel caches attributes (negative: not at all)")
	f.DurationVar(&opts.EntryTimeout, "entry-timeout", time.Second, "how long the kernel caches names (negative: not at all)")
	return cmd
}

func newUmountCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "umount MNT",
		Short: "Unmount an EmberFS FUSE mount",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return fuse.Unmount(args[0])
		},
	}
}

// splitAddrs reads a comma-separated address list, ignoring blanks.
func splitAddrs(s string) []string { return mgmtdclient.ParseAddrs(s) }
