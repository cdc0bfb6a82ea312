package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
)

func TestRoundTripManySizes(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	for _, checksum := range []bool{false, true} {
		c := newTestClient(t, ClientConfig{Checksum: checksum})
		ctx := testCtx(t)
		for _, size := range []int{0, 1, 100, 4095, 4096, 4097, 64 << 10, 128<<10 + 3, 1 << 20, 4<<20 + 1} {
			data := pattern(size)
			ext := []byte(fmt.Sprintf("ext-%d", size))
			// Into a caller buffer: the payload must land in it, uncopied.
			buf := make([]byte, size+10)
			resp, err := c.Call(ctx, ts.Addr(), &Request{Op: opEcho, Ext: ext, Payload: [][]byte{data}}, buf)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if !bytes.Equal(resp.Payload, data) || !bytes.Equal(resp.Ext, ext) {
				t.Fatalf("size %d (checksum %v): echo mismatch", size, checksum)
			}
			if size > 0 && unsafe.SliceData(resp.Payload) != unsafe.SliceData(buf) {
				t.Fatalf("size %d: payload not received into the caller's buffer", size)
			}
			// Without a buffer: pooled, and split over a scatter list.
			resp, err = c.Call(ctx, ts.Addr(), &Request{Op: opEcho, Payload: [][]byte{data[:size/2], data[size/2:]}}, nil)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if !bytes.Equal(resp.Payload, data) {
				t.Fatalf("size %d: scatter echo mismatch", size)
			}
			resp.Release()
		}
	}
}

