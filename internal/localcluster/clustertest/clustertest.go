// Package clustertest starts local clusters (internal/localcluster) for
// tests above the native client and connects clients to them, each
// stopped when the test ends. Storage-layer tests use localcluster
// directly (localcluster.StorageOnly): this package imports the client.
package clustertest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
)

// Start starts o for t and closes it when t ends. Unset fields take test
// values: Dir t.TempDir(), the test logger, a heartbeat every 100 ms and
// a 600 ms failure timeout (failures noticed quickly); chunk engines
// never fsync.
func Start(t testing.TB, o localcluster.Options) *localcluster.Cluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Logger == nil {
		o.Logger = testutil.Logger()
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 100 * time.Millisecond
	}
	if o.FailureTimeout == 0 {
		o.FailureTimeout = 600 * time.Millisecond
	}
	o.NoSync = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*testutil.Eventually)
	defer cancel()
	c, err := localcluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

// StartMain starts o for a whole test package, from TestMain (there is no
// testing.TB there): Dir a new temporary directory, the test logger,
// chunk engines without fsync. stop closes the cluster and removes the
// directory.
func StartMain(o localcluster.Options) (c *localcluster.Cluster, stop func(), err error) {
	if o.Dir, err = os.MkdirTemp("", "emberfs-testcluster-"); err != nil {
		return nil, nil, err
	}
	if o.Logger == nil {
		o.Logger = testutil.Logger()
	}
	o.NoSync = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*testutil.Eventually)
	defer cancel()
	if c, err = localcluster.Start(ctx, o); err != nil {
		os.RemoveAll(o.Dir)
		return nil, nil, fmt.Errorf("starting the test cluster: %w", err)
	}
	return c, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Close(ctx)
		os.RemoveAll(o.Dir)
	}, nil
}

// Client connects a native client to c with cfg (its address, token and,
// if unset, logger filled in) and closes it when t ends.
func Client(t testing.TB, c *localcluster.Cluster, cfg client.Config) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	cl, err := NewClient(ctx, c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// NewClient connects a native client to c with cfg (its address, token
// and, if unset, logger filled in), for callers without a testing.TB
// (TestMain, benchmarks' drivers).
func NewClient(ctx context.Context, c *localcluster.Cluster, cfg client.Config) (*client.Client, error) {
	cfg.MgmtdAddrs = c.MgmtdAddrs()
	cfg.Token = c.Token()
	if cfg.Logger == nil {
		cfg.Logger = c.Options().Logger
	}
	return client.New(ctx, cfg)
}
