package service_test

import (
	"context"
	"sync"
	"testing"

	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/service"
	"github.com/emberfs/emberfs/storage/storageclient"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// recordingTransport is a transport.Factory over real TCP that counts,
// per opcode, the requests its servers served and its callers sent: the
// seam another transport (RDMA) would fill.
type recordingTransport struct {
	mu     sync.Mutex
	served map[transport.Op]int
	sent   map[transport.Op]int
}

type recordingServer struct {
	transport.DataServer
	rt *recordingTransport
}

func (s recordingServer) Handle(op transport.Op, h transport.Handler) {
	s.DataServer.Handle(op, func(ctx context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
		s.rt.mu.Lock()
		s.rt.served[op]++
		s.rt.mu.Unlock()
		return h(ctx, req)
	})
}

type recordingCaller struct {
	transport.Caller
	rt *recordingTransport
}

func (c recordingCaller) Call(ctx context.Context, addr string, req *transport.Request, respBuf []byte) (*transport.Response, error) {
	c.rt.mu.Lock()
	c.rt.sent[req.Op]++
	c.rt.mu.Unlock()
	return c.Caller.Call(ctx, addr, req, respBuf)
}

func (rt *recordingTransport) Listen(cfg transport.ServerConfig) (transport.DataServer, error) {
	s, err := transport.TCP{}.Listen(cfg)
	if err != nil {
		return nil, err
	}
	return recordingServer{s, rt}, nil
}

func (rt *recordingTransport) NewCaller(cfg transport.ClientConfig) transport.Caller {
	return recordingCaller{transport.TCP{}.NewCaller(cfg), rt}
}

func (rt *recordingTransport) counts(op transport.Op) (served, sent int) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.served[op], rt.sent[op]
}

// Client writes and chain forwards both travel on the transport the
// service is given, not on one it builds itself.
func TestServiceUsesInjectedTransport(t *testing.T) {
	rt := &recordingTransport{served: map[transport.Op]int{}, sent: map[transport.Op]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Eventually)
	defer cancel()
	o := localcluster.StorageOnly(t.TempDir(), 3)
	o.StorageConfig = func(_ int, cfg *service.Config) { cfg.Transport = rt }
	c := startStorage(t, ctx, o)
	chains, err := c.CreateChains(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.StorageClient(storageclient.Config{})
	t.Cleanup(func() { cl.Close() })
	const writes = 5
	for i := range writes {
		if _, err := cl.Write(ctx, chains[0], chunkengine.ChunkID{Inode: 9, Index: uint32(i)}, chunkSize, 0, pattern(byte(i), 1000)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, chunkSize)
	if _, err := cl.Read(ctx, chains[0], chunkengine.ChunkID{Inode: 9, Index: 0}, 0, buf, storageclient.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	// At least: a loaded machine can make the client retry a write (a
	// lease lapse, a routing change), and a retry is served again. What
	// matters is that none of this traffic bypassed the injected ends.
	if served, _ := rt.counts(wire.OpWrite); served < writes {
		t.Fatalf("the injected servers served %d client writes, want at least %d", served, writes)
	}
	// Each write goes head -> middle -> tail: two forwards, sent by the
	// services' injected callers and served by their injected servers.
	served, sent := rt.counts(wire.OpForward)
	if served < 2*writes || sent < 2*writes {
		t.Fatalf("chain forwards: %d served, %d sent through the injected transport, want at least %d each", served, sent, 2*writes)
	}
	if served, _ := rt.counts(wire.OpRead); served < 1 {
		t.Fatalf("the injected servers served %d reads, want at least 1", served)
	}
}
