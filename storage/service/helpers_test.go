package service_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/localcluster"
	"github.com/emberfs/emberfs/storage/storageclient"
)

const chunkSize = 64 << 10

// startCluster starts nodes storage services and one chain per replicas
// targets; it returns the cluster, the chain ids and a client.
func startCluster(t *testing.T, nodes, replicas int) (*localcluster.Cluster, []uint32, *storageclient.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: t.TempDir(), Nodes: nodes, NoSync: true, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	chains, err := c.CreateChains(ctx, replicas)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Client(storageclient.Config{})
	t.Cleanup(func() { cl.Close() })
	return c, chains, cl
}

// replicaStates returns each target's committed metadata of a chunk.
func replicaStates(c *localcluster.Cluster, nodes int, id chunkengine.ChunkID) map[int]chunkengine.ChunkMeta {
	out := map[int]chunkengine.ChunkMeta{}
	for n := 1; n <= nodes; n++ {
		s := c.Service(n)
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
