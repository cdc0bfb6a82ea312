package service_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
)

const chunkSize = 64 << 10

// startCluster starts nodes storage services and one chain per replicas
// targets; it returns the cluster, the chain ids and a client.
func startCluster(t *testing.T, nodes, replicas int) (*localcluster.Cluster, []uint32, *storageclient.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	c := startStorage(t, ctx, localcluster.StorageOnly(t.TempDir(), nodes))
	chains, err := c.CreateChains(ctx, replicas)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.StorageClient(storageclient.Config{})
	t.Cleanup(func() { cl.Close() })
	return c, chains, cl
}

// startStorage starts a storage cluster (o from localcluster.StorageOnly)
// without fsync and with the test logger, and stops it when the test ends.
func startStorage(t testing.TB, ctx context.Context, o localcluster.Options) *localcluster.Cluster {
	t.Helper()
	o.NoSync, o.Logger = true, testutil.Logger()
	c, err := localcluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// replicaStates returns each target's committed metadata of a chunk.
func replicaStates(c *localcluster.Cluster, nodes int, id chunkengine.ChunkID) map[int]chunkengine.ChunkMeta {
	out := map[int]chunkengine.ChunkMeta{}
	for n := 1; n <= nodes; n++ {
		s := c.StorageService(n)
		if s == nil {
			continue
		}
		m, _ := s.Engine(s.TargetIDs()[0]).Stat(id)
		out[n] = m
	}
	return out
}

func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes, want %d (contents differ)", what, len(got), len(want))
	}
}
