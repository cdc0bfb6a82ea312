package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
)

// Caller is the client side of a data transport as the storage client uses
// it. The TCP Client implements it; an RDMA transport can fill the same
// interface (the response buffer then becomes the RDMA write target).
type Caller interface {
	// Call sends req to addr and waits for the response. When the response
	// payload fits in cap(respBuf) it is received straight into respBuf.
	Call(ctx context.Context, addr string, req *Request, respBuf []byte) (*Response, error)
	// CallBatch sends many sub-requests in one frame; each result carries
	// its own status.
	CallBatch(ctx context.Context, addr string, op Op, subs []SubRequest, respBuf []byte) (*BatchResponse, error)
	// CallBatchInto is CallBatch with one destination per sub-request:
	// entry i's data is received straight into dsts[i] when it fits in
	// cap(dsts[i]), else into a pooled buffer (released by Release).
	CallBatchInto(ctx context.Context, addr string, op Op, subs []SubRequest, dsts [][]byte) (*BatchResponse, error)
	Close() error
}

var _ Caller = (*Client)(nil)

// ClientConfig configures a data-port client. Zero fields take defaults.
type ClientConfig struct {
	// Token is the cluster token presented at connection set-up.
	Token string `toml:"token"`
	// Peer is who this caller says it is at connection set-up (storage
	// services set it; the zero value is a plain client).
	Peer Peer `toml:"-"`
	// PeerToken is the secret the credential proving Peer is derived
	// from (PeerCredential); only servers hold it. Used only when Peer
	// is set: a server refuses a declared Peer whose credential is wrong.
	PeerToken string `toml:"-"`
	// ConnsPerAddr is the size of the connection pool per server (default
	// 2); requests are multiplexed and pipelined over each connection.
	ConnsPerAddr int `toml:"conns_per_addr"`
	// MaxInFlightBytes caps the request plus expected response bytes of
	// all outstanding calls (default 256 MiB): the TCP stand-in for 3FS's
	// request-to-send control, so a client reading from many servers at
	// once does not flood its own receive path (incast).
	MaxInFlightBytes int64 `toml:"max_in_flight_bytes"`
	// DialTimeout bounds connecting and the handshake (default 5 s).
	DialTimeout time.Duration `toml:"dial_timeout"`
	// FrameTimeout bounds receiving a frame body once its header arrived,
	// and writing one request (default 30 s).
	FrameTimeout time.Duration `toml:"frame_timeout"`
	// MaxPayload and MaxExt bound response frames accepted.
	MaxPayload uint32 `toml:"max_payload"`
	MaxExt     uint32 `toml:"max_ext"`
	// Checksum adds CRC32C to request payloads and asks servers to add it
	// to responses; mismatches fail the call with ChecksumMismatch.
	Checksum bool `toml:"checksum"`
	// Logger; default slog.Default().
	Logger *slog.Logger `toml:"-"`
}

