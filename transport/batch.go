package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/emberfs/emberfs/internal/errcode"
)

// A batch frame carries N sub-requests (for example N (chunk, offset,
// length) reads) in one request and N results, each with its own status,
// in one response. The frame has FlagBatch set and its extension holds a
// table; payloads are concatenated so the response data for all
// sub-requests lands contiguously in the caller's buffer.
//
// Request extension:  u32 N | N x (u32 extLen, u32 payloadLen) | sub-exts
// Request payload:    sub-payloads back to back
// Response extension: u32 N | N x (u32 status, u32 extLen, u32 dataLen) | sub-exts
// Response payload:   sub-data back to back
//
// A failed sub-result's ext is its error message. What a sub-request's
// ext and payload mean is up to the service that registered the opcode.

// MaxBatch bounds the sub-requests in one batch frame.
const MaxBatch = 1 << 16

// SubRequest is one entry of a batch.
type SubRequest struct {
	Ext     []byte
	Payload []byte
	// RespSize is the expected size of this entry's data (client side,
	// for the in-flight byte budget).
	RespSize int
}

// SubResult is one entry of a batch response. Data aliases the response
// payload (the caller's respBuf when it fitted).
type SubResult struct {
	Err  error // nil when the entry succeeded; else an *errcode.Error
	Ext  []byte
	Data []byte
}

// BatchResponse holds a batch's results; Release returns a pooled
// payload buffer.
type BatchResponse struct {
	Results []SubResult
	resp    *Response
}

// Release returns a pooled payload buffer; Data slices die with it.
func (b *BatchResponse) Release() {
	if b != nil {
		b.resp.Release()
	}
}

// CallBatch implements Caller.
func (c *Client) CallBatch(ctx context.Context, addr string, op Op, subs []SubRequest, respBuf []byte) (*BatchResponse, error) {
	req, err := batchRequest(op, subs)
	if err != nil {
		return nil, err
	}
	if req.RespSize == 0 {
		req.RespSize = cap(respBuf)
	}
	resp, err := c.Call(ctx, addr, req, respBuf)
	if err != nil {
		return nil, err
	}
	if !resp.batch {
		resp.Release()
		return nil, errcode.New(errcode.Internal, "opcode %d on %s answered a batch with a plain response", op, addr)
	}
	results, err := decodeBatchResults(resp.Ext, resp.Payload, len(subs))
	if err != nil {
		resp.Release()
		return nil, errcode.New(errcode.Internal, "batch response from %s for opcode %d: %v", addr, op, err)
	}
	return &BatchResponse{Results: results, resp: resp}, nil
}

// batchRequest frames subs as one batch request (RespSize: the sum of the
// entries' expected sizes).
func batchRequest(op Op, subs []SubRequest) (*Request, error) {
	if len(subs) == 0 || len(subs) > MaxBatch {
		return nil, errcode.New(errcode.InvalidArgument, "batch of %d sub-requests (want 1 to %d)", len(subs), MaxBatch)
	}
	extLen := 4 + 8*len(subs)
	respSize := 0
	payload := make([][]byte, 0, len(subs))
	for _, s := range subs {
		extLen += len(s.Ext)
		respSize += s.RespSize
		if len(s.Payload) > 0 {
			payload = append(payload, s.Payload)
		}
	}
	ext := make([]byte, 4+8*len(subs), extLen)
	binary.LittleEndian.PutUint32(ext, uint32(len(subs)))
	for i, s := range subs {
		binary.LittleEndian.PutUint32(ext[4+8*i:], uint32(len(s.Ext)))
		binary.LittleEndian.PutUint32(ext[8+8*i:], uint32(len(s.Payload)))
	}
	for _, s := range subs {
		ext = append(ext, s.Ext...)
	}
	return &Request{Op: op, Ext: ext, Payload: payload, RespSize: respSize, flags: FlagBatch}, nil
}

// CallBatchInto implements Caller: like CallBatch, but the response's
// entries are received one by one, entry i straight into dsts[i] when it
// fits in cap(dsts[i]) (the table in the extension arrives before the
// payload, so each entry's length is known before its bytes), else into
// a pooled buffer that Release returns. Result i's Data then aliases
// dsts[i] or that buffer.
func (c *Client) CallBatchInto(ctx context.Context, addr string, op Op, subs []SubRequest, dsts [][]byte) (*BatchResponse, error) {
	if len(dsts) != len(subs) {
		return nil, errcode.New(errcode.InvalidArgument, "batch of %d sub-requests with %d destination buffers", len(subs), len(dsts))
	}
	req, err := batchRequest(op, subs)
	if err != nil {
		return nil, err
	}
	if req.RespSize == 0 {
		for _, d := range dsts {
			req.RespSize += cap(d)
		}
	}
	resp, err := c.call(ctx, addr, req, nil, dsts)
	if err != nil {
		return nil, err
	}
	if !resp.batch || resp.parts == nil {
		resp.Release()
		return nil, errcode.New(errcode.Internal, "opcode %d on %s answered a batch with a plain response", op, addr)
	}
	// receiveInto checked the table against the frame already.
	results, err := decodeBatchTable(resp.Ext, len(subs), func(i int, dl uint32) ([]byte, error) { return resp.parts[i], nil })
	if err != nil {
		resp.Release()
		return nil, errcode.New(errcode.Internal, "batch response from %s for opcode %d: %v", addr, op, err)
	}
	return &BatchResponse{Results: results, resp: resp}, nil
}

