package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/localcluster/clustertest"
)

// testChunk is small so that modest writes cross many chunk boundaries.
const testChunk = 64 << 10

// startCluster runs mgmtd, meta and 3 storage services (3 targets each,
// 3 chains of 3 replicas) in a temp dir.
func startCluster(t *testing.T) *localcluster.Cluster {
	t.Helper()
	return clustertest.Start(t, localcluster.Options{Storage: 3, Replicas: 3, TargetsPerNode: 3, ChunkSize: testChunk})
}

func newClient(t *testing.T, c *localcluster.Cluster, cfg client.Config) *client.Client {
	t.Helper()
	return clustertest.Client(t, c, cfg)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