func (c *ClientConfig) setDefaults() {
	if c.ConnsPerAddr <= 0 {
		c.ConnsPerAddr = 2
	}
	if c.MaxInFlightBytes <= 0 {
		c.MaxInFlightBytes = 256 << 20
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.FrameTimeout <= 0 {
		c.FrameTimeout = 30 * time.Second
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxExt == 0 {
		c.MaxExt = DefaultMaxExt
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Request is one call. Payload is a scatter list sent with writev, so a
// caller can send a header it built plus user data without copying.
type Request struct {
	Op      Op
	Ext     []byte
	Payload [][]byte
	// RespSize is the expected response payload size, counted against
	// MaxInFlightBytes; 0 means cap(respBuf).
	RespSize int

	flags Flags
}

// Response is a successful call's answer. Payload aliases the caller's
// respBuf when it fitted there; otherwise it is a pooled buffer that
// Release returns.
type Response struct {
	Ext     []byte
	Payload []byte
	pooled  []byte
	batch   bool
	// parts (CallBatchInto) are the entries' data, each in its caller
	// destination or in one of pooledParts.
	parts       [][]byte
	pooledParts [][]byte
}

// Release returns pooled payload buffers. Safe to call on any Response,
// more than once; Payload must not be used afterwards.
func (r *Response) Release() {
	if r == nil {
		return
	}
	if r.pooled != nil {
		PutBuffer(r.pooled)
		r.pooled, r.Payload = nil, nil
	}
	for _, b := range r.pooledParts {
		PutBuffer(b)
	}
	r.pooledParts, r.parts = nil, nil
}

// ClientStats are the client's gauges and counters.
type ClientStats struct {
	InFlightBytes     int64 // bytes held against MaxInFlightBytes now
	PeakInFlightBytes int64
	WaitingForBudget  int   // calls queued for in-flight budget now
	Dials             int64 // connections established (first ones and reconnects)
	BrokenConns       int64 // connections that failed
}

// Client sends requests to data-port servers.
type Client struct {
	cfg ClientConfig
	sem *byteSem
	log *slog.Logger

	mu     sync.Mutex
	peers  map[string]*peer
	closed bool

	nDials, nBroken atomic.Int64
}

// NewClient makes a client; connections are made on first use.
func NewClient(cfg ClientConfig) *Client {
	cfg.setDefaults()
	return &Client{
		cfg:   cfg,
		sem:   newByteSem(cfg.MaxInFlightBytes),
		log:   cfg.Logger.With("component", "transport-client"),
		peers: make(map[string]*peer),
	}
}

// Stats returns the client's gauges and counters.
func (c *Client) Stats() ClientStats {
	cur, peak, waiting := c.sem.stats()
	return ClientStats{InFlightBytes: cur, PeakInFlightBytes: peak, WaitingForBudget: waiting,
		Dials: c.nDials.Load(), BrokenConns: c.nBroken.Load()}
}

// Close fails every outstanding call with Unavailable and closes all
// connections.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	peers := c.peers
	c.peers = map[string]*peer{}
	c.mu.Unlock()
	for _, p := range peers {
		for i := range p.slots {
			s := &p.slots[i]
			s.mu.Lock()
			if s.conn != nil {
				s.conn.fail(errors.New("client closed"))
			}
			s.mu.Unlock()
		}
	}
	return nil
}

// peer is the connection pool for one server address.
type peer struct {
	addr  string
	slots []peerSlot
	rr    atomic.Uint32
}

type peerSlot struct {
	mu   sync.Mutex
	conn *clientConn
}

func (c *Client) peer(addr string) (*peer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errcode.New(errcode.Unavailable, "data client is closed")
	}
	p := c.peers[addr]
	if p == nil {
		p = &peer{addr: addr, slots: make([]peerSlot, c.cfg.ConnsPerAddr)}
		c.peers[addr] = p
	}
	return p, nil
}

// conn picks a pooled connection round-robin, dialing (again) when the
// slot is empty or its connection broke.
func (c *Client) conn(ctx context.Context, addr string) (*clientConn, error) {
	p, err := c.peer(addr)
	if err != nil {
		return nil, err
	}
	s := &p.slots[int(p.rr.Add(1))%len(p.slots)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && !s.conn.dead.Load() {
		return s.conn, nil
	}
	cc, err := c.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	s.conn = cc
	return cc, nil
}

func ctxError(ctx context.Context, what string) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return errcode.New(errcode.DeadlineExceeded, "%s: %v", what, err)
	}
	return errcode.New(errcode.Canceled, "%s: %v", what, err)
}

// Call implements Caller.
func (c *Client) Call(ctx context.Context, addr string, req *Request, respBuf []byte) (*Response, error) {
	return c.call(ctx, addr, req, respBuf, nil)
}

// call sends req; a batch response is received into dsts (one per entry)
// when dsts is not nil, else into respBuf.
func (c *Client) call(ctx context.Context, addr string, req *Request, respBuf []byte, dsts [][]byte) (*Response, error) {
	var payloadLen int
	for _, p := range req.Payload {
		payloadLen += len(p)
	}
	if req.Op == 0 || (req.Op > MaxUserOp && req.Op != OpPing) {
		return nil, errcode.New(errcode.InvalidArgument, "opcode %#x is not a user opcode", uint16(req.Op))
	}
	if err := checkSizes(len(req.Ext), payloadLen, Limits{MaxExt: c.cfg.MaxExt, MaxPayload: c.cfg.MaxPayload}); err != nil {
		return nil, err
	}
	respSize := req.RespSize
	if respSize <= 0 {
		respSize = cap(respBuf)
	}
	weight := c.sem.clamp(int64(2*HeaderSize + len(req.Ext) + payloadLen + respSize))
	if err := c.sem.acquire(ctx, weight); err != nil {
		return nil, ctxError(ctx, fmt.Sprintf("waiting for in-flight budget for opcode %d to %s", req.Op, addr))
	}
	defer c.sem.release(weight)

	cc, err := c.conn(ctx, addr)
	if err != nil {
		return nil, err
	}
	if err := checkSizes(len(req.Ext), payloadLen, cc.lim); err != nil {
		return nil, err
	}
	cl := &call{respBuf: respBuf, dsts: dsts, done: make(chan struct{})}
	id, err := cc.register(cl)
	if err != nil {
		return nil, err
	}
	h := Header{Flags: req.flags, Op: req.Op, ID: id, ExtLen: uint32(len(req.Ext)), PayloadLen: uint32(payloadLen)}
	if c.cfg.Checksum {
		h.Flags |= FlagCRC
		h.CRC = crcOf(req.Payload...)
	}
	if err := cc.write(&h, req.Ext, req.Payload); err != nil {
		cc.fail(fmt.Errorf("write request: %w", err))
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		if cl.state.CompareAndSwap(callWaiting, callAbandoned) {
			cc.forget(id)
			return nil, ctxError(ctx, fmt.Sprintf("opcode %d to %s", req.Op, addr))
		}
		// The reader is already receiving into respBuf: wait so the caller
		// never gets its buffer back while we still write to it.
		<-cl.done
	}
	if cl.err != nil {
		return nil, cl.err
	}
	return &cl.resp, nil
}

func checkSizes(ext, payload int, lim Limits) error {
	if ext > int(lim.MaxExt) {
		return errcode.New(errcode.InvalidArgument, "request header extension of %d bytes exceeds the frame limit of %d", ext, lim.MaxExt)
	}
	if payload > int(lim.MaxPayload) {
		return errcode.New(errcode.InvalidArgument, "request payload of %d bytes exceeds the frame limit of %d", payload, lim.MaxPayload)
	}
	return nil
}

const (
	callWaiting   int32 = iota
	callClaimed         // the reader (or a failing connection) completes it
	callAbandoned       // the caller gave up; its response is discarded
)

type call struct {
	state   atomic.Int32
	respBuf []byte
	dsts    [][]byte // non-nil: a batch received entry by entry (CallBatchInto)
	done    chan struct{}
	resp    Response
	err     error
}

// clientConn is one pooled connection: writers serialize on wmu, one
// reader goroutine matches responses to calls by request id.
type clientConn struct {
	cl   *Client
	addr string
	nc   net.Conn
	br   *bufio.Reader
	lim  Limits // the server's, from the handshake

	wmu sync.Mutex

	mu      sync.Mutex
	pending map[uint64]*call // nil once the connection failed
	nextID  uint64
	dead    atomic.Bool
}

func (c *Client) dial(ctx context.Context, addr string) (*clientConn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxError(ctx, "dial data port "+addr)
		}
		return nil, errcode.New(errcode.Unavailable, "dial data port %s: %v", addr, err)
	}
	deadline, _ := dctx.Deadline()
	_ = nc.SetDeadline(deadline)
	var cred []byte
	if c.cfg.Peer != (Peer{}) {
		pc := PeerCredential(c.cfg.PeerToken, c.cfg.Peer)
		cred = pc[:]
	}
	lim, err := handshake(nc, c.cfg.Token, c.cfg.Peer, cred)
	if err != nil {
		_ = nc.Close()
		if ctx.Err() != nil {
			// The caller's deadline ran out during the handshake (the
			// connection's deadline is the caller's): say so, not
			// "unavailable".
			return nil, ctxError(ctx, "handshake with data port "+addr)
		}
		if errcode.Is(err, errcode.Unauthenticated) {
			return nil, errcode.New(errcode.Unauthenticated, "data port %s refused the connection: %s", addr, errMessage(err))
		}
		return nil, errcode.New(errcode.Unavailable, "handshake with data port %s: %v", addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	c.nDials.Add(1)
	cc := &clientConn{
		cl:      c,
		addr:    addr,
		nc:      nc,
		br:      bufio.NewReaderSize(nc, 64<<10),
		lim:     Limits{MaxExt: min(lim.MaxExt, c.cfg.MaxExt), MaxPayload: min(lim.MaxPayload, c.cfg.MaxPayload)},
		pending: make(map[uint64]*call),
	}
	go cc.readLoop()
	return cc, nil
}

// handshake sends the token (and the caller's identity with its
// credential cred, if it has a role) and reads the server's limits.
func handshake(nc net.Conn, token string, peer Peer, cred []byte) (Limits, error) {
	if len(token) > MaxTokenLen {
		return Limits{}, errcode.New(errcode.InvalidArgument, "cluster token of %d bytes exceeds %d", len(token), MaxTokenLen)
	}
	ext := []byte(token)
	h := Header{Op: OpHandshake}
	if peer != (Peer{}) {
		if len(cred) != PeerCredentialLen {
			return Limits{}, errcode.New(errcode.InvalidArgument, "peer credential of %d bytes, want %d", len(cred), PeerCredentialLen)
		}
		h.Flags |= FlagPeer
		ext = append(peer.append(ext), cred...)
	}
	h.ExtLen = uint32(len(ext))
	var hdr [HeaderSize]byte
	h.Encode(hdr[:])
	bufs := net.Buffers{hdr[:], ext}
	if _, err := bufs.WriteTo(nc); err != nil {
		return Limits{}, err
	}
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		return Limits{}, fmt.Errorf("read handshake response: %w", err)
	}
	rh, err := DecodeHeader(hdr[:], Limits{MaxExt: 4096})
	if err != nil {
		return Limits{}, err
	}
	ext = make([]byte, rh.ExtLen)
	if _, err := io.ReadFull(nc, ext); err != nil {
		return Limits{}, fmt.Errorf("read handshake response: %w", err)
	}
	if rh.Status != errcode.OK {
		return Limits{}, errorFromStatus(rh.Status, ext)
	}
	if rh.Flags&FlagResponse == 0 || rh.Op != OpHandshake || len(ext) < 8 {
		return Limits{}, &FrameError{"malformed handshake response"}
	}
	return Limits{MaxExt: binary.LittleEndian.Uint32(ext[0:]), MaxPayload: binary.LittleEndian.Uint32(ext[4:])}, nil
}