// receiveInto reads a batch response's payload entry by entry into the
// call's destinations (see CallBatchInto).
func (cc *clientConn) receiveInto(h Header, cl *call, ext []byte) error {
	sizes, err := batchDataSizes(ext, len(cl.dsts), h.PayloadLen)
	if err != nil {
		// Keep the stream in step, then fail the call alone.
		if _, derr := cc.br.Discard(int(h.PayloadLen)); derr != nil {
			return derr
		}
		cl.err = errcode.New(errcode.Internal, "batch response from %s for opcode %d: %v", cc.addr, h.Op, err)
		return nil
	}
	parts := make([][]byte, len(sizes))
	var pooled [][]byte
	var crc uint32
	for i, dl := range sizes {
		var p []byte
		if int(dl) <= cap(cl.dsts[i]) {
			p = cl.dsts[i][:dl:dl]
		} else {
			b := GetBuffer(int(dl))
			pooled = append(pooled, b)
			p = b[:dl:dl]
		}
		if _, err := io.ReadFull(cc.br, p); err != nil {
			for _, b := range pooled {
				PutBuffer(b)
			}
			return err
		}
		if h.Flags&FlagCRC != 0 {
			crc = crcUpdate(crc, p)
		}
		parts[i] = p
	}
	if h.Flags&FlagCRC != 0 && crc != h.CRC {
		for _, b := range pooled {
			PutBuffer(b)
		}
		cl.err = errcode.New(errcode.ChecksumMismatch, "response from %s for opcode %d: payload CRC32C %#08x, header says %#08x", cc.addr, h.Op, crc, h.CRC)
		return nil
	}
	cl.resp = Response{Ext: ext, batch: true, parts: parts, pooledParts: pooled}
	return nil
}

// batchDataSizes reads each entry's data length from a batch response
// table of want entries and checks that they add up to the payload.
func batchDataSizes(ext []byte, want int, payloadLen uint32) ([]uint32, error) {
	var sizes []uint32
	var total uint64
	_, err := decodeBatchTable(ext, want, func(i int, dl uint32) ([]byte, error) {
		sizes = append(sizes, dl)
		total += uint64(dl)
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	if total != uint64(payloadLen) {
		return nil, fmt.Errorf("entries claim %d data bytes, the payload has %d", total, payloadLen)
	}
	return sizes, nil
}

func decodeBatchResults(ext, payload []byte, want int) ([]SubResult, error) {
	data := payload
	results, err := decodeBatchTable(ext, want, func(i int, dl uint32) ([]byte, error) {
		if uint64(dl) > uint64(len(data)) {
			return nil, fmt.Errorf("entry %d overruns the frame (data %d of %d left)", i, dl, len(data))
		}
		d := data[:dl:dl]
		data = data[dl:]
		return d, nil
	})
	if err != nil {
		return nil, err
	}
	if len(data) != 0 {
		return nil, fmt.Errorf("%d data bytes left after the last entry", len(data))
	}
	return results, nil
}

// decodeBatchTable parses a batch response table of want entries; data
// supplies entry i's data given its length.
func decodeBatchTable(ext []byte, want int, data func(i int, dl uint32) ([]byte, error)) ([]SubResult, error) {
	if len(ext) < 4 {
		return nil, errors.New("extension too short for a batch table")
	}
	n := int(binary.LittleEndian.Uint32(ext))
	if n != want {
		return nil, fmt.Errorf("%d results for %d sub-requests", n, want)
	}
	if len(ext) < 4+12*n {
		return nil, fmt.Errorf("batch table of %d entries truncated (%d bytes)", n, len(ext))
	}
	results := make([]SubResult, n)
	tail := ext[4+12*n:]
	for i := range results {
		e := ext[4+12*i:]
		st := errcode.Code(binary.LittleEndian.Uint32(e))
		el, dl := binary.LittleEndian.Uint32(e[4:]), binary.LittleEndian.Uint32(e[8:])
		if uint64(el) > uint64(len(tail)) {
			return nil, fmt.Errorf("entry %d overruns the frame (ext %d of %d left)", i, el, len(tail))
		}
		r := &results[i]
		r.Ext, tail = tail[:el:el], tail[el:]
		d, err := data(i, dl)
		if err != nil {
			return nil, err
		}
		r.Data = d
		if st != errcode.OK {
			r.Err = errorFromStatus(st, r.Ext)
		}
	}
	if len(tail) != 0 {
		return nil, fmt.Errorf("%d extension bytes left after the last entry", len(tail))
	}
	return results, nil
}

// DecodeBatch splits a batch request into its sub-requests; their slices
// alias req's buffers. A malformed table is an InvalidArgument error.
func DecodeBatch(req *ServerRequest) ([]SubRequest, error) {
	if req.Flags&FlagBatch == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "opcode %d expects a batch frame", req.Op)
	}
	ext := req.Ext
	if len(ext) < 4 {
		return nil, errcode.New(errcode.InvalidArgument, "batch table: extension of %d bytes has no entry count", len(ext))
	}
	n := int(binary.LittleEndian.Uint32(ext))
	if n == 0 || n > MaxBatch {
		return nil, errcode.New(errcode.InvalidArgument, "batch table: %d entries (want 1 to %d)", n, MaxBatch)
	}
	if len(ext) < 4+8*n {
		return nil, errcode.New(errcode.InvalidArgument, "batch table: %d entries need %d bytes, extension has %d", n, 4+8*n, len(ext))
	}
	subs := make([]SubRequest, n)
	tail, data := ext[4+8*n:], req.Payload
	for i := range subs {
		el := binary.LittleEndian.Uint32(ext[4+8*i:])
		pl := binary.LittleEndian.Uint32(ext[8+8*i:])
		if uint64(el) > uint64(len(tail)) || uint64(pl) > uint64(len(data)) {
			return nil, errcode.New(errcode.InvalidArgument, "batch table: entry %d (ext %d, payload %d bytes) overruns the frame", i, el, pl)
		}
		subs[i].Ext, tail = tail[:el:el], tail[el:]
		subs[i].Payload, data = data[:pl:pl], data[pl:]
	}
	if len(tail) != 0 || len(data) != 0 {
		return nil, errcode.New(errcode.InvalidArgument, "batch table: %d extension and %d payload bytes not claimed by any entry", len(tail), len(data))
	}
	return subs, nil
}

