package client_test

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/storage/storageclient"
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

// Writes that fail in the background are not lost: with every storage
// service down, buffered writes return at once and the next Flush (which
// Close and Sync share) reports the failure.
func TestPipelineErrorReportedByFlush(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	w := newClient(t, c, client.Config{WriteBuffer: testChunk, Storage: storageclient.Config{RetryTimeout: 500 * time.Millisecond}})
	f, err := w.Open(ctx, meta.Root, meta.P("/lost"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 3; n++ {
		c.StopStorage(n)
	}
	var werr error
	data := pattern(testChunk, 3)
	for i := 0; i < 4 && werr == nil; i++ {
		_, werr = f.WriteAt(data, int64(i*testChunk))
	}
	ferr := f.Flush()
	if werr == nil && ferr == nil {
		t.Fatal("writes with every storage service down: no error from WriteAt or Flush")
	}
	t.Logf("WriteAt: %v; Flush: %v", werr, ferr)
	if err := f.Flush(); err != nil {
		t.Fatalf("an error is reported once, then Flush has nothing to send: %v", err)
	}
	for n := 1; n <= 3; n++ {
		if err := c.StartStorage(n); err != nil {
			t.Fatal(err)
		}
	}
	_ = f.Close()
}
