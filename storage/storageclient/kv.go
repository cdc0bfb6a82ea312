package storageclient

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// The KVCache record operations (docs/kvcache.md). A key's slot (chain,
// chunk) comes from kvformat.SlotOf; these methods move records and never
// decide placement.

// KVRef names a key and the slot it lives in.
type KVRef struct {
	Chain uint32
	Chunk ChunkID
	Key   []byte
}

// KVResult is one entry of KVGetBatch: N value bytes landed in the
// entry's buffer. Err NotFound is a miss.
type KVResult struct {
	N      int
	Header kvformat.Header
	Err    error
}

func checkKVRef(ref *KVRef) error {
	if err := kvformat.CheckKey(ref.Key); err != nil {
		return err
	}
	if !kvformat.IsKVChunk(ref.Chunk) {
		return errcode.New(errcode.InvalidArgument, "kv key %q: chunk %s is not a KV chunk", ref.Key, ref.Chunk)
	}
	return nil
}

// KVPut stores a record (header from kvformat.Header.Encode, then value)
// as one CRAQ Replace through the chain head; payload goes out as a
// scatter list [header, value] (no copy). It returns once every replica
// committed it.
func (c *Client) KVPut(ctx context.Context, ref KVRef, header, value []byte) error {
	if err := checkKVRef(&ref); err != nil {
		return err
	}
	if len(header) < kvformat.FixedHeaderLen || len(header)+len(value) > chunkengine.MaxChunkSize {
		return errcode.New(errcode.InvalidArgument, "kv put of key %q: record of %d header and %d value bytes (the header needs at least %d, the record at most %d)",
			ref.Key, len(header), len(value), kvformat.FixedHeaderLen, chunkengine.MaxChunkSize)
	}
	_, err := c.update(ctx, wire.UpdateReq{Chain: ref.Chain, Chunk: ref.Chunk, Kind: wire.KindReplace, ChunkSize: chunkengine.MaxChunkSize}, header, value)
	return err
}

// KVRemove removes the record in ref's slot from every replica (no error
// when the slot is empty).
func (c *Client) KVRemove(ctx context.Context, ref KVRef) error {
	if !kvformat.IsKVChunk(ref.Chunk) {
		return errcode.New(errcode.InvalidArgument, "kv remove: chunk %s is not a KV chunk", ref.Chunk)
	}
	return c.RemoveChunk(ctx, ref.Chain, ref.Chunk)
}

// kvMiss reports whether err is a get's final answer for the key (the
// same on every replica) rather than a reason to try another replica.
func kvFinal(err error) bool {
	switch errcode.CodeOf(err) {
	case errcode.NotFound, errcode.OutOfRange, errcode.InvalidArgument:
		return true
	}
	return false
}

// KVGet reads key's value into buf from one serving replica (a relaxed
// read of the committed version, spread over replicas like Read),
// verifies its CRC32C and returns the header and the value length. A miss
// (empty slot, other key, expired, corrupt) is errcode NotFound; a value
// larger than buf is OutOfRange naming both sizes, with nothing written
// into buf. A replica that is down or not serving, or whose copy fails
// its checksums, is skipped for the next; after a miss buf's content is
// unspecified.
func (c *Client) KVGet(ctx context.Context, ref KVRef, buf []byte) (kvformat.Header, int, error) {
	if err := checkKVRef(&ref); err != nil {
		return kvformat.Header{}, 0, err
	}
	var h kvformat.Header
	var n int
	what := func() string {
		return fmt.Sprintf("kv get of key %q (chunk %s, chain %d)", ref.Key, ref.Chunk, ref.Chain)
	}
	err := c.retryLazy(ctx, what, func(ctx context.Context, r *routing.Routing) error {
		reps := c.replicas(r, ref.Chain, 0)
		if len(reps) == 0 {
			return errcode.New(errcode.Unavailable, "chain %d has no serving replica at routing version %d", ref.Chain, r.Version())
		}
		var last error
		corrupt := 0
		for _, t := range reps {
			h, n, last = c.kvGetOne(ctx, r, t, &ref, buf)
			if last == nil || kvFinal(last) {
				return last
			}
			if errcode.Is(last, errcode.ChecksumMismatch) {
				corrupt++
			}
		}
		if corrupt == len(reps) {
			// Every copy failed its checksums: a cache answers a miss
			// (the storage side repairs what it can).
			return &stopError{errcode.New(errcode.NotFound, "%s: corrupt on every replica: %v", what(), last)}
		}
		return last
	})
	if err != nil {
		return kvformat.Header{}, 0, err
	}
	return h, n, nil
}

