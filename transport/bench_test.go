package transport

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

var (
	benchSizes    = []int{4 << 10, 128 << 10, 1 << 20, 4 << 20}
	benchInFlight = []int{1, 4, 16}
)

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// drive runs b.N operations from inflight goroutines.
func drive(b *testing.B, inflight int, op func(worker int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	b.ResetTimer()
	for w := range inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(w); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if e := failed.Load(); e != nil {
		b.Fatal(*e)
	}
}

// BenchmarkTransport moves size-byte payloads through the framed
// transport: reads served from memory and from a file (sendfile), and
// writes; compare with BenchmarkRawTCP in the same run.
//
// read-file sends the file region with sendfile; read-file-copy with
// the server's DisableSendfile (pread into a buffer, then write), which
// on loopback is the faster of the two for large payloads: splicing
// page-cache pages into a TCP socket pushes them a page at a time.
func BenchmarkTransport(b *testing.B) {
	ts := startTestServer(b, ServerConfig{})
	tsCopy := startTestServer(b, ServerConfig{DisableSendfile: true})
	c := newTestClient(b, ClientConfig{})
	ctx := context.Background()
	for _, mode := range []string{"read-mem", "read-file", "read-file-copy", "write"} {
		for _, size := range benchSizes {
			for _, inflight := range benchInFlight {
				b.Run(fmt.Sprintf("%s/%s/inflight=%d", mode, sizeName(size), inflight), func(b *testing.B) {
					b.SetBytes(int64(size))
					bufs := make([][]byte, inflight)
					for i := range bufs {
						bufs[i] = make([]byte, size)
					}
					var req Request
					switch mode {
					case "read-mem":
						req = Request{Op: opPattern, Ext: u64s(uint64(size))}
					case "read-file", "read-file-copy":
						req = Request{Op: opFile, Ext: u64s(0, uint64(size))}
					case "write":
						req = Request{Op: opSink, Payload: [][]byte{pattern(size)}, RespSize: 1}
					}
					addr := ts.Addr()
					if mode == "read-file-copy" {
						addr = tsCopy.Addr()
					}
					drive(b, inflight, func(w int) error {
						r := req
						resp, err := c.Call(ctx, addr, &r, bufs[w])
						if err == nil && mode != "write" && len(resp.Payload) != size {
							err = fmt.Errorf("got %d bytes, want %d", len(resp.Payload), size)
						}
						return err
					})
				})
			}
		}
	}
}

// BenchmarkRawTCP moves the same sizes over plain loopback TCP, one
// connection per in-flight request: the ceiling for BenchmarkTransport.
func BenchmarkRawTCP(b *testing.B) {
	srv, err := startRawServer(4 << 20)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.close()
	for _, mode := range []RawMode{RawRead, RawWrite} {
		for _, size := range benchSizes {
			for _, inflight := range benchInFlight {
				// Dial and warm the connections once, outside b.Run (which
				// calls its function several times): fresh sockets start
				// with small windows, and the transport's pooled ones are warm.
				conns, err := dialRawWarm(srv.addr(), mode, size, inflight)
				if err != nil {
					b.Fatal(err)
				}
				b.Run(fmt.Sprintf("%v/%s/inflight=%d", mode, sizeName(size), inflight), func(b *testing.B) {
					b.SetBytes(int64(size))
					drive(b, inflight, func(w int) error { return conns[w].roundTrip() })
				})
				for _, c := range conns {
					c.close()
				}
			}
		}
	}
}
