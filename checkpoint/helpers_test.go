package checkpoint_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/emberfs/emberfs/checkpoint"
	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/localcluster/clustertest"
	"github.com/emberfs/emberfs/service/meta"
)

// testChunk is small so that modest regions cross many chunks.
const testChunk = 64 << 10

func startCluster(t *testing.T, replicas int) *localcluster.Cluster {
	t.Helper()
	return clustertest.Start(t, localcluster.Options{Storage: 3, Replicas: replicas, TargetsPerNode: 2, ChunkSize: testChunk})
}

func newStore(t *testing.T, c *localcluster.Cluster, opts checkpoint.Options) *checkpoint.Store {
	t.Helper()
	return newStoreCfg(t, c, client.Config{}, opts)
}

func newStoreCfg(t *testing.T, c *localcluster.Cluster, cfg client.Config, opts checkpoint.Options) *checkpoint.Store {
	t.Helper()
	return checkpoint.New(clustertest.Client(t, c, cfg), meta.Root, opts)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tensorSet is a set of named regions with random contents.
type tensorSet struct {
	names []string
	data  [][]byte
}

func makeTensors(seed uint64, sizes []int) tensorSet {
	r := rand.New(rand.NewPCG(seed, 1))
	var ts tensorSet
	for i, n := range sizes {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		ts.names = append(ts.names, "layer."+string(rune('a'+i%26))+"."+itoa(i))
		ts.data = append(ts.data, b)
	}
	return ts
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// writeShard writes ts into shard file of pending and returns manifest
// entries for them.
func writeShard(t *testing.T, ctx context.Context, s *checkpoint.Store, pending, file string, ts tensorSet) []checkpoint.Tensor {
	t.Helper()
	w, err := s.OpenShard(ctx, pending, file)
	if err != nil {
		t.Fatal(err)
	}
	var out []checkpoint.Tensor
	// Hand the regions over in a few batches, as a caller streaming a
	// state dict would.
	for lo := 0; lo < len(ts.data); lo += 5 {
		hi := min(lo+5, len(ts.data))
		ws, err := w.Write(ts.data[lo:hi])
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range ws {
			k := lo + i
			if x.Length != int64(len(ts.data[k])) || x.CRC32C != crc32c.Checksum(ts.data[k]) {
				t.Fatalf("region %d: written %+v, want length %d crc %08x", k, x, len(ts.data[k]), crc32c.Checksum(ts.data[k]))
			}
			out = append(out, checkpoint.Tensor{Name: ts.names[k], File: file, Offset: x.Offset, Length: x.Length,
				Dtype: "uint8", Shape: []int64{x.Length}, CRC32C: x.CRC32C})
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// saveAll saves ts as checkpoint name in dir, split over nshards shard files.
func saveAll(t *testing.T, ctx context.Context, s *checkpoint.Store, dir, name string, ts tensorSet, nshards, keep int) string {
	t.Helper()
	sv, err := s.Begin(ctx, dir, name)
	if err != nil {
		t.Fatal(err)
	}
	var m checkpoint.Manifest
	for r := range nshards {
		var part tensorSet
		for i := r; i < len(ts.data); i += nshards {
			part.names = append(part.names, ts.names[i])
			part.data = append(part.data, ts.data[i])
		}
		m.Tensors = append(m.Tensors, writeShard(t, ctx, s, sv.Pending, "rank-"+itoa(r)+".bin", part)...)
	}
	m.Metadata = []byte(`{"step": 7}`)
	p, err := sv.Commit(ctx, &m, keep)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// loadAll reads every tensor of ts from the checkpoint at p and compares.
func loadAll(ctx context.Context, s *checkpoint.Store, p string, ts tensorSet) error {
	r, err := s.Open(ctx, p)
	if err != nil {
		return err
	}
	defer r.Close()
	dsts := make([][]byte, len(ts.data))
	for i := range dsts {
		dsts[i] = make([]byte, len(ts.data[i]))
	}
	if err := r.ReadTensors(ctx, ts.names, dsts); err != nil {
		return err
	}
	for i := range dsts {
		if string(dsts[i]) != string(ts.data[i]) {
			return &mismatch{ts.names[i]}
		}
	}
	return nil
}

type mismatch struct{ name string }

func (m *mismatch) Error() string { return "tensor " + m.name + " read back different bytes" }