func TestConcurrentPipelinedRequests(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	c := newTestClient(t, ClientConfig{ConnsPerAddr: 2})
	ctx := testCtx(t)
	const workers, perWorker = 32, 30
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			buf := make([]byte, 96<<10)
			for i := range perWorker {
				data := make([]byte, rng.IntN(96<<10))
				fillRandom(rng, data)
				ext := []byte(fmt.Sprintf("w%d-i%d", w, i))
				resp, err := c.Call(ctx, ts.Addr(), &Request{Op: opEcho, Ext: ext, Payload: [][]byte{data}}, buf)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(resp.Payload, data) || !bytes.Equal(resp.Ext, ext) {
					errs <- fmt.Errorf("worker %d request %d: response does not match its request", w, i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Everything went over the two pooled connections.
	if d := c.Stats().Dials; d != 2 {
		t.Fatalf("client dialed %d connections, want 2 (multiplexed pool)", d)
	}
	if n := ts.Stats().Requests; n != workers*perWorker {
		t.Fatalf("server saw %d requests, want %d", n, workers*perWorker)
	}
}

func TestTypedErrorsKeepConnection(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	c := newTestClient(t, ClientConfig{ConnsPerAddr: 1})
	ctx := testCtx(t)
	_, err := c.Call(ctx, ts.Addr(), &Request{Op: opFail}, nil)
	wantCode(t, err, errcode.NotFound, "chunk 42 not found")
	if got := err.Error(); got != "not found: chunk 42 not found" {
		t.Fatalf("error text %q repeats or loses parts", got)
	}
	_, err = c.Call(ctx, ts.Addr(), &Request{Op: 777}, nil)
	wantCode(t, err, errcode.NotSupported, "opcode 777")
	_, err = c.Call(ctx, ts.Addr(), &Request{Op: OpHandshake}, nil)
	wantCode(t, err, errcode.InvalidArgument, "not a user opcode")
	if err := c.Ping(ctx, ts.Addr()); err != nil {
		t.Fatal(err)
	}
	if d := c.Stats().Dials; d != 1 {
		t.Fatalf("errors cost connections: %d dials", d)
	}
}

func TestBatchRead(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(5, 6))
	var subs []SubRequest
	type want struct {
		off, n int
		bad    bool
	}
	var wants []want
	total := 0
	for i := range 200 {
		off, n := rng.IntN(len(ts.content)-70000), rng.IntN(65536)
		bad := i%17 == 3
		if bad {
			off = len(ts.content) // past the end
		}
		subs = append(subs, SubRequest{Ext: u64s(uint64(off), uint64(n)), RespSize: n})
		wants = append(wants, want{off, n, bad})
		if !bad {
			total += n
		}
	}
	buf := make([]byte, total)
	br, err := c.CallBatch(ctx, ts.Addr(), opBatchFile, subs, buf)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Release()
	if len(br.Results) != len(subs) {
		t.Fatalf("%d results for %d sub-requests", len(br.Results), len(subs))
	}
	for i, r := range br.Results {
		w := wants[i]
		if w.bad {
			wantCode(t, r.Err, errcode.OutOfRange, "past end")
			continue
		}
		if r.Err != nil {
			t.Fatalf("entry %d: %v", i, r.Err)
		}
		if !bytes.Equal(r.Data, ts.content[w.off:w.off+w.n]) || binary.LittleEndian.Uint64(r.Ext) != uint64(w.off) {
			t.Fatalf("entry %d: wrong data or ext", i)
		}
		if w.n > 0 {
			p := uintptr(unsafe.Pointer(unsafe.SliceData(r.Data)))
			b := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
			if p < b || p >= b+uintptr(len(buf)) {
				t.Fatalf("entry %d: data not in the caller's buffer", i)
			}
		}
	}
	if st := ts.Stats(); st.SendfileBytes+st.PreadBytes != int64(total) || st.CopiedFileByte != 0 {
		t.Fatalf("stats %+v: want %d bytes sent by sendfile or pread, none copied", st, total)
	}

	// A malformed batch table is refused with a clear error; the
	// connection survives it.
	bad := &Request{Op: opBatchFile, Ext: []byte{5, 0, 0, 0}, flags: FlagBatch}
	_, err = c.Call(ctx, ts.Addr(), bad, nil)
	wantCode(t, err, errcode.InvalidArgument, "batch table")
	_, err = c.Call(ctx, ts.Addr(), &Request{Op: opBatchFile}, nil)
	wantCode(t, err, errcode.InvalidArgument, "expects a batch frame")
	_, err = c.CallBatch(ctx, ts.Addr(), opBatchFile, nil, nil)
	wantCode(t, err, errcode.InvalidArgument, "batch of 0")
	if err := c.Ping(ctx, ts.Addr()); err != nil {
		t.Fatal(err)
	}
}

func TestFileRegionUsesSendfile(t *testing.T) {
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("disableSendfile=%v", disable), func(t *testing.T) {
			ts := startTestServer(t, ServerConfig{DisableSendfile: disable})
			c := newTestClient(t, ClientConfig{})
			ctx := testCtx(t)
			var sent, small int64
			for _, r := range [][2]int{{0, 0}, {0, 1}, {12345, 4096}, {1 << 20, 1 << 20}, {100, 4<<20 + 17}, {0, len(ts.content)}} {
				buf := make([]byte, r[1])
				resp, err := c.Call(ctx, ts.Addr(), &Request{Op: opFile, Ext: u64s(uint64(r[0]), uint64(r[1]))}, buf)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(resp.Payload, ts.content[r[0]:r[0]+r[1]]) {
					t.Fatalf("region %v: content mismatch", r)
				}
				sent += int64(r[1])
				if r[1] <= smallRegion {
					small += int64(r[1])
				}
			}
			// The server adds to its counters after sendfile returns, which
			// can be after the client already holds every byte: wait until
			// all bytes are counted, then check which path counted them.
			st := ts.Stats()
			for deadline := time.Now().Add(10 * time.Second); st.SendfileBytes+st.CopiedFileByte+st.PreadBytes < sent && time.Now().Before(deadline); st = ts.Stats() {
				time.Sleep(time.Millisecond)
			}
			if disable && (st.SendfileBytes != 0 || st.PreadBytes != 0 || st.CopiedFileByte != sent) {
				t.Fatalf("copy path: stats %+v, want %d copied", st, sent)
			}
			// Small regions are read into memory and leave with their frame;
			// larger ones go by sendfile.
			if !disable && (st.SendfileBytes != sent-small || st.PreadBytes != small || st.CopiedFileByte != 0) {
				t.Fatalf("sendfile path: stats %+v, want %d read with pread and %d sent with sendfile", st, small, sent-small)
			}
			// A region past the end of the file is refused before anything
			// is sent, so the connection stays good.
			_, err := c.Call(ctx, ts.Addr(), &Request{Op: opFile, Ext: u64s(uint64(len(ts.content)-10), 20)}, nil)
			wantCode(t, err, errcode.Internal, "beyond end of file")
			if err := c.Ping(ctx, ts.Addr()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestChecksummedFileResponse(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	c := newTestClient(t, ClientConfig{Checksum: true})
	resp, err := c.Call(testCtx(t), ts.Addr(), &Request{Op: opFile, Ext: u64s(7, 3<<20)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Release()
	if !bytes.Equal(resp.Payload, ts.content[7:7+3<<20]) {
		t.Fatal("content mismatch")
	}
}

func TestDeadlineAndCancel(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	c := newTestClient(t, ClientConfig{ConnsPerAddr: 1})
	ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	_, err := c.Call(ctx, ts.Addr(), &Request{Op: opBlock}, make([]byte, 16))
	wantCode(t, err, errcode.DeadlineExceeded, "opcode 4")

	ctx2, cancel2 := context.WithCancel(testCtx(t))
	done := make(chan error)
	go func() {
		_, err := c.Call(ctx2, ts.Addr(), &Request{Op: opBlock}, nil)
		done <- err
	}()
	<-ts.entered
	<-ts.entered
	cancel2()
	wantCode(t, <-done, errcode.Canceled, "")

	// The late responses to both abandoned calls are discarded and the
	// connection keeps working.
	ts.release <- struct{}{}
	ts.release <- struct{}{}
	resp, err := c.Call(testCtx(t), ts.Addr(), &Request{Op: opEcho, Payload: [][]byte{[]byte("after")}}, nil)
	if err != nil || string(resp.Payload) != "after" {
		t.Fatalf("call after abandoned ones: %v", err)
	}
	if d := c.Stats().Dials; d != 1 {
		t.Fatalf("deadlines cost connections: %d dials", d)
	}
	if st := c.Stats(); st.InFlightBytes != 0 {
		t.Fatalf("in-flight bytes leaked: %+v", st)
	}
}

func TestServerRestartClientReconnects(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	addr := ts.Addr()
	c := newTestClient(t, ClientConfig{ConnsPerAddr: 1})
	ctx := testCtx(t)
	if err := c.Ping(ctx, addr); err != nil {
		t.Fatal(err)
	}
	inflight := make(chan error)
	go func() {
		_, err := c.Call(ctx, addr, &Request{Op: opBlock}, nil)
		inflight <- err
	}()
	<-ts.entered
	ts.Close()
	wantCode(t, <-inflight, errcode.Unavailable, "lost")
	_, err := c.Call(ctx, addr, &Request{Op: opEcho}, nil)
	wantCode(t, err, errcode.Unavailable, "")

	ts2 := startTestServer(t, ServerConfig{Addr: addr})
	resp, err := c.Call(ctx, addr, &Request{Op: opEcho, Payload: [][]byte{[]byte("back")}}, nil)
	if err != nil || string(resp.Payload) != "back" {
		t.Fatalf("after restart: %v", err)
	}
	if st := c.Stats(); st.Dials != 2 || st.BrokenConns != 1 {
		t.Fatalf("stats %+v: want 2 dials, 1 broken connection", st)
	}
	if ts2.Stats().Conns != 1 {
		t.Fatal("restarted server got no connection")
	}
}

func TestWrongTokenRefused(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	for _, tok := range []string{"not-the-token", ""} {
		c := NewClient(ClientConfig{Token: tok, Logger: testutil.Logger()})
		_, err := c.Call(testCtx(t), ts.Addr(), &Request{Op: opEcho}, nil)
		want := "wrong cluster token"
		if tok == "" {
			want = "missing cluster token"
		}
		wantCode(t, err, errcode.Unauthenticated, want)
		c.Close()
	}
	if n := ts.Stats().AuthFailures; n != 2 {
		t.Fatalf("server counted %d refused handshakes, want 2", n)
	}
	// The server closed those connections; a right token still works.
	if err := newTestClient(t, ClientConfig{}).Ping(testCtx(t), ts.Addr()); err != nil {
		t.Fatal(err)
	}
}

func TestOversizeRequestRefused(t *testing.T) {
	ts := startTestServer(t, ServerConfig{MaxPayload: 1 << 20, MaxExt: 1024})
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	if err := c.Ping(ctx, ts.Addr()); err != nil { // learn the server's limits
		t.Fatal(err)
	}
	_, err := c.Call(ctx, ts.Addr(), &Request{Op: opEcho, Payload: [][]byte{make([]byte, 1<<20+1)}}, nil)
	wantCode(t, err, errcode.InvalidArgument, "exceeds the frame limit of 1048576")
	_, err = c.Call(ctx, ts.Addr(), &Request{Op: opEcho, Ext: make([]byte, 1025)}, nil)
	wantCode(t, err, errcode.InvalidArgument, "header extension of 1025 bytes")
	_, err = c.Call(ctx, ts.Addr(), &Request{Op: opEcho, Payload: [][]byte{make([]byte, DefaultMaxPayload+1)}}, nil)
	wantCode(t, err, errcode.InvalidArgument, "exceeds the frame limit")
	resp, err := c.Call(ctx, ts.Addr(), &Request{Op: opEcho, Payload: [][]byte{make([]byte, 1<<20)}}, nil)
	if err != nil || len(resp.Payload) != 1<<20 {
		t.Fatalf("largest allowed frame: %v", err)
	}
	if ts.Stats().FrameErrors != 0 {
		t.Fatal("client sent an oversize frame instead of refusing it locally")
	}
}

// The in-flight byte budget must hold requests back at the client: with a
// budget for two requests, never more than two reach the server.
func TestInFlightByteCapLimitsConcurrency(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	const size = 64 << 10
	weight := int64(2*HeaderSize + size + size)
	c := newTestClient(t, ClientConfig{MaxInFlightBytes: 2 * weight})
	ctx := testCtx(t)
	const calls = 12
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			resp, err := c.Call(ctx, ts.Addr(), &Request{Op: opBlock, Payload: [][]byte{pattern(size)}}, buf)
			if err == nil && !bytes.Equal(resp.Payload, pattern(size)) {
				err = fmt.Errorf("wrong payload")
			}
			errs <- err
		}()
	}
	for released := 0; released < calls; released++ {
		// Two requests at the server, the rest queued for budget.
		want := min(2, calls-released)
		testutil.WaitUntil(t, "two requests at the server and the rest queued", func() bool {
			st := c.Stats()
			return st.WaitingForBudget == calls-released-want && st.InFlightBytes == int64(want)*weight &&
				ts.active.Load() == int64(want)
		})
		ts.release <- struct{}{}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p := ts.peak.Load(); p != 2 {
		t.Fatalf("peak concurrent requests at the server %d, want 2", p)
	}
	if st := c.Stats(); st.PeakInFlightBytes != 2*weight || st.InFlightBytes != 0 {
		t.Fatalf("stats %+v: want peak %d, now 0", st, 2*weight)
	}
}

func TestGracefulShutdown(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	got := make(chan error)
	go func() {
		resp, err := c.Call(ctx, ts.Addr(), &Request{Op: opBlock, Payload: [][]byte{[]byte("x")}}, nil)
		if err == nil && string(resp.Payload) != "x" {
			err = fmt.Errorf("wrong payload %q", resp.Payload)
		}
		got <- err
	}()
	<-ts.entered
	shut := make(chan error)
	go func() { shut <- ts.Shutdown(ctx) }()
	// Shutdown waits for the running handler, whose response still goes out.
	testutil.WaitUntil(t, "listener to close", func() bool {
		conn, err := net.Dial("tcp", ts.Addr())
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	ts.release <- struct{}{}
	if err := <-got; err != nil {
		t.Fatalf("in-flight request during Shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	_, err := c.Call(ctx, ts.Addr(), &Request{Op: opEcho}, nil)
	wantCode(t, err, errcode.Unavailable, "")
}

func TestBufferPoolClasses(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 4097, 1 << 20, 64 << 20, 64<<20 + 1} {
		b := GetBuffer(n)
		if len(b) != n {
			t.Fatalf("GetBuffer(%d) has length %d", n, len(b))
		}
		if n <= 64<<20 && (cap(b)&(cap(b)-1) != 0 || cap(b) < 4096) {
			t.Fatalf("GetBuffer(%d) capacity %d is not a size class", n, cap(b))
		}
		PutBuffer(b)
	}
}
