package transport

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/emberfs/emberfs/internal/errcode"
)

func inside(d, buf []byte) bool {
	if len(d) == 0 || cap(buf) == 0 {
		return false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(d)))
	b := uintptr(unsafe.Pointer(unsafe.SliceData(buf[:cap(buf)])))
	return p >= b && p < b+uintptr(cap(buf))
}

// Entries land in their own destination when they fit, in a pooled
// buffer when they do not, and failed entries carry their own error;
// with and without payload checksums.
func TestCallBatchInto(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	for _, checksum := range []bool{false, true} {
		c := newTestClient(t, ClientConfig{Checksum: checksum})
		ctx := testCtx(t)
		rng := rand.New(rand.NewPCG(7, 8))
		const n = 120
		subs := make([]SubRequest, n)
		dsts := make([][]byte, n)
		type want struct {
			off, n int
			fits   bool
			bad    bool
		}
		wants := make([]want, n)
		for i := range subs {
			off, size := rng.IntN(len(ts.content)-70000), rng.IntN(65536)
			w := want{off: off, n: size}
			switch i % 5 {
			case 0: // destination too small: pooled buffer
				dsts[i] = make([]byte, 0, size/2)
			case 1: // destination larger than the entry
				dsts[i] = make([]byte, size+100)
				w.fits = true
			case 2: // entry fails on the server
				w.bad, off = true, len(ts.content)
				dsts[i] = make([]byte, size)
			default: // exact fit
				dsts[i] = make([]byte, size)
				w.fits = true
			}
			if size == 0 {
				w.fits = false // nothing lands anywhere
			}
			subs[i] = SubRequest{Ext: u64s(uint64(off), uint64(size)), RespSize: size}
			wants[i] = w
		}
		br, err := c.CallBatchInto(ctx, ts.Addr(), opBatchFile, subs, dsts)
		if err != nil {
			t.Fatal(err)
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
			if !bytes.Equal(r.Data, ts.content[w.off:w.off+w.n]) {
				t.Fatalf("entry %d (checksum %v): wrong data", i, checksum)
			}
			if w.fits != inside(r.Data, dsts[i]) {
				t.Fatalf("entry %d: %d bytes into a destination of cap %d: landed inside %v, want %v", i, w.n, cap(dsts[i]), inside(r.Data, dsts[i]), w.fits)
			}
		}
		br.Release()

		// Destinations must match the entries one to one.
		_, err = c.CallBatchInto(ctx, ts.Addr(), opBatchFile, subs, dsts[:3])
		wantCode(t, err, errcode.InvalidArgument, "destination buffers")
		// A whole-frame error (not a batch handler) fails the call.
		_, err = c.CallBatchInto(ctx, ts.Addr(), opFail, subs[:1], dsts[:1])
		wantCode(t, err, errcode.NotFound, "chunk 42")
		// A plain answer to a batch is an error, not a crash.
		_, err = c.CallBatchInto(ctx, ts.Addr(), opSink, subs[:1], dsts[:1])
		wantCode(t, err, errcode.Internal, "plain response")
		if err := c.Ping(ctx, ts.Addr()); err != nil {
			t.Fatal(err)
		}
	}
}

// A response table that does not add up to the payload fails that call
// only: the stream stays in step and the next call works.
func TestBatchDataSizesMismatch(t *testing.T) {
	reply := BatchReply([]SubReply{{Ext: []byte("a"), Data: Bytes([]byte("xyz"))}, {Err: errcode.New(errcode.NotFound, "gone")}}, nil)
	if _, err := batchDataSizes(reply.Ext, 2, 3); err != nil {
		t.Fatalf("consistent table: %v", err)
	}
	if _, err := batchDataSizes(reply.Ext, 2, 4); err == nil {
		t.Fatal("table of 3 data bytes accepted for a 4-byte payload")
	}
	if _, err := batchDataSizes(reply.Ext, 3, 3); err == nil {
		t.Fatal("2-entry table accepted for 3 sub-requests")
	}
	if _, err := batchDataSizes(reply.Ext[:10], 2, 3); err == nil {
		t.Fatal("truncated table accepted")
	}
}