func (cc *clientConn) register(cl *call) (uint64, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.pending == nil {
		return 0, errcode.New(errcode.Unavailable, "connection to data port %s was lost", cc.addr)
	}
	cc.nextID++
	cc.pending[cc.nextID] = cl
	return cc.nextID, nil
}

func (cc *clientConn) forget(id uint64) {
	cc.mu.Lock()
	if cc.pending != nil {
		delete(cc.pending, id)
	}
	cc.mu.Unlock()
}

// write sends one request frame with a single writev.
func (cc *clientConn) write(h *Header, ext []byte, payload [][]byte) error {
	var hdr [HeaderSize]byte
	h.Encode(hdr[:])
	var vec [8][]byte
	bufs := append(vec[:0], hdr[:])
	if len(ext) > 0 {
		bufs = append(bufs, ext)
	}
	for _, p := range payload {
		if len(p) > 0 {
			bufs = append(bufs, p)
		}
	}
	nb := net.Buffers(bufs)
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	_ = cc.nc.SetWriteDeadline(time.Now().Add(cc.cl.cfg.FrameTimeout))
	_, err := nb.WriteTo(cc.nc)
	return err
}

// fail marks the connection broken and fails every call waiting on it with
// Unavailable; the next call on its pool slot dials a new one.
func (cc *clientConn) fail(cause error) {
	cc.mu.Lock()
	pending := cc.pending
	cc.pending = nil
	cc.mu.Unlock()
	if pending == nil {
		return // already failed
	}
	cc.dead.Store(true)
	cc.cl.nBroken.Add(1)
	_ = cc.nc.Close()
	err := errcode.New(errcode.Unavailable, "connection to data port %s lost: %v", cc.addr, cause)
	for _, cl := range pending {
		if cl.state.CompareAndSwap(callWaiting, callClaimed) {
			cl.err = err
			close(cl.done)
		}
	}
}

