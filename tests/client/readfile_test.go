package client_test

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/service/meta"
)

// metaCalls is how many times meta served each method, from its metrics.
func metaCalls(t *testing.T, c *localcluster.Cluster) map[string]float64 {
	t.Helper()
	fams, err := c.Meta.MetricsGatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "emberfs_meta_requests_total" {
			continue
		}
		for _, m := range f.Metric {
			out[label(m, "method")] += m.GetCounter().GetValue()
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, lp := range m.Label {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

// ReadFileAt reads a whole file (and parts of one) with one meta call and
// no session: no Close reaches meta, and the read leaves nothing that
// keeps the file's data after an unlink.
func TestReadFileAt(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	cl := newClient(t, c, client.Config{})
	data := pattern(2*testChunk+321, 9) // three chunks on three chains
	if err := cl.WriteFile(ctx, meta.Root, meta.P("/small"), data, 0o644); err != nil {
		t.Fatal(err)
	}

	before := metaCalls(t, c)
	buf := make([]byte, len(data)+10)
	size, n, err := cl.ReadFileAt(ctx, meta.Root, meta.P("/small"), buf, 0)
	if err != nil || size != int64(len(data)) || n != len(data) || !bytes.Equal(buf[:n], data) {
		t.Fatalf("whole read: size %d, n %d, err %v, equal %v", size, n, err, bytes.Equal(buf[:n], data))
	}
	after := metaCalls(t, c)
	if d := after["Open"] - before["Open"]; d != 1 {
		t.Fatalf("ReadFileAt made %v meta Open calls, want 1", d)
	}
	if d := after["Close"] - before["Close"]; d != 0 {
		t.Fatalf("ReadFileAt made %v meta Close calls, want 0 (no session to end)", d)
	}
	// Open+ReadAt+Close, for comparison, ends a session at Close.
	f, err := cl.Open(ctx, meta.Root, meta.P("/small"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if d := metaCalls(t, c)["Close"] - after["Close"]; d != 1 {
		t.Fatalf("a read Open+Close made %v meta Close calls, want 1 (the comparison is void)", d)
	}

	// Part of the file: a short buffer at an offset; the size says more is there.
	part := make([]byte, 1000)
	size, n, err = cl.ReadFileAt(ctx, meta.Root, meta.P("/small"), part, testChunk-500)
	if err != nil || size != int64(len(data)) || n != 1000 || !bytes.Equal(part, data[testChunk-500:testChunk+500]) {
		t.Fatalf("part read across a chunk boundary: size %d, n %d, err %v", size, n, err)
	}
	// At the end: fewer bytes, no error.
	size, n, err = cl.ReadFileAt(ctx, meta.Root, meta.P("/small"), part, int64(len(data)-10))
	if err != nil || n != 10 || !bytes.Equal(part[:10], data[len(data)-10:]) {
		t.Fatalf("read at the end: size %d, n %d, err %v", size, n, err)
	}

	// Errors carry their errno.
	if _, _, err := cl.ReadFileAt(ctx, meta.Root, meta.P("/missing"), buf, 0); errcode.ErrnoOf(err) != syscall.ENOENT {
		t.Fatalf("missing file: %v, want ENOENT", err)
	}
	if _, err := cl.Mkdir(ctx, meta.Root, meta.P("/dir"), 0o755, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.ReadFileAt(ctx, meta.Root, meta.P("/dir"), buf, 0); errcode.ErrnoOf(err) != syscall.EISDIR {
		t.Fatalf("directory: %v, want EISDIR", err)
	}
	if err := cl.WriteFile(ctx, meta.Root, meta.P("/secret"), data[:10], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.ReadFileAt(ctx, meta.User{UID: 1000, GID: 1000}, meta.P("/secret"), buf, 0); errcode.ErrnoOf(err) != syscall.EACCES {
		t.Fatalf("unreadable file: %v, want EACCES", err)
	}

	// Nothing held: once unlinked and collected, storage keeps no byte.
	st, err := cl.Meta().Stat(ctx, meta.Root, meta.P("/small"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Remove(ctx, meta.Root, meta.P("/small")); err != nil {
		t.Fatal(err)
	}
	collectAll(t, ctx, c)
	if l := chunkLength(t, ctx, cl, st); l != 0 {
		t.Fatalf("after unlink and collection storage still holds %d bytes: a read left a session behind", l)
	}
}
