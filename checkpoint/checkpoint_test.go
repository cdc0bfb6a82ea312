package checkpoint_test

import (
	"strings"
	"testing"

	"github.com/emberfs/emberfs/checkpoint"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// Many regions: empty, tiny, around and far beyond the chunk size, over
// three shard files, read back in parallel and byte-compared.
func TestRoundTripManyRegions(t *testing.T) {
	c := startCluster(t, 3)
	ctx := ctxT(t)
	s := newStore(t, c, checkpoint.Options{})
	sizes := []int{0, 1, 7, 1024, testChunk - 1, testChunk, testChunk + 1, 3*testChunk + 17, 40 * testChunk, 5,
		2 << 20, 100, 4096, 9*testChunk - 3, 1, 33}
	ts := makeTensors(1, sizes)
	p := saveAll(t, ctx, s, "/job", "step-1", ts, 3, 0)
	if p != "/job/step-1" {
		t.Fatalf("published at %q", p)
	}
	if err := loadAll(ctx, s, p, ts); err != nil {
		t.Fatal(err)
	}
	// A second client (no caches in common) reads the same bytes.
	if err := loadAll(ctx, newStore(t, c, checkpoint.Options{ReadParallel: 3}), p, ts); err != nil {
		t.Fatal(err)
	}
	m, err := s.Inspect(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, n := range sizes {
		total += int64(n)
	}
	if m.Name != "step-1" || m.Format != checkpoint.Format || m.Version != checkpoint.Version || len(m.Tensors) != len(sizes) ||
		m.TotalBytes() != total || len(m.Files) != 3 || string(m.Metadata) != `{"step":7}` && !strings.Contains(string(m.Metadata), `"step": 7`) {
		t.Fatalf("manifest %+v", m)
	}
	if latest, err := s.Latest(ctx, "/job"); err != nil || latest != p {
		t.Fatalf("latest = %q, %v", latest, err)
	}
	// Nothing pending is left behind, and the lease file is gone.
	ents, err := s.Client().ReadDir(ctx, meta.Root, meta.P("/job"), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name, ".") {
			t.Fatalf("left in /job: %s", e.Name)
		}
	}
	// Wrong buffer size: a clear error naming the tensor.
	r, err := s.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.ReadTensors(ctx, []string{ts.names[3]}, [][]byte{make([]byte, 10)})
	if !errcode.Is(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), ts.names[3]) {
		t.Fatalf("wrong-size buffer: %v", err)
	}
	err = r.ReadTensors(ctx, []string{"no.such"}, [][]byte{nil})
	if !errcode.Is(err, errcode.NotFound) || !strings.Contains(err.Error(), "no.such") {
		t.Fatalf("unknown tensor: %v", err)
	}
	// Partial raw ranges.
	tn, _ := r.Tensor(ts.names[8])
	part := make([]byte, 1000)
	if err := r.ReadRanges(ctx, []checkpoint.Range{{File: tn.File, Offset: tn.Offset + 5000, Dst: part}}); err != nil {
		t.Fatal(err)
	}
	if string(part) != string(ts.data[8][5000:6000]) {
		t.Fatal("partial range read different bytes")
	}
}
