package transport

import (
	"sync"
	"testing"

	"github.com/emberfs/emberfs/internal/testutil"
)

// TestServerMemoryBudget (issue 13, hole 7): request bodies held by
// running handlers count against one server-wide budget; a frame that
// does not fit waits unread (backpressure) instead of being allocated.
// Before the budget, one connection could pin MaxPayload x
// MaxInFlightPerConn bytes.
func TestServerMemoryBudget(t *testing.T) {
	const budget, size = 1 << 20, 400 << 10
	ts := startTestServer(t, ServerConfig{MaxBufferedBytes: budget})
	cl := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := cl.Call(ctx, ts.Addr(), &Request{Op: opBlock, Payload: [][]byte{make([]byte, size)}}, nil)
			if err == nil {
				resp.Release()
			}
			errs <- err
		}()
	}
	// Two 400 KiB bodies fit in 1 MiB; the third waits for memory.
	<-ts.entered
	<-ts.entered
	testutil.WaitUntil(t, "the third request waits for memory", func() bool { return ts.Stats().MemoryWaiters == 1 })
	if st := ts.Stats(); st.BufferedBytes != 2*size || ts.active.Load() != 2 {
		t.Fatalf("buffered %d bytes with %d handlers running, want %d and 2", st.BufferedBytes, ts.active.Load(), 2*size)
	}
	ts.release <- struct{}{}
	<-ts.entered // the third one got its memory
	ts.release <- struct{}{}
	ts.release <- struct{}{}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// A request's memory is released once its response has been written,
	// which the client may see a moment before the server's writer
	// finishes: wait for it.
	testutil.WaitUntil(t, "request memory released", func() bool { return ts.Stats().BufferedBytes == 0 })
	if st := ts.Stats(); st.BufferedBytes != 0 || ts.peak.Load() != 2 {
		t.Fatalf("after: %d bytes buffered, peak %d handlers; want 0 and 2", st.BufferedBytes, ts.peak.Load())
	}
}

// TestServerConnectionLimit: past MaxConns, new connections are closed
// at once; the existing ones keep working.
func TestServerConnectionLimit(t *testing.T) {
	ts := startTestServer(t, ServerConfig{MaxConns: 2})
	ctx := testCtx(t)
	ping := func(cl *Client) error {
		resp, err := cl.Call(ctx, ts.Addr(), &Request{Op: opEcho, Ext: []byte("x")}, nil)
		if err == nil {
			resp.Release()
		}
		return err
	}
	a := newTestClient(t, ClientConfig{ConnsPerAddr: 1})
	b := newTestClient(t, ClientConfig{ConnsPerAddr: 1})
	for _, cl := range []*Client{a, b} {
		if err := ping(cl); err != nil {
			t.Fatal(err)
		}
	}
	c := newTestClient(t, ClientConfig{ConnsPerAddr: 1})
	if err := ping(c); err == nil {
		t.Fatalf("a third connection was served with MaxConns 2")
	}
	if st := ts.Stats(); st.RefusedConns == 0 || st.ActiveConns != 2 {
		t.Fatalf("refused %d, active %d; want > 0 and 2", st.RefusedConns, st.ActiveConns)
	}
	if err := ping(a); err != nil {
		t.Fatalf("existing connection after the refusal: %v", err)
	}
}