func (cc *clientConn) readLoop() {
	var hdr [HeaderSize]byte
	lim := Limits{MaxExt: cc.cl.cfg.MaxExt, MaxPayload: cc.cl.cfg.MaxPayload}
	for {
		if _, err := readHeader(cc.br, &hdr); err != nil {
			cc.fail(err)
			return
		}
		h, err := DecodeHeader(hdr[:], lim)
		if err == nil && h.Flags&FlagResponse == 0 {
			err = &FrameError{"server sent a frame without the response flag"}
		}
		if err != nil {
			cc.fail(err)
			return
		}
		_ = cc.nc.SetReadDeadline(time.Now().Add(cc.cl.cfg.FrameTimeout))
		cc.mu.Lock()
		cl := cc.pending[h.ID]
		if cl != nil {
			delete(cc.pending, h.ID)
		}
		cc.mu.Unlock()
		if cl == nil || !cl.state.CompareAndSwap(callWaiting, callClaimed) {
			// Abandoned call, or a connection-level error from the server.
			var msg []byte
			if h.ID == 0 && h.Status != errcode.OK && h.ExtLen <= 4096 {
				msg = make([]byte, h.ExtLen)
				if _, err := io.ReadFull(cc.br, msg); err != nil {
					cc.fail(err)
					return
				}
				cc.fail(fmt.Errorf("server reported %v", errorFromStatus(h.Status, msg)))
				return
			}
			if _, err := cc.br.Discard(int(h.ExtLen) + int(h.PayloadLen)); err != nil {
				cc.fail(err)
				return
			}
			_ = cc.nc.SetReadDeadline(time.Time{})
			continue
		}
		if err := cc.receive(h, cl); err != nil {
			cl.err = errcode.New(errcode.Unavailable, "connection to data port %s lost while receiving a response: %v", cc.addr, err)
			close(cl.done)
			cc.fail(err)
			return
		}
		close(cl.done)
		_ = cc.nc.SetReadDeadline(time.Time{})
	}
}

