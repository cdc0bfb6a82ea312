package checkpoint_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/emberfs/emberfs/checkpoint"
	"github.com/emberfs/emberfs/checkpoint/ckptbench"
	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/localcluster/clustertest"
	"github.com/emberfs/emberfs/service/meta"
)

// benchCluster is a replicas-1 cluster with the production chunk size
// (4 MiB), so profiles show the real per-chunk and per-region costs.
func benchCluster(b *testing.B) *checkpoint.Store {
	b.Helper()
	c := clustertest.Start(b, localcluster.Options{Storage: 3, Replicas: 1, TargetsPerNode: 2})
	return checkpoint.New(clustertest.Client(b, c, client.Config{}), meta.Root, checkpoint.Options{})
}

// benchState is the benchmark's mixed state dict (ckptbench.Sizes) of
// 256 MiB: 1 KiB to 64 KiB regions, then 128 MiB down to 128 KiB.
func benchState() tensorSet {
	sizes := ckptbench.Sizes(256 << 20)
	return makeTensors(3, sizes)
}

func benchSave(b *testing.B, s *checkpoint.Store, ts tensorSet, dir, name string) string {
	ctx := context.Background()
	sv, err := s.Begin(ctx, dir, name)
	if err != nil {
		b.Fatal(err)
	}
	w, err := s.OpenShard(ctx, sv.Pending, "rank-0.bin")
	if err != nil {
		b.Fatal(err)
	}
	out, err := w.Write(ts.data)
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	var m checkpoint.Manifest
	for i, x := range out {
		m.Tensors = append(m.Tensors, checkpoint.Tensor{Name: ts.names[i], File: "rank-0.bin", Offset: x.Offset, Length: x.Length, CRC32C: x.CRC32C})
	}
	p, err := sv.Commit(ctx, &m, 0)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkSave(b *testing.B) {
	s := benchCluster(b)
	ts := benchState()
	var total int64
	for _, d := range ts.data {
		total += int64(len(d))
	}
	b.SetBytes(total)
	b.ResetTimer()
	for i := range b.N {
		benchSave(b, s, ts, "/bench-save", fmt.Sprintf("c%d", i))
	}
}

func BenchmarkLoad(b *testing.B) {
	s := benchCluster(b)
	ts := benchState()
	p := benchSave(b, s, ts, "/bench-load", "c")
	var total int64
	for _, d := range ts.data {
		total += int64(len(d))
	}
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		if err := loadAll(context.Background(), s, p, ts); err != nil {
			b.Fatal(err)
		}
	}
}
