package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
)

const testToken = "test-cluster-token"

// Opcodes the test server registers.
const (
	opEcho      Op = 1 // response = request ext and payload
	opPattern   Op = 2 // ext u64 size: response = pattern(size) from memory
	opFile      Op = 3 // ext u64 off, u64 len: response = file region
	opBlock     Op = 4 // blocks until the test releases it or ctx ends
	opFail      Op = 5 // always NotFound
	opBatchFile Op = 6 // batch: sub ext u64 off, u64 len of the file
	opSink      Op = 7 // swallows the payload, answers empty
)

// testServer is a real server on 127.0.0.1 with the handlers above.
type testServer struct {
	*Server
	file     *os.File
	content  []byte
	release  chan struct{}
	entered  chan struct{}
	active   atomic.Int64
	peak     atomic.Int64
	patterns []byte
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func u64s(vs ...uint64) []byte {
	b := make([]byte, 8*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	return b
}

func startTestServer(t testing.TB, cfg ServerConfig) *testServer {
	t.Helper()
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger()
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ts := &testServer{Server: srv, release: make(chan struct{}, 1024), entered: make(chan struct{}, 1024),
		patterns: pattern(8 << 20)}
	ts.content = make([]byte, 6<<20)
	fillRandom(rand.New(rand.NewPCG(1, 2)), ts.content)
	path := filepath.Join(t.TempDir(), "chunk")
	if err := os.WriteFile(path, ts.content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ts.file = f
	ts.register(srv)
	return ts
}

func (ts *testServer) register(srv *Server) {
	srv.Handle(opEcho, func(_ context.Context, req *ServerRequest) (*ServerResponse, error) {
		return &ServerResponse{Ext: req.Ext, Payload: []Segment{Bytes(req.Payload)}}, nil
	})
	srv.Handle(opPattern, func(_ context.Context, req *ServerRequest) (*ServerResponse, error) {
		n := binary.LittleEndian.Uint64(req.Ext)
		return &ServerResponse{Payload: []Segment{Bytes(ts.patterns[:n])}}, nil
	})
	srv.Handle(opFile, func(_ context.Context, req *ServerRequest) (*ServerResponse, error) {
		off, n := binary.LittleEndian.Uint64(req.Ext), binary.LittleEndian.Uint64(req.Ext[8:])
		return &ServerResponse{Payload: []Segment{FileRegion(ts.file, int64(off), int64(n))}}, nil
	})
	srv.Handle(opBlock, func(ctx context.Context, req *ServerRequest) (*ServerResponse, error) {
		cur := ts.active.Add(1)
		defer ts.active.Add(-1)
		for {
			p := ts.peak.Load()
			if cur <= p || ts.peak.CompareAndSwap(p, cur) {
				break
			}
		}
		ts.entered <- struct{}{}
		select {
		case <-ts.release:
			return &ServerResponse{Payload: []Segment{Bytes(req.Payload)}}, nil
		case <-ctx.Done():
			return nil, errcode.New(errcode.Canceled, "connection closed")
		}
	})
	srv.Handle(opSink, func(context.Context, *ServerRequest) (*ServerResponse, error) {
		return &ServerResponse{}, nil
	})
	srv.Handle(opFail, func(context.Context, *ServerRequest) (*ServerResponse, error) {
		return nil, errcode.New(errcode.NotFound, "chunk 42 not found")
	})
	srv.Handle(opBatchFile, HandleBatch(func(_ context.Context, _ *ServerRequest, subs []SubRequest) ([]SubReply, func(), error) {
		out := make([]SubReply, len(subs))
		for i, s := range subs {
			if len(s.Ext) != 16 {
				out[i].Err = errcode.New(errcode.InvalidArgument, "sub-request %d: ext of %d bytes, want 16", i, len(s.Ext))
				continue
			}
			off, n := binary.LittleEndian.Uint64(s.Ext), binary.LittleEndian.Uint64(s.Ext[8:])
			if off+n > uint64(len(ts.content)) {
				out[i].Err = errcode.New(errcode.OutOfRange, "range [%d, %d) past end", off, off+n)
				continue
			}
			out[i].Ext = u64s(off)
			out[i].Data = FileRegion(ts.file, int64(off), int64(n))
		}
		return out, nil, nil
	}))
}

func newTestClient(t testing.TB, cfg ClientConfig) *Client {
	t.Helper()
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger()
	}
	c := NewClient(cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t testing.TB, err error, code errcode.Code, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", code)
	}
	if !errcode.Is(err, code) {
		t.Fatalf("got %v (code %v), want code %v", err, errcode.CodeOf(err), code)
	}
	if substr != "" && !bytes.Contains([]byte(err.Error()), []byte(substr)) {
		t.Fatalf("error %q does not mention %q", err, substr)
	}
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
}
