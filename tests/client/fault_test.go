package client_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/service/meta"
)

// A storage service stops abruptly while one client writes and another
// reads: every acknowledged write (Flush returned) is intact, reads go on
// without an error, and the stopped service catches up after a restart.
func TestStorageServiceStopsDuringWritesAndReads(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	w := newClient(t, c, client.Config{WriteBuffer: 2 * testChunk})
	r := newClient(t, c, client.Config{ReadAhead: testChunk, CacheBytes: -1})

	readData := pattern(12*testChunk, 10)
	if err := w.WriteFile(ctx, meta.Root, meta.P("/stable"), readData, 0o644); err != nil {
		t.Fatal(err)
	}

	var stopped atomic.Bool
	var reads, readsAfterStop atomic.Int64
	readerDone := make(chan error, 1)
	stopReader := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopReader:
				readerDone <- nil
				return
			default:
			}
			got, err := r.ReadFile(ctx, meta.Root, meta.P("/stable"))
			if err != nil {
				readerDone <- fmt.Errorf("read during the fault: %w", err)
				return
			}
			if !bytes.Equal(got, readData) {
				readerDone <- fmt.Errorf("read during the fault returned wrong data (%d bytes)", len(got))
				return
			}
			reads.Add(1)
			if stopped.Load() {
				readsAfterStop.Add(1)
			}
		}
	}()

	f, err := w.Open(ctx, meta.Root, meta.P("/written"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	const blocks = 60
	block := testChunk / 2
	m := &model{}
	var once sync.Once
	for i := range blocks {
		p := pattern(block, byte(i))
		if _, err := f.WriteAt(p, int64(i*block)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if i%3 == 2 {
			if err := f.Flush(); err != nil {
				t.Fatalf("flush after block %d: %v", i, err)
			}
		}
		m.writeAt(p, int64(i*block))
		if i == blocks/3 {
			once.Do(func() {
				c.StopStorage(2)
				stopped.Store(true)
			})
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// Let the reader run a few full reads with the replica gone.
	deadline := time.Now().Add(20 * time.Second)
	for readsAfterStop.Load() < 3 && time.Now().Before(deadline) {
		select {
		case err := <-readerDone:
			t.Fatal(err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(stopReader)
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	if readsAfterStop.Load() < 3 {
		t.Fatalf("only %d reads completed after the stop", readsAfterStop.Load())
	}
	verifyFile(t, newClient(t, c, client.Config{}), "/written", m)

	// Restart: the service resyncs and serves again; data still intact.
	if err := c.StartStorage(2); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.WaitHealthy(wctx, 0); err != nil {
		t.Fatal(err)
	}
	verifyFile(t, newClient(t, c, client.Config{}), "/written", m)
	verifyFile(t, newClient(t, c, client.Config{}), "/stable", &model{data: readData})
	t.Logf("%d full reads, %d after the stop", reads.Load(), readsAfterStop.Load())
}
