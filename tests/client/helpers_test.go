package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
)

// testChunk is small so that modest writes cross many chunk boundaries.
const testChunk = 64 << 10

// startCluster runs mgmtd, meta and 3 storage services (3 targets each,
// 3 chains of 3 replicas) in a temp dir.
func startCluster(t *testing.T) *localcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: t.TempDir(), Storage: 3, Replicas: 3, TargetsPerNode: 3,
		ChunkSize: testChunk, NoSync: true, Logger: testutil.Logger(),
		HeartbeatInterval: 100 * time.Millisecond, FailureTimeout: 600 * time.Millisecond})
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

func newClient(t *testing.T, c *localcluster.Cluster, cfg client.Config) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := c.NewClient(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
