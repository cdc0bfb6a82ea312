// Package storageclient is the Go client of the storage service, used by
// the native file client: chunk writes through the chain head with
// retries across chain changes (applied once thanks to per-channel
// sequence numbers), reads from any serving replica with failover inside
// the call, batch reads, truncate and remove, and per-inode queries over
// the chains of a file's layout. Chunk data goes over the data transport.
package storageclient

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// ChunkID names a chunk (inode + index in the file).
type ChunkID = chunkengine.ChunkID

// Config tunes a Client. Zero fields take defaults.
type Config struct {
	// Token is the cluster token for the data transport.
	Token string
	// Transport configures the data transport client (Token is set from
	// the field above).
	Transport transport.ClientConfig
	// RetryTimeout bounds how long one call keeps retrying across stale
	// routing, failovers and busy chunks (default 30 s; ctx may end sooner).
	RetryTimeout time.Duration
	// NotCommittedWait bounds how long a read waits for a chunk's pending
	// version to commit before returning NotCommitted (default 2 s).
	NotCommittedWait time.Duration
	// Channels is the number of write channels, the most writes in flight
	// at once (default 256).
	Channels int
	// NoWriteChecksum skips sending a CRC32C of written data (the head
	// then cannot tell a corrupted transfer).
	NoWriteChecksum bool
	// Caller replaces the TCP transport (an RDMA transport, tests).
	Caller transport.Caller
	// SpreadReads starts each chunk read at the next replica in turn
	// instead of at the replica this client uses for that chunk (tests
	// that want every replica's answers to one chunk).
	SpreadReads bool
}

// Client talks to storage services; safe for concurrent use.
type Client struct {
	cfg      Config
	cache    *mgmtdclient.Cache
	tc       transport.Caller
	id       uint64
	channels chan *channel
	rr       atomic.Uint64
}

type channel struct {
	id  uint32
	seq uint64
}

// ChunkState is a chunk's committed state after an update.
type ChunkState struct {
	Version  uint64
	Length   uint32
	Checksum uint32
}

