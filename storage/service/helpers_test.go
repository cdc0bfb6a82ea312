package service_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/localcluster"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// Generous bound for "eventually": the machine is shared and slow under
// -race; nothing asserts on how fast things happen.
const eventually = 30 * time.Second

const chunkSize = 64 << 10

func testLogger() *slog.Logger {
	if os.Getenv("STORAGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startCluster starts nodes storage services and one chain per replicas
// targets; it returns the cluster, the chain ids and a client.
func startCluster(t *testing.T, nodes, replicas int) (*localcluster.Cluster, []uint32, *storageclient.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: t.TempDir(), Nodes: nodes, NoSync: true, Logger: testLogger()})
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

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
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
