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
		tun                    clientTunables
		metricsListen          string
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
			ccfg := client.Config{MgmtdAddrs: mgmtdclient.ParseAddrs(addrs), Token: token, ClientID: clientID}
			if err := tun.apply(&ccfg); err != nil {
				return err
			}
			cctx, ccancel := context.WithTimeout(ctx, connectTimeout)
			c, err := client.New(cctx, ccfg)
			ccancel()
			if err != nil {
				return fmt.Errorf("cannot reach the cluster: no routing from mgmtd at %s within %v (is it running, and are --mgmtd and --token right?): %w", addrs, connectTimeout, err)
			}
			defer c.Close()
			mm := newMountMetrics(true)
			srv, err := fuse.Mount(ctx, instrumentedBackend{fuse.ClientBackend(c), mm}, args[0], opts)
			if err != nil {
				return err
			}
			if metricsListen != "" {
				maddr, err := serveMetrics(ctx, metricsListen, mm.reg)
				if err != nil {
					_ = srv.Unmount()
					return fmt.Errorf("--metrics-listen: %w", err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "metrics at http://%s/metrics\n", maddr)
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
	f.BoolVar(&opts.OwnerOnly, "owner-only", false, "only the mounting user (and root) may use the mount; by default every local user may, with the kernel checking permissions (a user other than root needs user_allow_other in /etc/fuse.conf for that)")
	var allowOther bool
	f.BoolVar(&allowOther, "allow-other", true, "deprecated: every local user may use the mount by default (see --owner-only)")
	_ = f.MarkDeprecated("allow-other", "other users may use the mount by default; --owner-only restricts it")
	f.BoolVar(&opts.ReadOnly, "read-only", false, "mount read-only: every change fails with EROFS")
	f.BoolVar(&opts.Debug, "debug", false, "log every FUSE request")
	f.DurationVar(&connectTimeout, "connect-timeout", 10*time.Second, "how long to wait for the cluster before the mount fails")
	f.DurationVar(&opts.MetaTimeout, "meta-timeout", fuse.DefaultMetaTimeout, "bound on each metadata call; past it the system call fails with ETIMEDOUT")
	f.DurationVar(&opts.AttrTimeout, "attr-timeout", 0, "how long the kernel caches attributes (0: the mount's default, 10 s; open(2) always re-reads them: close-to-open, docs/fuse.md; negative: not at all)")
	f.DurationVar(&opts.EntryTimeout, "entry-timeout", 0, "how long the kernel caches names (0: the mount's default, 10 s; negative: not at all)")
	f.DurationVar(&opts.NegativeTimeout, "negative-timeout", 0, "how long the kernel caches failed lookups, so a name another client creates may stay invisible here that long (0: the mount's default, 1 s; negative: not at all)")
	f.IntVar(&opts.MaxWrite, "max-write", fuse.MaxWrite, "largest FUSE write request in bytes (at most the default)")
	f.StringVar(&metricsListen, "metrics-listen", "", "HTTP address serving this mount's /metrics (e.g. 127.0.0.1:7490; default off, so several mounts on a host do not collide)")
	tun.addFlags(cmd)
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

// clientTunables are the native client's knobs as mount flags; sizes take
// units (64MiB), "off" turns a cache or buffer off.
type clientTunables struct {
	readAhead, writeBuffer, cacheSize string
	cacheTTL                          time.Duration
	parallel, writeInFlight           int
}

func (t *clientTunables) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&t.readAhead, "read-ahead", bytesFlag(client.DefaultReadAhead), `read-ahead window of a sequentially read file ("off" disables)`)
	f.StringVar(&t.writeBuffer, "write-buffer", bytesFlag(client.DefaultWriteBuffer), `write-back buffer of a sequentially written file ("off" disables)`)
	f.StringVar(&t.cacheSize, "cache-size", bytesFlag(client.DefaultCacheBytes), `client hot-data cache ("off" disables)`)
	f.DurationVar(&t.cacheTTL, "cache-ttl", client.DefaultCacheTTL, "how long cached data is trusted against other clients' writes")
	f.IntVar(&t.parallel, "parallel", client.DefaultParallel, "chunk requests the client keeps in flight")
	f.IntVar(&t.writeInFlight, "write-inflight", client.DefaultWriteInFlight, "writes one open file may have sent and not yet acknowledged")
}

func bytesFlag(n int64) string { return fmt.Sprintf("%dMiB", n>>20) }

func (t *clientTunables) apply(cfg *client.Config) error {
	size := func(flag, v string) (int64, error) {
		if v == "off" {
			return -1, nil
		}
		n, err := parseSize(v)
		if err != nil {
			return 0, fmt.Errorf("--%s: %w", flag, err)
		}
		return n, nil
	}
	var err error
	if cfg.ReadAhead, err = size("read-ahead", t.readAhead); err != nil {
		return err
	}
	if cfg.WriteBuffer, err = size("write-buffer", t.writeBuffer); err != nil {
		return err
	}
	if cfg.CacheBytes, err = size("cache-size", t.cacheSize); err != nil {
		return err
	}
	if t.parallel < 1 || t.writeInFlight < 1 || t.cacheTTL <= 0 {
		return fmt.Errorf("--parallel (%d), --write-inflight (%d) and --cache-ttl (%v) must be positive", t.parallel, t.writeInFlight, t.cacheTTL)
	}
	cfg.CacheTTL, cfg.Parallel, cfg.WriteInFlight = t.cacheTTL, t.parallel, t.writeInFlight
	return nil
}
