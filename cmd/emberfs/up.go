package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/logging"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/chunkstore"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/storage/storageclient"
)

func init() {
	subcommands = append(subcommands, newUpCmd)
	// `emberfs meta` gets the storage-backed chunk store (file lengths,
	// truncation, chunk removal) from the native client.
	newMetaChunkStore = func(cache *mgmtdclient.Cache, token string) (meta.ChunkStore, error) {
		return chunkstore.New(cache, storageclient.New(cache, storageclient.Config{Token: token})), nil
	}
}

// demoPath is the file `up` writes and reads back on a fresh directory.
const demoPath = "/hello-emberfs.txt"

func newUpCmd() *cobra.Command {
	var (
		opts      localcluster.Options
		mountDir  string
		logLevel  string
		chunkSize string
		noDemo    bool
		infoFile  string
		metrics   string
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a whole EmberFS cluster in this process (mgmtd, meta, storage), optionally mounted",
		Long: `Run mgmtd, a meta server (Badger in DIR/meta) and N storage services (targets
in DIR/storage<N>/target<I>) in this process, create the chain table on first
start, optionally mount the file system, and print how to connect. Ctrl-C or
SIGTERM unmounts and stops everything cleanly; starting again on the same
--data directory brings back every file. The cluster token is kept in
DIR/token (or given with --token); the storage services' peer token (the
secret chain traffic between them is proved with, which clients never
get) in DIR/peer-token, made at the first start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := parseSize(chunkSize)
			if err != nil {
				return fmt.Errorf("--chunk-size: %w", err)
			}
			opts.ChunkSize = uint32(cs)
			if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
				return err
			}
			if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
				return fmt.Errorf("--data %s: %w", opts.Dir, err)
			}
			logPath := filepath.Join(opts.Dir, "emberfs.log")
			logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return fmt.Errorf("log file: %w", err)
			}
			defer logFile.Close()
			if opts.Logger, err = logging.New(logFile, logLevel, "up"); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			opts.Progress = out
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if !cmd.Flags().Changed("metrics-listen") {
				metrics = defaultUpMetricsListen(opts.MgmtdListen)
			}
			return runUp(ctx, cmd, opts, mountDir, !noDemo, logPath, infoFile, metrics)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Dir, "data", "./data", "directory holding all cluster state")
	f.IntVar(&opts.Storage, "storage", 3, "number of storage services")
	f.IntVar(&opts.Replicas, "replicas", 3, "replication factor of the chain table (first start)")
	f.IntVar(&opts.TargetsPerNode, "targets", 4, "targets per storage service (first start)")
	f.StringVar(&opts.Token, "token", "", "cluster token (default: the one in DIR/token, or a new random one)")
	f.StringVar(&opts.MgmtdListen, "mgmtd-listen", "127.0.0.1:7100", "mgmtd address (port 0 picks a free one)")
	f.StringVar(&opts.MetaListen, "meta-listen", "127.0.0.1:0", "meta server address")
	f.StringVar(&chunkSize, "chunk-size", "4MiB", "chunk size of the root directory (first start)")
	f.BoolVar(&opts.NoSync, "no-sync", false, "do not fsync chunk data (tests, benchmarks)")
	f.StringVar(&mountDir, "mount", "", "mount the file system here through FUSE")
	f.StringVar(&logLevel, "log-level", "info", "level of the logs written to DIR/emberfs.log")
	f.BoolVar(&noDemo, "no-demo", false, "skip writing the demo file on a fresh directory")
	f.StringVar(&infoFile, "info-file", "", `once ready, write {"mgmtd", "token", "meta", "mount", "metrics"} as JSON to this file (for scripts and the Python LocalCluster)`)
	f.StringVar(&metrics, "metrics-listen", "", `HTTP address serving every role's /metrics (default: the mgmtd host, port mgmtd+90, e.g. 7190; port 0 when mgmtd's is 0; "off" disables)`)
	return cmd
}

func runUp(ctx context.Context, cmd *cobra.Command, opts localcluster.Options, mountDir string, demo bool, logPath, infoFile, metricsListen string) error {
	out := cmd.OutOrStdout()
	fresh := false
	if _, err := os.Stat(filepath.Join(opts.Dir, "meta")); errors.Is(err, os.ErrNotExist) {
		fresh = true
	}
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	c, err := localcluster.Start(startCtx, opts)
	cancel()
	if err != nil {
		return fmt.Errorf("starting the cluster (logs in %s): %w", logPath, err)
	}
	defer func() {
		fmt.Fprintln(out, "stopping ...")
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		c.Close(sctx)
		cancel()
		fmt.Fprintln(out, "stopped")
	}()
	cl, err := client.New(ctx, client.Config{ClientID: "emberfs-up", MgmtdAddrs: c.MgmtdAddrs(), Token: c.Token(), Logger: opts.Logger})
	if err != nil {
		return err
	}
	defer cl.Close()
	if fresh && demo {
		if err := writeDemo(ctx, cl); err != nil {
			return fmt.Errorf("demo file: %w", err)
		}
		fmt.Fprintf(out, "wrote and read back %s through the client\n", demoPath)
	}
	var srv *fuse.Server
	mm := newMountMetrics(false)
	if mountDir != "" {
		if err := os.MkdirAll(mountDir, 0o755); err != nil {
			return fmt.Errorf("--mount %s: %w", mountDir, err)
		}
		if srv, err = fuse.Mount(ctx, instrumentedBackend{fuse.ClientBackend(cl), mm}, mountDir, fuse.Options{Logger: opts.Logger}); err != nil {
			return err
		}
	}
	metricsURL := ""
	if metricsListen != "" && metricsListen != "off" {
		maddr, err := serveMetrics(ctx, metricsListen, upGatherer(c, mm, mountDir != ""))
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		metricsURL = "http://" + maddr + "/metrics"
		// One /metrics carries every role of this process: publishing it
		// as mgmtd's lets `emberfs top --mgmtd` find it.
		c.Mgmtd.SetMetricsAddress(maddr)
	}
	addr, tok := c.MgmtdAddr(), c.Token()
	o := c.Options()
	fmt.Fprintf(out, `
EmberFS is up (data in %s, logs in %s)
  mgmtd:    %s
  meta:     %s
  storage:  %d services x %d targets, %d replicas
  token:    %s
Connect:
  export EMBERFS_MGMTD=%s EMBERFS_TOKEN=%s
  emberfs status --mgmtd %s --token %s
  emberfs mount MNT --mgmtd %s --token %s
`, o.Dir, logPath, addr, c.Meta.Addr(), o.Storage, o.TargetsPerNode, o.Replicas, tok, addr, tok, addr, tok, addr, tok)
	if srv != nil {
		fmt.Fprintf(out, "  mounted at %s\n", mountDir)
	}
	if metricsURL != "" {
		fmt.Fprintf(out, "  metrics:  %s (emberfs top --mgmtd %s --token %s)\n", metricsURL, addr, tok)
	}
	if infoFile != "" {
		info := map[string]string{"mgmtd": addr, "token": tok, "meta": c.Meta.Addr(), "mount": mountDir, "metrics": metricsURL}
		if err := writeJSONAtomic(infoFile, info); err != nil {
			return fmt.Errorf("--info-file: %w", err)
		}
		defer os.Remove(infoFile)
	}
	fmt.Fprintln(out, "ready (Ctrl-C stops)")
	unmounted := make(chan struct{})
	if srv != nil {
		go func() { srv.Wait(); close(unmounted) }()
	}
	select {
	case <-ctx.Done():
	case <-unmounted:
		fmt.Fprintf(out, "%s was unmounted from outside\n", mountDir)
	}
	if srv != nil {
		select {
		case <-unmounted:
		default:
			if err := srv.Unmount(); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "unmount %s: %v\n", mountDir, err)
			}
		}
	}
	return nil
}

func writeDemo(ctx context.Context, cl *client.Client) error {
	want := []byte("Hello from EmberFS: this file is striped over chains and replicated.\n")
	if err := cl.WriteFile(ctx, meta.Root, meta.P(demoPath), want, 0o644); err != nil {
		return err
	}
	got, err := cl.ReadFile(ctx, meta.Root, meta.P(demoPath))
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return errcode.New(errcode.Internal, "read back %q, wrote %q", got, want)
	}
	return nil
}

// writeJSONAtomic writes v to path through a temporary file and a rename,
// so a reader polling for path never sees it half written.
func writeJSONAtomic(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// parseSize reads "4MiB", "64KiB", "1048576".
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 4MiB, 64KiB)", s)
	}
	return n * mult, nil
}

// defaultUpMetricsListen puts up's /metrics beside mgmtd: port mgmtd+90
// (7100 -> 7190, the port table of docs/deploy.md), or a free port when
// mgmtd's is chosen by the kernel, so that several test clusters on one
// host never collide.
func defaultUpMetricsListen(mgmtdListen string) string {
	host, port, err := net.SplitHostPort(mgmtdListen)
	if err != nil {
		return "127.0.0.1:0"
	}
	p, err := strconv.Atoi(port)
	if err != nil || p == 0 || p+90 > 65535 {
		return net.JoinHostPort(host, "0")
	}
	return net.JoinHostPort(host, strconv.Itoa(p+90))
}

// upGatherer is every role of the in-process cluster on one /metrics, each
// role's series labelled role (and node for storage).
func upGatherer(c *localcluster.Cluster, mm *mountMetrics, mounted bool) prometheus.Gatherer {
	return mergedGatherer{get: func() []labeledGatherer {
		gs := []labeledGatherer{
			{g: c.Mgmtd.MetricsGatherer(), labels: map[string]string{"role": "mgmtd"}, runtime: true},
			{g: c.Meta.MetricsGatherer(), labels: map[string]string{"role": "meta"}},
		}
		for n := 1; n <= c.Options().Storage; n++ {
			if s := c.StorageService(n); s != nil {
				gs = append(gs, labeledGatherer{g: s.MetricsGatherer(), labels: map[string]string{"role": "storage", "node": strconv.Itoa(n)}})
			}
		}
		if mounted {
			gs = append(gs, labeledGatherer{g: mm.reg, labels: map[string]string{"role": "mount"}})
		}
		return gs
	}}
}
