package service

import (
	"context"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/kvstore"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// The KVCache opcodes (docs/kvcache.md). Routing checks (lease, chain
// version, serving and recovered replica) are the same as for chunk
// reads; what a record means is storage/kvstore's business.

// readChecks remembers checkRead's answers within one batch frame, per
// (target, chain, chain version): the entries of a frame mostly share a
// few chains, and routing does not need re-checking for each of them. A
// frame is served in microseconds, far below how often routing changes;
// a change that lands meanwhile is seen by the next frame, as it would be
// by a single request that checked just before it.
type readChecks []readCheck

type readCheck struct {
	target uint64
	chain  uint32
	ver    uint64
	t      *target
	err    error
}

// check is checkRead for q, asked once per (target, chain, version).
func (rc *readChecks) check(ctx context.Context, s *Service, q *wire.KVGetReq) (*target, error) {
	for i := range *rc {
		c := &(*rc)[i]
		if c.target == q.Target && c.chain == q.Chain && c.ver == q.ChainVer {
			return c.t, c.err
		}
	}
	t, err := s.checkRead(ctx, &wire.ReadReq{Target: q.Target, Chain: q.Chain, ChainVer: q.ChainVer, Chunk: q.Chunk})
	*rc = append(*rc, readCheck{target: q.Target, chain: q.Chain, ver: q.ChainVer, t: t, err: err})
	return t, err
}

// kvGet checks a get against routing (through rc, nil: a single get)
// and opens the value.
func (s *Service) kvGet(ctx context.Context, rc *readChecks, q *wire.KVGetReq) (*kvstore.Value, error) {
	if !kvformat.IsKVChunk(q.Chunk) {
		return nil, errcode.New(errcode.InvalidArgument, "kv get of chunk %s: not a KV chunk", q.Chunk)
	}
	var t *target
	var err error
	if rc != nil {
		t, err = rc.check(ctx, s, q)
	} else {
		t, err = s.checkRead(ctx, &wire.ReadReq{Target: q.Target, Chain: q.Chain, ChainVer: q.ChainVer, Chunk: q.Chunk})
	}
	if err != nil {
		return nil, err
	}
	v, err := t.kv.Get(q.Chunk, q.Key, q.MaxLen)
	if errcode.Is(err, errcode.ChecksumMismatch) {
		s.metrics.corruptReads.Inc()
		s.kickRepair()
	}
	if err == nil {
		s.metrics.readBytes.Add(float64(v.ValueLen))
	}
	return v, err
}

func valueSegment(v *kvstore.Value) transport.Segment {
	switch {
	case v.ValueLen == 0:
		return transport.Segment{}
	case v.Inline != nil:
		return transport.Bytes(v.Inline)
	}
	return transport.FileRegion(v.Region.File, v.ValueOff, v.ValueLen)
}

// handleKVGet serves OpKVGet: the header as ext, the value from memory
// (small records, read whole) or by sendfile.
func (s *Service) handleKVGet(ctx context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
	q, err := wire.DecodeKVGetReq(req.Ext)
	if err != nil {
		return nil, err
	}
	v, err := s.kvGet(ctx, nil, &q)
	if err != nil {
		return nil, err
	}
	resp := &transport.ServerResponse{Ext: v.Header, Done: v.Close}
	if v.ValueLen > 0 {
		resp.Payload = []transport.Segment{valueSegment(v)}
	}
	return resp, nil
}

// handleKVGetBatch serves OpKVGetBatch: many gets, one status each. Like
// a storage batch read it keeps at most maxOpenRegionsPerBatch data files
// open for the response (values sent from their file); values past that
// are copied into memory and their file closed at once.
func (s *Service) handleKVGetBatch(ctx context.Context, _ *transport.ServerRequest, subs []transport.SubRequest) ([]transport.SubReply, func(), error) {
	replies := make([]transport.SubReply, len(subs))
	var open []*kvstore.Value
	files := 0
	var rc readChecks
	for i, sub := range subs {
		q, err := wire.DecodeKVGetReq(sub.Ext)
		if err == nil && len(sub.Payload) != 0 {
			err = errcode.New(errcode.InvalidArgument, "kv get entry %d carries a %d-byte payload", i, len(sub.Payload))
		}
		var v *kvstore.Value
		if err == nil {
			v, err = s.kvGet(ctx, &rc, &q)
		}
		if err == nil && v.Region != nil && (v.ValueLen == 0 || files >= maxOpenRegionsPerBatch) {
			// Past the open-file bound (or nothing to send): copy the value
			// now and close the file.
			err = copyValue(v)
		}
		if err != nil {
			replies[i].Err = err
			continue
		}
		if v.Region != nil {
			files++
			s.regionOpened()
		}
		open = append(open, v)
		replies[i].Ext, replies[i].Data = v.Header, valueSegment(v)
	}
	return replies, func() {
		for _, v := range open {
			if v.Region != nil {
				s.openRegions.Add(-1)
			}
			v.Close()
		}
	}, nil
}

// copyValue reads a value sent from its file into memory and closes the
// file: v then serves its bytes from Inline.
func copyValue(v *kvstore.Value) error {
	buf := make([]byte, v.ValueLen)
	_, err := v.Region.File.ReadAt(buf, v.ValueOff)
	v.Region.Close()
	v.Region = nil
	if err != nil {
		return errcode.New(errcode.Internal, "read kv value for a batch entry: %v", err)
	}
	v.Inline = buf
	return nil
}

// handleKVExists serves OpKVExists: per entry OK when the slot holds a
// live record of the key, else NotFound. Answers come from the targets'
// KV indexes (no disk read unless an index entry is behind the engine),
// with routing checked once per (target, chain) of the frame.
func (s *Service) handleKVExists(ctx context.Context, _ *transport.ServerRequest, subs []transport.SubRequest) ([]transport.SubReply, func(), error) {
	replies := make([]transport.SubReply, len(subs))
	var rc readChecks
	for i, sub := range subs {
		q, err := wire.DecodeKVGetReq(sub.Ext)
		if err == nil && len(sub.Payload) != 0 {
			err = errcode.New(errcode.InvalidArgument, "kv exists entry %d carries a %d-byte payload", i, len(sub.Payload))
		}
		if err == nil && !kvformat.IsKVChunk(q.Chunk) {
			err = errcode.New(errcode.InvalidArgument, "kv exists of chunk %s: not a KV chunk", q.Chunk)
		}
		var t *target
		if err == nil {
			t, err = rc.check(ctx, s, &q)
		}
		if err == nil {
			err = t.kv.Exists(q.Chunk, q.Key)
		}
		replies[i].Err = err
	}
	return replies, nil, nil
}

func (s *Service) kvNamespaceTarget(req *transport.ServerRequest) (*target, wire.KVNamespaceReq, error) {
	q, err := wire.DecodeKVNamespaceReq(req.Ext)
	if err != nil {
		return nil, q, err
	}
	if q.Namespace == 0 || q.Namespace > kvformat.MaxNamespaceID {
		return nil, q, errcode.New(errcode.InvalidArgument, "kv namespace id %d out of range (1 to %d)", q.Namespace, kvformat.MaxNamespaceID)
	}
	t, err := s.target(q.Target)
	return t, q, err
}

// handleKVStats serves OpKVStats: this target's counters for a namespace.
func (s *Service) handleKVStats(_ context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
	t, q, err := s.kvNamespaceTarget(req)
	if err != nil {
		return nil, err
	}
	st := wire.KVStatsRsp(t.kv.Stats(q.Namespace))
	return &transport.ServerResponse{Ext: st.Encode(nil)}, nil
}

// handleKVDrop serves OpKVDrop: every local chunk of the namespace on the
// target is removed (the client sends it to every target of the
// namespace's chains, so replicas end up alike).
func (s *Service) handleKVDrop(_ context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
	t, q, err := s.kvNamespaceTarget(req)
	if err != nil {
		return nil, err
	}
	if err := s.leaseOK(); err != nil {
		return nil, err
	}
	n, err := t.kv.Drop(q.Namespace)
	if err != nil {
		return nil, err
	}
	s.log.Info("kv namespace dropped on target", "target", t.id, "namespace", q.Namespace, "chunks", n)
	return &transport.ServerResponse{Ext: wire.EncodeKVDropRsp(uint64(n))}, nil
}

// kvObserve updates the KV index after a change of chunk id on t.
func (t *target) kvObserve(id chunkengine.ChunkID) {
	if kvformat.IsKVChunk(id) {
		t.kv.Observe(id)
	}
}