func (c *Client) kvGetOne(ctx context.Context, r *routing.Routing, t uint64, ref *KVRef, buf []byte) (kvformat.Header, int, error) {
	_, addr, err := r.TargetAddress(t)
	if err != nil {
		return kvformat.Header{}, 0, errcode.New(errcode.StaleVersion, "%v", err)
	}
	q := wire.KVGetReq{Target: t, Chain: ref.Chain, ChainVer: r.ChainVersion(ref.Chain), Chunk: ref.Chunk, MaxLen: uint32(min(len(buf), chunkengine.MaxChunkSize)), Key: ref.Key}
	// The cap bound keeps the transport from writing past len(buf).
	resp, err := c.tc.Call(ctx, addr, &transport.Request{Op: wire.OpKVGet, Ext: q.Encode(nil), RespSize: len(buf)}, buf[:0:len(buf)])
	if err != nil {
		return kvformat.Header{}, 0, err
	}
	defer resp.Release()
	h, err := c.kvCheck(ref, resp.Ext, resp.Payload, buf)
	if err != nil {
		return kvformat.Header{}, 0, err
	}
	return h, int(h.ValueLen), nil
}

// kvCheck verifies a hit: the header (its own CRC, the key), and the value
// against the header's length and CRC32C. data is where the value landed;
// if that is not buf (it did not fit, which the server's check prevents)
// it is copied there. A mismatch is ChecksumMismatch: try another replica.
func (c *Client) kvCheck(ref *KVRef, ext, data, buf []byte) (kvformat.Header, error) {
	h, err := kvformat.DecodeHeader(ext)
	if err != nil || h.Len() != len(ext) {
		return h, errcode.New(errcode.ChecksumMismatch, "kv key %q: reply header does not decode: %v", ref.Key, err)
	}
	if !bytes.Equal(h.Key, ref.Key) {
		return h, errcode.New(errcode.ChecksumMismatch, "kv key %q: reply is for key %q", ref.Key, h.Key)
	}
	if int(h.ValueLen) > len(buf) {
		return h, errcode.New(errcode.Internal, "kv key %q: server sent %d value bytes for a %d-byte buffer", ref.Key, h.ValueLen, len(buf))
	}
	if err := h.VerifyValue(data); err != nil {
		return h, err
	}
	if len(data) > 0 && &data[0] != &buf[0] {
		copy(buf, data)
	}
	return h, nil
}

// kvGroup is the entries of a batch that go to one target.
type kvGroup struct {
	target uint64
	addr   string
	idx    []int
	subs   []transport.SubRequest
}

// kvGroups assigns each ref to a serving replica of its chain and groups
// them per target; refs whose chain has no serving replica are returned
// in failed. With spread, each ref takes the rotating choice Read makes
// (a batch of gets draws on several replicas' bandwidth); without it all
// refs of a chain go to one replica, rotating per call (an exists frame
// is small: fewer frames, fewer round trips). The entries' request
// headers share one allocation.
func (c *Client) kvGroups(r *routing.Routing, refs []KVRef, spread bool, maxLen func(i int) uint32) (groups []*kvGroup, failed []int) {
	byTarget := map[uint64]*kvGroup{}
	size := 0
	for i := range refs {
		size += wire.KVGetReqFixedSize + len(refs[i].Key)
	}
	arena := make([]byte, 0, size)
	type chainReps struct {
		chain uint32
		reps  []uint64
	}
	var chains []chainReps
	replicas := func(chain uint32) []uint64 {
		if spread {
			return c.replicas(r, chain, 0)
		}
		for _, cr := range chains {
			if cr.chain == chain {
				return cr.reps
			}
		}
		reps := c.replicas(r, chain, 0)
		chains = append(chains, chainReps{chain, reps})
		return reps
	}
	for i := range refs {
		ref := &refs[i]
		if checkKVRef(ref) != nil {
			failed = append(failed, i)
			continue
		}
		var reps []uint64
		if r != nil {
			reps = replicas(ref.Chain)
		}
		if len(reps) == 0 {
			failed = append(failed, i)
			continue
		}
		t := reps[0]
		g := byTarget[t]
		if g == nil {
			_, addr, err := r.TargetAddress(t)
			if err != nil {
				failed = append(failed, i)
				continue
			}
			g = &kvGroup{target: t, addr: addr}
			byTarget[t] = g
			groups = append(groups, g)
		}
		q := wire.KVGetReq{Target: t, Chain: ref.Chain, ChainVer: r.ChainVersion(ref.Chain), Chunk: ref.Chunk, MaxLen: maxLen(i), Key: ref.Key}
		start := len(arena)
		arena = q.Encode(arena)
		g.idx = append(g.idx, i)
		g.subs = append(g.subs, transport.SubRequest{Ext: arena[start:len(arena):len(arena)], RespSize: int(q.MaxLen)})
	}
	return groups, failed
}