// receive reads a response body into cl, straight into cl.respBuf when the
// payload fits there.
func (cc *clientConn) receive(h Header, cl *call) error {
	var ext []byte
	if h.ExtLen > 0 {
		ext = make([]byte, h.ExtLen)
		if _, err := io.ReadFull(cc.br, ext); err != nil {
			return err
		}
	}
	if cl.dsts != nil && h.Status == errcode.OK && h.Flags&FlagBatch != 0 {
		return cc.receiveInto(h, cl, ext)
	}
	n := int(h.PayloadLen)
	var payload, pooled []byte
	if n <= cap(cl.respBuf) {
		payload = cl.respBuf[:n]
	} else {
		pooled = GetBuffer(n)
		payload = pooled
	}
	if _, err := io.ReadFull(cc.br, payload); err != nil {
		PutBuffer(pooled)
		return err
	}
	if h.Status != errcode.OK {
		PutBuffer(pooled)
		cl.err = errorFromStatus(h.Status, ext)
		return nil
	}
	if h.Flags&FlagCRC != 0 {
		if got := crcOf(payload); got != h.CRC {
			PutBuffer(pooled)
			cl.err = errcode.New(errcode.ChecksumMismatch, "response from %s for opcode %d: payload CRC32C %#08x, header says %#08x",
				cc.addr, h.Op, got, h.CRC)
			return nil
		}
	}
	cl.resp = Response{Ext: ext, Payload: payload, pooled: pooled, batch: h.Flags&FlagBatch != 0}
	return nil
}

// Ping makes one empty round trip to addr (health checks, latency probes).
func (c *Client) Ping(ctx context.Context, addr string) error {
	_, err := c.Call(ctx, addr, &Request{Op: OpPing}, nil)
	return err
}