// SubReply is a handler's answer to one sub-request: an error (sent as its
// code and message) or an ext plus data from memory or a file region.
type SubReply struct {
	Err  error
	Ext  []byte
	Data Segment
}

// BatchReply builds the response frame for replies; done (may be nil) runs
// after it has been written.
func BatchReply(replies []SubReply, done func()) *ServerResponse {
	n := len(replies)
	extLen := 4 + 12*n
	msgs := make([][]byte, n)
	for i, r := range replies {
		if r.Err != nil {
			msgs[i] = []byte(errMessage(r.Err))
		} else {
			msgs[i] = r.Ext
		}
		extLen += len(msgs[i])
	}
	ext := make([]byte, 4+12*n, extLen)
	binary.LittleEndian.PutUint32(ext, uint32(n))
	segs := make([]Segment, 0, n)
	for i, r := range replies {
		e := ext[4+12*i:]
		var dl int64
		if r.Err != nil {
			code := errcode.CodeOf(r.Err)
			if code == errcode.OK {
				code = errcode.Internal
			}
			binary.LittleEndian.PutUint32(e, uint32(code))
		} else if dl = r.Data.size(); dl > 0 {
			segs = append(segs, r.Data)
		}
		binary.LittleEndian.PutUint32(e[4:], uint32(len(msgs[i])))
		binary.LittleEndian.PutUint32(e[8:], uint32(dl))
	}
	for _, m := range msgs {
		ext = append(ext, m...)
	}
	return &ServerResponse{Ext: ext, Payload: segs, Done: done, batch: true}
}

// BatchHandlerFunc serves a decoded batch, one reply per sub-request.
type BatchHandlerFunc func(ctx context.Context, req *ServerRequest, subs []SubRequest) ([]SubReply, func(), error)

// HandleBatch adapts fn to a Handler: it decodes the batch table, checks
// that fn answered every entry, and frames the replies. The func fn
// returns (may be nil) runs after the response is written.
func HandleBatch(fn BatchHandlerFunc) Handler {
	return func(ctx context.Context, req *ServerRequest) (*ServerResponse, error) {
		subs, err := DecodeBatch(req)
		if err != nil {
			return nil, err
		}
		replies, done, err := fn(ctx, req, subs)
		if err != nil {
			if done != nil {
				done()
			}
			return nil, err
		}
		if len(replies) != len(subs) {
			if done != nil {
				done()
			}
			return nil, errcode.New(errcode.Internal, "batch handler for opcode %d gave %d replies to %d sub-requests", req.Op, len(replies), len(subs))
		}
		return BatchReply(replies, done), nil
	}
}

func errMessage(err error) string {
	var e *errcode.Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return err.Error()
}