// New makes a client over a routing cache (which the caller starts and closes).
func New(cache *mgmtdclient.Cache, cfg Config) *Client {
	if cfg.RetryTimeout <= 0 {
		cfg.RetryTimeout = 30 * time.Second
	}
	if cfg.NotCommittedWait <= 0 {
		cfg.NotCommittedWait = 2 * time.Second
	}
	if cfg.Channels <= 0 {
		cfg.Channels = 256
	}
	tc := cfg.Caller
	if tc == nil {
		tcfg := cfg.Transport
		tcfg.Token = cfg.Token
		tc = transport.NewClient(tcfg)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	c := &Client{cfg: cfg, cache: cache, tc: tc, id: binary.LittleEndian.Uint64(b[:]) | 1,
		channels: make(chan *channel, cfg.Channels)}
	for i := range cfg.Channels {
		c.channels <- &channel{id: uint32(i + 1)}
	}
	return c
}

// Close closes the transport connections.
func (c *Client) Close() error { return c.tc.Close() }

// ID is the client id writes are deduplicated under.
func (c *Client) ID() uint64 { return c.id }

func retryable(err error) bool {
	switch errcode.CodeOf(err) {
	case errcode.StaleVersion, errcode.Unavailable, errcode.Busy, errcode.NotCommitted, errcode.DeadlineExceeded:
		return true
	}
	return false
}

// stopError ends a retry loop with err even if err's code is retryable.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }

// retry runs attempt until it succeeds, fails for good, or the retry
// budget ends; stale routing is refreshed in between.
func (c *Client) retry(ctx context.Context, what string, attempt func(ctx context.Context, r *routing.Routing) error) error {
	return c.retryLazy(ctx, func() string { return what }, attempt)
}

// retryLazy is retry with the call's description built only when an
// error needs it (hot paths: formatting it costs more than a small get).
func (c *Client) retryLazy(ctx context.Context, describe func() string, attempt func(ctx context.Context, r *routing.Routing) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RetryTimeout)
	defer cancel()
	backoff := 2 * time.Millisecond
	for n := 1; ; n++ {
		r := c.cache.Current()
		if r == nil {
			if err := c.cache.Refresh(ctx); err != nil {
				return errcode.New(errcode.Unavailable, "%s: no routing info: %v", describe(), err)
			}
			r = c.cache.Current()
		}
		err := attempt(ctx, r)
		var stop *stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		if err == nil || !retryable(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: gave up after %d attempts: %w", describe(), n, err)
		}
		if errcode.Is(err, errcode.StaleVersion) || errcode.Is(err, errcode.Unavailable) {
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			_ = c.cache.Refresh(rctx)
			rcancel()
		}
		ch := c.cache.Changed()
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-ch:
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// update sends one update to the chain head, retrying with the same
// (client, channel, seq) so that the head applies it once.
func (c *Client) update(ctx context.Context, u wire.UpdateReq, data ...[]byte) (ChunkState, error) {
	var ch *channel
	select {
	case ch = <-c.channels:
	case <-ctx.Done():
		return ChunkState{}, errcode.New(errcode.CodeOf(ctx.Err()), "waiting for a write channel: %v", ctx.Err())
	}
	defer func() { c.channels <- ch }()
	ch.seq++
	u.ClientID, u.Channel, u.Seq = c.id, ch.id, ch.seq
	n := 0
	for _, d := range data {
		n += len(d)
	}
	if n > 0 && !c.cfg.NoWriteChecksum {
		u.Flags |= wire.FlagCheckCRC
		for _, d := range data {
			u.DataCRC = crc32c.Update(u.DataCRC, d)
		}
	}
	var st ChunkState
	what := fmt.Sprintf("%s of chunk %s on chain %d", chunkengine.UpdateKind(u.Kind), u.Chunk, u.Chain)
	err := c.retry(ctx, what, func(ctx context.Context, r *routing.Routing) error {
		head, ok := r.Head(u.Chain)
		if !ok {
			if _, known := r.Chain(u.Chain); !known {
				return errcode.New(errcode.StaleVersion, "chain %d unknown at routing version %d", u.Chain, r.Version())
			}
			return errcode.New(errcode.Unavailable, "chain %d has no serving head at routing version %d", u.Chain, r.Version())
		}
		_, addr, err := r.TargetAddress(head)
		if err != nil {
			return errcode.New(errcode.StaleVersion, "%v", err)
		}
		u.Target, u.ChainVer = head, r.ChainVersion(u.Chain)
		req := &transport.Request{Op: wire.OpWrite, Ext: u.Encode(nil)}
		if n > 0 {
			req.Payload = data // a scatter list, sent with writev
		}
		// A head cut off by the network answers nothing until the retry
		// budget ends; once mgmtd names another head, retry there.
		cctx, stop := c.cache.WhileRouting(ctx, func(cur *routing.Routing) bool {
			h, ok := cur.Head(u.Chain)
			return ok && h == head
		})
		defer stop()
		resp, err := c.tc.Call(cctx, addr, req, nil)
		if err != nil {
			if errors.Is(context.Cause(cctx), mgmtdclient.ErrRoutingMoved) {
				return errcode.New(errcode.StaleVersion, "write to chain %d head %d abandoned: routing names another head", u.Chain, head)
			}
			return err
		}
		defer resp.Release()
		rsp, err := wire.DecodeUpdateRsp(resp.Ext)
		if err != nil {
			return errcode.New(errcode.Internal, "%v", err)
		}
		st = ChunkState(rsp)
		return nil
	})
	return st, err
}

// Write writes data at offset of a chunk in chain (creating the chunk
// with chunkSize if needed) and returns its committed state.
func (c *Client) Write(ctx context.Context, chain uint32, chunk ChunkID, chunkSize, offset uint32, data []byte) (ChunkState, error) {
	if len(data) == 0 {
		return ChunkState{}, errcode.New(errcode.InvalidArgument, "write to chunk %s: no data", chunk)
	}
	return c.update(ctx, wire.UpdateReq{Chain: chain, Chunk: chunk, Kind: wire.KindWrite, Offset: offset, ChunkSize: chunkSize}, data)
}

// Truncate sets a chunk's length (creating it with chunkSize if needed).
func (c *Client) Truncate(ctx context.Context, chain uint32, chunk ChunkID, chunkSize, length uint32) (ChunkState, error) {
	return c.update(ctx, wire.UpdateReq{Chain: chain, Chunk: chunk, Kind: wire.KindTruncate, Length: length, ChunkSize: chunkSize}, nil)
}

// RemoveChunk removes a chunk from every replica (no error if absent).
func (c *Client) RemoveChunk(ctx context.Context, chain uint32, chunk ChunkID) error {
	_, err := c.update(ctx, wire.UpdateReq{Chain: chain, Chunk: chunk, Kind: wire.KindRemove}, nil)
	return err
}

// ReadOptions tune a read.
type ReadOptions struct {
	// Relaxed returns a replica's committed version even while a newer
	// version is pending (not linearizable; never waits).
	Relaxed bool
	// Target forces the replica to read from (tests, tools); 0 = choose.
	Target uint64
}

// ReadResult is what a read returned.
type ReadResult struct {
	N        int    // bytes read into the buffer
	Version  uint64 // committed version read
	Checksum uint32 // CRC32C of the whole committed chunk
	Target   uint64 // replica that answered
}

// replicas orders a chain's serving targets for a read: a rotating start
// spreads load; the tail (which commits first) is tried last so that a
// NotCommitted replica is followed by the one that knows the outcome.
func (c *Client) replicas(r *routing.Routing, chain uint32, force uint64) []uint64 {
	if force != 0 {
		return []uint64{force}
	}
	ts := r.ServingTargets(chain)
	if len(ts) <= 1 {
		return ts
	}
	return rotate(ts, int(c.rr.Add(1)%uint64(len(ts))))
}

// chunkReplicas orders a chain's serving targets for a read of one chunk:
// like replicas, but the start is fixed per (client, chunk), so the
// reads of one chunk by this client go to one replica while different
// chunks (and clients) spread over all of them. Rotating per request sent
// the pieces of one sequential chunk read to every replica in turn, and
// each then read (and verified) the whole chunk from its disk: three
// times the disk reads at 3 replicas once chunks are written with O_DIRECT
// and not in the page cache (docs/storage.md, "Reads").
func (c *Client) chunkReplicas(r *routing.Routing, chain uint32, chunk ChunkID, force uint64) []uint64 {
	if force != 0 || c.cfg.SpreadReads {
		return c.replicas(r, chain, force)
	}
	ts := r.ServingTargets(chain)
	if len(ts) <= 1 {
		return ts
	}
	h := mix64(c.id ^ mix64(chunk.Inode) ^ uint64(chunk.Index))
	return rotate(ts, int(h%uint64(len(ts))))
}

func rotate(ts []uint64, k int) []uint64 {
	out := make([]uint64, 0, len(ts))
	for i := range ts {
		out = append(out, ts[(k+i)%len(ts)])
	}
	return out
}

// mix64 is splitmix64's finalizer: neighbouring chunk indexes land on
// unrelated replicas.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// Read reads up to len(buf) committed bytes of a chunk from offset,
// choosing a serving replica and failing over to the others within the
// call (stale routing, a replica down, a corrupt copy, a pending version).
func (c *Client) Read(ctx context.Context, chain uint32, chunk ChunkID, offset uint32, buf []byte, opts ReadOptions) (ReadResult, error) {
	if len(buf) > chunkengine.MaxChunkSize {
		buf = buf[:chunkengine.MaxChunkSize]
	}
	var res ReadResult
	start := time.Now()
	what := fmt.Sprintf("read of chunk %s on chain %d", chunk, chain)
	err := c.retry(ctx, what, func(ctx context.Context, r *routing.Routing) error {
		reps := c.chunkReplicas(r, chain, chunk, opts.Target)
		if len(reps) == 0 {
			return errcode.New(errcode.Unavailable, "chain %d has no serving replica at routing version %d", chain, r.Version())
		}
		var last error
		for _, t := range reps {
			res, last = c.readOne(ctx, r, chain, t, chunk, offset, buf, opts.Relaxed)
			if last == nil {
				return nil
			}
			switch errcode.CodeOf(last) {
			case errcode.NotFound, errcode.OutOfRange, errcode.InvalidArgument:
				return last // the chunk's answer, same on every replica
			}
		}
		if errcode.Is(last, errcode.NotCommitted) && time.Since(start) > c.cfg.NotCommittedWait {
			return &stopError{fmt.Errorf("%s: still pending after %v (use a relaxed read to get the committed version): %w", what, c.cfg.NotCommittedWait, last)}
		}
		if errcode.Is(last, errcode.ChecksumMismatch) {
			// Every replica tried was corrupt: wait for repair.
			return errcode.New(errcode.Busy, "%v", last)
		}
		return last
	})
	return res, err
}

func (c *Client) readOne(ctx context.Context, r *routing.Routing, chain uint32, t uint64, chunk ChunkID, offset uint32, buf []byte, relaxed bool) (ReadResult, error) {
	_, addr, err := r.TargetAddress(t)
	if err != nil {
		return ReadResult{}, errcode.New(errcode.StaleVersion, "%v", err)
	}
	q := wire.ReadReq{Target: t, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: chunk, Offset: offset, Length: uint32(len(buf)), Relaxed: relaxed}
	resp, err := c.tc.Call(ctx, addr, &transport.Request{Op: wire.OpRead, Ext: q.Encode(nil), RespSize: len(buf)}, buf[:0])
	if err != nil {
		return ReadResult{}, err
	}
	defer resp.Release()
	rsp, err := wire.DecodeReadRsp(resp.Ext)
	if err != nil {
		return ReadResult{}, errcode.New(errcode.Internal, "%v", err)
	}
	n := copy(buf, resp.Payload) // a no-op copy when it landed in buf
	return ReadResult{N: n, Version: rsp.Version, Checksum: rsp.Checksum, Target: t}, nil
}

// ReadReq is one entry of a batch read.
type ReadReq struct {
	Chain  uint32
	Chunk  ChunkID
	Offset uint32
	Buf    []byte
}

// BatchResult is one entry's outcome.
type BatchResult struct {
	ReadResult
	Err error
}

// ReadBatch reads many (chunk, offset, length) ranges: entries going to
// the same replica travel in one batch frame; entries that fail there
// are retried one by one with failover.
func (c *Client) ReadBatch(ctx context.Context, reqs []ReadReq, opts ReadOptions) []BatchResult {
	out := make([]BatchResult, len(reqs))
	r := c.cache.Current()
	if r == nil {
		if err := c.cache.Refresh(ctx); err == nil {
			r = c.cache.Current()
		}
	}
	type group struct {
		addr string
		idx  []int
		subs []transport.SubRequest
		size int
	}
	groups := map[uint64]*group{}
	var failed []int
	for i, q := range reqs {
		var reps []uint64
		if r != nil {
			reps = c.chunkReplicas(r, q.Chain, q.Chunk, opts.Target)
		}
		if len(reps) == 0 {
			failed = append(failed, i)
			continue
		}
		t := reps[0]
		_, addr, err := r.TargetAddress(t)
		if err != nil {
			failed = append(failed, i)
			continue
		}
		g := groups[t]
		if g == nil {
			g = &group{addr: addr}
			groups[t] = g
		}
		rq := wire.ReadReq{Target: t, Chain: q.Chain, ChainVer: r.ChainVersion(q.Chain), Chunk: q.Chunk, Offset: q.Offset, Length: uint32(len(q.Buf)), Relaxed: opts.Relaxed}
		g.idx = append(g.idx, i)
		g.subs = append(g.subs, transport.SubRequest{Ext: rq.Encode(nil), RespSize: len(q.Buf)})
		g.size += len(q.Buf)
	}
	type done struct {
		g    *group
		t    uint64
		resp *transport.BatchResponse
		buf  []byte
		err  error
	}
	ch := make(chan done, len(groups))
	for t, g := range groups {
		go func() {
			buf := transport.GetBuffer(g.size)
			resp, err := c.tc.CallBatch(ctx, g.addr, wire.OpReadBatch, g.subs, buf[:0])
			ch <- done{g, t, resp, buf, err}
		}()
	}
	for range groups {
		d := <-ch
		for k, i := range d.g.idx {
			if d.err != nil || d.resp.Results[k].Err != nil {
				failed = append(failed, i)
				continue
			}
			res := d.resp.Results[k]
			rsp, err := wire.DecodeReadRsp(res.Ext)
			if err != nil {
				failed = append(failed, i)
				continue
			}
			n := copy(reqs[i].Buf, res.Data)
			out[i] = BatchResult{ReadResult: ReadResult{N: n, Version: rsp.Version, Checksum: rsp.Checksum, Target: d.t}}
		}
		if d.resp != nil {
			d.resp.Release()
		}
		transport.PutBuffer(d.buf)
	}
	for _, i := range failed {
		q := reqs[i]
		res, err := c.Read(ctx, q.Chain, q.Chunk, q.Offset, q.Buf, opts)
		out[i] = BatchResult{ReadResult: res, Err: err}
	}
	return out
}

// LastChunk is the highest committed chunk of an inode.
type LastChunk struct {
	Chain  uint32
	Index  uint32
	Length uint32
}

// QueryLastChunk finds the highest-index committed chunk of inode over
// the chains of its layout (asking each chain's last serving replica,
// which commits first). found is false when no chain holds a chunk.
func (c *Client) QueryLastChunk(ctx context.Context, inode uint64, chains []uint32) (last LastChunk, found bool, err error) {
	for _, chain := range chains {
		var rsp wire.LastChunkRsp
		err := c.retry(ctx, fmt.Sprintf("query last chunk of inode %d on chain %d", inode, chain), func(ctx context.Context, r *routing.Routing) error {
			ts := r.ServingTargets(chain)
			if len(ts) == 0 {
				return errcode.New(errcode.Unavailable, "chain %d has no serving replica", chain)
			}
			var e error
			rsp, e = c.inodeCall(ctx, r, wire.OpQueryLast, chain, ts[len(ts)-1], inode)
			return e
		})
		if err != nil {
			return LastChunk{}, false, err
		}
		if rsp.Found && (!found || rsp.Index > last.Index) {
			last, found = LastChunk{Chain: chain, Index: rsp.Index, Length: rsp.Length}, true
		}
	}
	return last, found, nil
}

// RemoveInode removes every chunk of inode from the given chains (each
// removal replicated through the chain) and returns how many it removed.
func (c *Client) RemoveInode(ctx context.Context, inode uint64, chains []uint32) (int, error) {
	total := 0
	for _, chain := range chains {
		var rsp wire.LastChunkRsp
		err := c.retry(ctx, fmt.Sprintf("remove inode %d on chain %d", inode, chain), func(ctx context.Context, r *routing.Routing) error {
			head, ok := r.Head(chain)
			if !ok {
				return errcode.New(errcode.Unavailable, "chain %d has no serving head", chain)
			}
			var e error
			rsp, e = c.inodeCall(ctx, r, wire.OpRemoveInode, chain, head, inode)
			return e
		})
		if err != nil {
			return total, err
		}
		total += int(rsp.Index)
	}
	return total, nil
}

func (c *Client) inodeCall(ctx context.Context, r *routing.Routing, op transport.Op, chain uint32, t uint64, inode uint64) (wire.LastChunkRsp, error) {
	_, addr, err := r.TargetAddress(t)
	if err != nil {
		return wire.LastChunkRsp{}, errcode.New(errcode.StaleVersion, "%v", err)
	}
	q := wire.InodeReq{Target: t, Chain: chain, ChainVer: r.ChainVersion(chain), Inode: inode}
	resp, err := c.tc.Call(ctx, addr, &transport.Request{Op: op, Ext: q.Encode(nil)}, nil)
	if err != nil {
		return wire.LastChunkRsp{}, err
	}
	defer resp.Release()
	rsp, err := wire.DecodeLastChunkRsp(resp.Ext)
	if err != nil {
		return rsp, errcode.New(errcode.Internal, "%v", err)
	}
	return rsp, nil
}

// WriteV writes the concatenation of data at offset of a chunk, sent as
// one request with the buffers as a scatter list (no copy into one
// buffer); see Write.
func (c *Client) WriteV(ctx context.Context, chain uint32, chunk ChunkID, chunkSize, offset uint32, data ...[]byte) (ChunkState, error) {
	n := 0
	for _, d := range data {
		n += len(d)
	}
	if n == 0 {
		return ChunkState{}, errcode.New(errcode.InvalidArgument, "write to chunk %s: no data", chunk)
	}
	return c.update(ctx, wire.UpdateReq{Chain: chain, Chunk: chunk, Kind: wire.KindWrite, Offset: offset, ChunkSize: chunkSize}, data...)
}
