package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// LoadSpec describes a closed-loop load: InFlight workers each issuing one
// operation of Size bytes after another for Duration (or until MaxOps
// operations in all, when MaxOps > 0).
type LoadSpec struct {
	Size     int
	InFlight int
	Duration time.Duration
	MaxOps   int64
}

// Result is what a load run measured. MBps is decimal (10^6 bytes/s), as
// Go's testing package prints it.
type Result struct {
	Size     int
	InFlight int
	Ops      int64
	Bytes    int64
	Elapsed  time.Duration
	MBps     float64
	P50      time.Duration
	P99      time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("size=%d inflight=%d ops=%d %.0f MB/s p50=%v p99=%v",
		r.Size, r.InFlight, r.Ops, r.MBps, r.P50, r.P99)
}

// RunLoad drives op from spec.InFlight goroutines (worker is 0..InFlight-1,
// so each can own a connection or buffer) and measures throughput and
// latency percentiles. The first error stops the run and is returned.
// `emberfs bench storage` uses it for both the storage path and the raw
// TCP baseline, so both columns are measured the same way.
func RunLoad(ctx context.Context, spec LoadSpec, op func(ctx context.Context, worker int) error) (Result, error) {
	if spec.InFlight <= 0 || spec.Size < 0 || (spec.Duration <= 0 && spec.MaxOps <= 0) {
		return Result{}, fmt.Errorf("load spec needs in-flight > 0, size >= 0 and a duration or an op count: %+v", spec)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		ops      atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	lat := make([][]time.Duration, spec.InFlight)
	var deadline time.Time
	start := time.Now()
	if spec.Duration > 0 {
		deadline = start.Add(spec.Duration)
	}
	for w := range spec.InFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if spec.MaxOps > 0 && ops.Add(1) > spec.MaxOps {
					return
				}
				t0 := time.Now()
				if err := op(ctx, w); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				t1 := time.Now()
				lat[w] = append(lat[w], t1.Sub(t0))
				if !deadline.IsZero() && t1.After(deadline) {
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return Result{}, firstErr
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := Result{Size: spec.Size, InFlight: spec.InFlight, Ops: int64(len(all)), Elapsed: elapsed}
	r.Bytes = r.Ops * int64(spec.Size)
	r.MBps = float64(r.Bytes) / elapsed.Seconds() / 1e6
	if len(all) > 0 {
		r.P50 = all[len(all)*50/100]
		r.P99 = all[min(len(all)*99/100, len(all)-1)]
	}
	return r, nil
}

// RawMode says which way a raw-TCP baseline moves data.
type RawMode int

const (
	RawRead  RawMode = iota // the server sends Size bytes per request
	RawWrite                // the client sends Size bytes, the server acks
)

func (m RawMode) String() string {
	if m == RawWrite {
		return "write"
	}
	return "read"
}

// RawTCPBaseline measures plain loopback TCP moving size-byte messages
// with inflight connections, one request outstanding on each: the ceiling
// the transport is compared against. The echo server lives in this
// process and is gone when it returns.
func RawTCPBaseline(ctx context.Context, mode RawMode, size, inflight int, d time.Duration) (Result, error) {
	srv, err := startRawServer(size)
	if err != nil {
		return Result{}, err
	}
	defer srv.close()
	conns, err := dialRawWarm(srv.addr(), mode, size, inflight)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	return RunLoad(ctx, LoadSpec{Size: size, InFlight: inflight, Duration: d},
		func(_ context.Context, w int) error { return conns[w].roundTrip() })
}

// rawServer answers each request "[u32 readSize][u32 writeSize] + writeSize
// bytes" with "[u32 readSize] + readSize bytes", with no framing beyond
// that: what any protocol over TCP costs at the least.
type rawServer struct {
	ln   net.Listener
	data []byte
	wg   sync.WaitGroup
	mu   sync.Mutex
	cs   map[net.Conn]struct{}
}

func startRawServer(maxSize int) (*rawServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &rawServer{ln: ln, data: make([]byte, maxSize), cs: map[net.Conn]struct{}{}}
	for i := range s.data {
		s.data[i] = byte(i)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.cs[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go s.serve(c)
		}
	}()
	return s, nil
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }

func (s *rawServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	var hdr [8]byte
	buf := make([]byte, len(s.data))
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		rs, ws := binary.LittleEndian.Uint32(hdr[:]), binary.LittleEndian.Uint32(hdr[4:])
		if int(rs) > len(s.data) || int(ws) > len(buf) {
			return
		}
		if _, err := io.ReadFull(c, buf[:ws]); err != nil {
			return
		}
		out := net.Buffers{hdr[:4], s.data[:rs]}
		if _, err := out.WriteTo(c); err != nil {
			return
		}
	}
}

func (s *rawServer) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.cs {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

type rawClient struct {
	c       net.Conn
	hdr     [8]byte
	out, in []byte
	rs, ws  int
	inHdr   [4]byte
}

func dialRaw(addr string, mode RawMode, size int) (*rawClient, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	rc := &rawClient{c: c}
	if mode == RawWrite {
		rc.ws, rc.out = size, make([]byte, size)
	} else {
		rc.rs, rc.in = size, make([]byte, size)
	}
	binary.LittleEndian.PutUint32(rc.hdr[:], uint32(rc.rs))
	binary.LittleEndian.PutUint32(rc.hdr[4:], uint32(rc.ws))
	return rc, nil
}

// dialRawWarm opens n connections and warms each with a few round trips,
// so TCP autotuning has grown their windows before anything is measured
// (the transport's pooled connections are long-lived and warm too).
func dialRawWarm(addr string, mode RawMode, size, n int) ([]*rawClient, error) {
	conns := make([]*rawClient, 0, n)
	for range n {
		rc, err := dialRaw(addr, mode, size)
		if err == nil {
			for range 16 {
				if err = rc.roundTrip(); err != nil {
					rc.close()
					break
				}
			}
		}
		if err != nil {
			for _, c := range conns {
				c.close()
			}
			return nil, err
		}
		conns = append(conns, rc)
	}
	return conns, nil
}

func (rc *rawClient) roundTrip() error {
	out := net.Buffers{rc.hdr[:], rc.out}
	if _, err := out.WriteTo(rc.c); err != nil {
		return err
	}
	if _, err := io.ReadFull(rc.c, rc.inHdr[:]); err != nil {
		return err
	}
	if int(binary.LittleEndian.Uint32(rc.inHdr[:])) != rc.rs {
		return errors.New("raw tcp baseline: unexpected reply size")
	}
	_, err := io.ReadFull(rc.c, rc.in)
	return err
}

func (rc *rawClient) close() { _ = rc.c.Close() }
