package tests

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/proto/storagepb"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
	"github.com/emberfs/emberfs/tests/testproc"
)

const (
	chunkSize = 64 << 10
	block     = 4096
)

func blockOf(w, i int) []byte {
	b := make([]byte, block)
	for k := range b {
		b[k] = byte(w*31 + i + k*7)
	}
	binary.LittleEndian.PutUint32(b, uint32(w))
	binary.LittleEndian.PutUint32(b[4:], uint32(i))
	return b
}

// TestSIGKILLMiddleThenHeadDuringWrites runs mgmtd and three storage
// processes with one 3-replica chain. While writers stream appends, it
// SIGKILLs the middle target's process, then the head's; the chain keeps
// taking writes on the survivor. Both processes restart on their
// directories, resync and serve again. Every acknowledged write is read
// back from every replica, and all replicas end with identical chunk
// metadata (versions, lengths, CRC32C).
func TestSIGKILLMiddleThenHeadDuringWrites(t *testing.T) {
	dir := t.TempDir()
	mgmtdAddr := testproc.StartMgmtd(t, emberfsBin, dir, token)
	nodes := map[int]*storageNode{}
	for id := 1; id <= 3; id++ {
		nodes[id] = newStorageNode(t, dir, id, mgmtdAddr)
		nodes[id].start(t)
	}
	conn, err := mgmtdclient.Dial([]string{mgmtdAddr}, token)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cache := mgmtdclient.NewCache(conn)
	cache.Start()
	defer cache.Close()
	ctx := testproc.Ctx(t)
	if _, err := cache.WaitFor(ctx, func(r *routing.Routing) bool { return len(r.Info.Targets) == 3 }); err != nil {
		t.Fatalf("storage targets never registered: %v", err)
	}
	var created *mgmtdpb.CreateChainTableRsp
	err = conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		var err error
		created, err = cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{ReplicationFactor: 3})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	chain := created.Chains[0].ChainId
	waitServing(t, cache, chain, 3)
	order := cache.Current().ServingTargets(chain)
	head, middle := int(order[0]/100), int(order[1]/100)
	cl := storageclient.New(cache, storageclient.Config{Token: token, RetryTimeout: 30 * time.Second})
	defer cl.Close()

	var stop atomic.Bool
	var mu sync.Mutex
	acked := map[chunkengine.ChunkID]int{}
	var total atomic.Int64
	var wg sync.WaitGroup
	for w := 1; w <= 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			per := chunkSize / block
			for k := 0; !stop.Load(); k++ {
				id := chunkengine.ChunkID{Inode: 500 + uint64(w), Index: uint32(k / per)}
				i := k % per
				if _, err := cl.Write(context.Background(), chain, id, chunkSize, uint32(i*block), blockOf(w, i+1)); err != nil {
					t.Errorf("writer %d: chunk %s block %d: %v", w, id, i, err)
					return
				}
				mu.Lock()
				acked[id] = i + 1
				mu.Unlock()
				total.Add(1)
			}
		}()
	}
	progress := func(what string) {
		before := total.Load()
		deadline := time.Now().Add(testproc.Eventually)
		for total.Load() < before+50 && time.Now().Before(deadline) && !t.Failed() {
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("%s: %d writes acknowledged", what, total.Load())
	}
	progress("before kills")
	nodes[middle].p.Kill()
	waitServing(t, cache, chain, 2)
	progress("middle killed")
	nodes[head].p.Kill()
	waitServing(t, cache, chain, 1)
	progress("head killed")
	nodes[middle].start(t)
	nodes[head].start(t)
	waitServing(t, cache, chain, 3)
	progress("both back")
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		return
	}

	buf := make([]byte, chunkSize)
	for id, n := range acked {
		w := int(id.Inode - 500)
		for _, target := range cache.Current().ServingTargets(chain) {
			res, err := cl.Read(context.Background(), chain, id, 0, buf, storageclient.ReadOptions{Target: target})
			if err != nil {
				t.Fatalf("read %s from target %d: %v", id, target, err)
			}
			if res.N < n*block {
				t.Fatalf("target %d lost acknowledged writes: chunk %s has %d bytes, %d blocks acknowledged", target, id, res.N, n)
			}
			for i := 0; i < n; i++ {
				if string(buf[i*block:(i+1)*block]) != string(blockOf(w, i+1)) {
					t.Fatalf("target %d chunk %s block %d differs from the acknowledged write", target, id, i)
				}
			}
		}
	}
	dumps := map[uint64]map[chunkengine.ChunkID]*storagepb.ChunkMeta{}
	r := cache.Current()
	for _, target := range r.ServingTargets(chain) {
		ctrl, _, _ := r.TargetAddress(target)
		dumps[target] = dump(t, ctrl, target)
	}
	ref := dumps[order[2]] // the survivor
	if len(ref) != len(acked) {
		t.Fatalf("survivor holds %d chunks, %d were written", len(ref), len(acked))
	}
	for target, d := range dumps {
		for id, m := range ref {
			o := d[id]
			if o == nil || o.Version != m.Version || o.Length != m.Length || o.Checksum != m.Checksum || o.PendingVersion != 0 || o.Corrupt {
				t.Fatalf("target %d chunk %s: %v, survivor %v", target, id, o, m)
			}
		}
		if len(d) != len(ref) {
			t.Fatalf("target %d holds %d chunks, survivor %d", target, len(d), len(ref))
		}
	}

	// /metrics is served and counts the traffic.
	rsp, err := http.Get(nodes[int(order[2]/100)].metrics)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if !strings.Contains(string(body), `emberfs_storage_requests_total{code="ok",op="forward"}`) &&
		!strings.Contains(string(body), `emberfs_storage_requests_total{code="ok",op="write"}`) {
		t.Fatalf("/metrics lacks request counters:\n%.2000s", body)
	}
}

func waitServing(t *testing.T, cache *mgmtdclient.Cache, chain uint32, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testproc.Eventually)
	defer cancel()
	if _, err := cache.WaitFor(ctx, func(r *routing.Routing) bool { return len(r.ServingTargets(chain)) == n }); err != nil {
		t.Fatalf("chain %d never had %d serving targets: %v", chain, n, err)
	}
}

func dump(t *testing.T, addr string, target uint64) map[chunkengine.ChunkID]*storagepb.ChunkMeta {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), rpcauth.DialOption(token))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := storagepb.NewStorageClient(cc).DumpChunkMeta(testproc.Ctx(t), &storagepb.DumpChunkMetaReq{TargetId: target})
	if err != nil {
		t.Fatal(err)
	}
	out := map[chunkengine.ChunkID]*storagepb.ChunkMeta{}
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("dump target %d: %v", target, err)
		}
		for _, m := range b.Chunks {
			out[chunkengine.ChunkID{Inode: m.Inode, Index: m.Index}] = m
		}
	}
}