func (c *Client) routingNow(ctx context.Context) *routing.Routing {
	r := c.cache.Current()
	if r == nil {
		if err := c.cache.Refresh(ctx); err == nil {
			r = c.cache.Current()
		}
	}
	return r
}

// KVGetBatch reads many keys: refs are grouped per target (one
// OpKVGetBatch frame per target, targets in parallel) and each value lands
// straight in bufs[i]; per-entry CRC verified. Entries whose target failed
// (down, stale routing, corrupt copy) are retried one by one with KVGet's
// failover.
func (c *Client) KVGetBatch(ctx context.Context, refs []KVRef, bufs [][]byte) []KVResult {
	out := make([]KVResult, len(refs))
	if len(bufs) != len(refs) {
		err := errcode.New(errcode.InvalidArgument, "kv get batch of %d keys with %d buffers", len(refs), len(bufs))
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	groups, failed := c.kvGroups(c.routingNow(ctx), refs, true, func(i int) uint32 { return uint32(min(len(bufs[i]), chunkengine.MaxChunkSize)) })
	failed = append(failed, fanOutGroups(groups, func(g *kvGroup) (retry []int) {
		dsts := make([][]byte, len(g.idx))
		for k, i := range g.idx {
			dsts[k] = bufs[i][:0:len(bufs[i])]
		}
		resp, err := c.tc.CallBatchInto(ctx, g.addr, wire.OpKVGetBatch, g.subs, dsts)
		for k, i := range g.idx {
			if err != nil {
				retry = append(retry, i)
				continue
			}
			res := resp.Results[k]
			if res.Err == nil {
				var h kvformat.Header
				h, res.Err = c.kvCheck(&refs[i], res.Ext, res.Data, bufs[i])
				if res.Err == nil {
					out[i] = KVResult{N: int(h.ValueLen), Header: h}
					continue
				}
			}
			if kvFinal(res.Err) {
				out[i].Err = res.Err
			} else {
				retry = append(retry, i)
			}
		}
		if resp != nil {
			resp.Release()
		}
		return retry
	})...)
	for _, i := range failed {
		h, n, err := c.KVGet(ctx, refs[i], bufs[i])
		out[i] = KVResult{N: n, Header: h, Err: err}
	}
	return out
}

// KVExists reports for each ref whether its slot holds a live record of
// exactly that key (not expired): one OpKVExists frame per target touched,
// in parallel. Entries whose target failed are retried one by one with
// failover; the error is the first that retrying could not resolve.
func (c *Client) KVExists(ctx context.Context, refs []KVRef) ([]bool, error) {
	out := make([]bool, len(refs))
	for i := range refs {
		if err := checkKVRef(&refs[i]); err != nil {
			return nil, err
		}
	}
	groups, failed := c.kvGroups(c.routingNow(ctx), refs, false, func(int) uint32 { return 0 })
	failed = append(failed, fanOutGroups(groups, func(g *kvGroup) (retry []int) {
		resp, err := c.tc.CallBatch(ctx, g.addr, wire.OpKVExists, g.subs, nil)
		for k, i := range g.idx {
			switch {
			case err != nil:
				retry = append(retry, i)
			case resp.Results[k].Err == nil:
				out[i] = true
			case errcode.Is(resp.Results[k].Err, errcode.NotFound):
			default:
				retry = append(retry, i)
			}
		}
		if resp != nil {
			resp.Release()
		}
		return retry
	})...)
	for _, i := range failed {
		ok, err := c.kvExistsOne(ctx, refs[i])
		if err != nil {
			return nil, err
		}
		out[i] = ok
	}
	return out, nil
}

func (c *Client) kvExistsOne(ctx context.Context, ref KVRef) (bool, error) {
	var found bool
	what := fmt.Sprintf("kv exists of key %q (chunk %s, chain %d)", ref.Key, ref.Chunk, ref.Chain)
	err := c.retry(ctx, what, func(ctx context.Context, r *routing.Routing) error {
		reps := c.replicas(r, ref.Chain, 0)
		if len(reps) == 0 {
			return errcode.New(errcode.Unavailable, "chain %d has no serving replica at routing version %d", ref.Chain, r.Version())
		}
		var last error
		corrupt := 0
		for _, t := range reps {
			found, last = c.kvExistsAt(ctx, r, t, &ref)
			if last == nil || kvFinal(last) {
				return last
			}
			if errcode.Is(last, errcode.ChecksumMismatch) {
				corrupt++
			}
		}
		if corrupt == len(reps) {
			// Every copy failed its checksums: a get would miss, so
			// exists answers false, as KVGet answers NotFound.
			found = false
			return nil
		}
		return last
	})
	return found, err
}

// kvExistsAt asks target t alone whether it holds a live record of ref's key.
func (c *Client) kvExistsAt(ctx context.Context, r *routing.Routing, t uint64, ref *KVRef) (bool, error) {
	_, addr, err := r.TargetAddress(t)
	if err != nil {
		return false, errcode.New(errcode.StaleVersion, "%v", err)
	}
	q := wire.KVGetReq{Target: t, Chain: ref.Chain, ChainVer: r.ChainVersion(ref.Chain), Chunk: ref.Chunk, Key: ref.Key}
	resp, err := c.tc.CallBatch(ctx, addr, wire.OpKVExists, []transport.SubRequest{{Ext: q.Encode(nil)}}, nil)
	if err != nil {
		return false, err
	}
	defer resp.Release()
	err = resp.Results[0].Err
	if errcode.Is(err, errcode.NotFound) {
		return false, nil
	}
	return err == nil, err
}

// KVStats sums namespace ns's counters over the given chains: read
// counters from every serving replica, stored bytes and values from each
// chain's head only (replicas hold the same values).
func (c *Client) KVStats(ctx context.Context, ns uint32, chains []uint32) (kvformat.Stats, error) {
	var total kvformat.Stats
	for _, chain := range chains {
		var sum kvformat.Stats
		err := c.retry(ctx, fmt.Sprintf("kv stats of namespace %d on chain %d", ns, chain), func(ctx context.Context, r *routing.Routing) error {
			sum = kvformat.Stats{}
			ts := r.ServingTargets(chain)
			head, ok := r.Head(chain)
			if len(ts) == 0 || !ok {
				return errcode.New(errcode.Unavailable, "chain %d has no serving head at routing version %d", chain, r.Version())
			}
			// Every target of the chain, not only the serving ones: a
			// replica that is briefly not serving (a missed heartbeat)
			// still holds the hits it served. Only serving ones must answer.
			all := ts
			if ch, ok := r.Chain(chain); ok {
				all = all[:0:0]
				for _, ct := range ch.Targets {
					all = append(all, ct.TargetId)
				}
			}
			for _, t := range all {
				rsp, err := c.kvNamespaceCall(ctx, r, wire.OpKVStats, t, ns)
				if err != nil {
					if !slices.Contains(ts, t) {
						continue // down or recovering: its counters are not reachable
					}
					return err
				}
				st, err := wire.DecodeKVStatsRsp(rsp)
				if err != nil {
					return errcode.New(errcode.Internal, "%v", err)
				}
				if t != head {
					st.BytesStored, st.Values = 0, 0
				}
				sum.Add(kvformat.Stats(st))
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total.Add(sum)
	}
	return total, nil
}

// KVDrop removes every chunk of namespace ns from every serving target
// of the given chains (a target not serving then gets the chain's state
// when it is resynced).
func (c *Client) KVDrop(ctx context.Context, ns uint32, chains []uint32) error {
	for _, chain := range chains {
		err := c.retry(ctx, fmt.Sprintf("kv drop of namespace %d on chain %d", ns, chain), func(ctx context.Context, r *routing.Routing) error {
			ts := r.ServingTargets(chain)
			if len(ts) == 0 {
				return errcode.New(errcode.Unavailable, "chain %d has no serving replica at routing version %d", chain, r.Version())
			}
			for _, t := range ts {
				if _, err := c.kvNamespaceCall(ctx, r, wire.OpKVDrop, t, ns); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) kvNamespaceCall(ctx context.Context, r *routing.Routing, op transport.Op, t uint64, ns uint32) ([]byte, error) {
	_, addr, err := r.TargetAddress(t)
	if err != nil {
		return nil, errcode.New(errcode.StaleVersion, "%v", err)
	}
	q := wire.KVNamespaceReq{Target: t, Namespace: ns}
	resp, err := c.tc.Call(ctx, addr, &transport.Request{Op: op, Ext: q.Encode(nil)}, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Release()
	return resp.Ext, nil
}

// fanOutGroups runs call for every target group at once (one frame each)
// and gathers the entries each call could not settle, to be retried one by
// one with failover.
func fanOutGroups(groups []*kvGroup, call func(g *kvGroup) (retry []int)) []int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var out []int
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			retry := call(g)
			mu.Lock()
			out = append(out, retry...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}
