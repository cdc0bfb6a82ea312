package client_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/service/meta"
)

// A stream of writes far larger than the pipeline reads back intact, from
// this client and a fresh one, after Close.
func TestPipelinedStreamRoundTrip(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	w := newClient(t, c, client.Config{WriteBuffer: 2 * testChunk, WriteInFlight: 3})
	f, err := w.Open(ctx, meta.Root, meta.P("/stream"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(40*testChunk+123, 7)
	// Odd write sizes so buffers start mid-chunk; one write large enough
	// to take the zero-copy path.
	for off, k := 0, 0; off < len(data); k++ {
		n := min([]int{1000, 70000, 3*testChunk + 5, 10 * testChunk}[k%4], len(data)-off)
		if _, err := f.WriteAt(data[off:off+n], int64(off)); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*client.Client{w, newClient(t, c, client.Config{})} {
		got, err := cl.ReadFile(ctx, meta.Root, meta.P("/stream"))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes, %v; want %d equal bytes", len(got), err, len(data))
		}
	}
}
