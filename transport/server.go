package transport

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
)

// ServerConfig configures a data-port server. Zero fields take defaults.
type ServerConfig struct {
	// Addr to listen on; default "127.0.0.1:0" (the kernel picks a port).
	Addr string `toml:"addr"`
	// Token is the cluster token every connection must present.
	Token string `toml:"token"`
	// PeerToken is the secret a connection declaring a Peer identity
	// must prove it holds (its credential is PeerCredential(PeerToken,
	// peer)). Empty: every declared identity is refused, so only plain
	// clients connect.
	PeerToken string `toml:"-"`
	// MaxPayload and MaxExt bound one request frame (DefaultMaxPayload,
	// DefaultMaxExt). Larger frames are refused and the connection closed.
	MaxPayload uint32 `toml:"max_payload"`
	MaxExt     uint32 `toml:"max_ext"`
	// MaxInFlightPerConn bounds handlers running for one connection; past
	// it the server stops reading that connection (TCP backpressure).
	MaxInFlightPerConn int `toml:"max_in_flight_per_conn"`
	// MaxBufferedBytes bounds the request bytes (extension + payload) held
	// in memory by all connections together, from reading a frame's body
	// until its handler returns; a connection whose next frame does not
	// fit waits (TCP backpressure) instead of allocating. Without it one
	// connection could pin MaxPayload x MaxInFlightPerConn (~8 GiB).
	// Default DefaultMaxBufferedBytes; a frame larger than the budget
	// runs alone.
	MaxBufferedBytes int64 `toml:"max_buffered_bytes"`
	// MaxConns bounds open connections; past it new ones are closed at
	// once (counted in ServerStats.RefusedConns). Default DefaultMaxConns.
	MaxConns int `toml:"max_conns"`
	// HandshakeTimeout bounds the wait for a new connection's handshake.
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	// FrameTimeout bounds reading the rest of a frame once its header has
	// arrived, and writing one response.
	FrameTimeout time.Duration `toml:"frame_timeout"`
	// DisableSendfile sends file regions through a user-space copy (for
	// comparison benchmarks).
	DisableSendfile bool `toml:"disable_sendfile"`
	// Logger for connection-level events; default slog.Default().
	Logger *slog.Logger `toml:"-"`
}

func (c *ServerConfig) setDefaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxExt == 0 {
		c.MaxExt = DefaultMaxExt
	}
	if c.MaxInFlightPerConn <= 0 {
		c.MaxInFlightPerConn = 128
	}
	if c.MaxBufferedBytes <= 0 {
		c.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.FrameTimeout <= 0 {
		c.FrameTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server-wide defaults for ServerConfig.
const (
	DefaultMaxBufferedBytes = 1 << 30
	DefaultMaxConns         = 4096
)

// ServerRequest is one request as a handler sees it. Ext and Payload live in
// pooled buffers that stay valid until the handler's response has been
// written (so a handler may echo them back), and must not be kept longer.
type ServerRequest struct {
	Op         Op
	ID         uint64
	Flags      Flags
	Ext        []byte
	Payload    []byte
	RemoteAddr net.Addr
	// Peer is who the connection's caller is, as it said in the
	// handshake and proved with its peer credential (the zero value for
	// a plain client).
	Peer Peer
}

// Segment is one piece of a response payload: either bytes in memory or a
// region of an open file, which the server sends with sendfile(2).
type Segment struct {
	Data   []byte
	File   *os.File
	Offset int64
	Length int64
}

// Bytes makes a memory segment.
func Bytes(b []byte) Segment { return Segment{Data: b} }

// FileRegion makes a segment sending length bytes of f from offset.
func FileRegion(f *os.File, offset, length int64) Segment {
	return Segment{File: f, Offset: offset, Length: length}
}

func (s Segment) size() int64 {
	if s.File != nil {
		return s.Length
	}
	return int64(len(s.Data))
}

// ServerResponse is a handler's successful answer. Done, if set, runs once
// the response has been written or abandoned: release buffers, close
// files there.
type ServerResponse struct {
	Ext     []byte
	Payload []Segment
	Done    func()
	batch   bool
}

// Handler serves one opcode. A non-nil error is sent to the client as its
// errcode.Code (Internal for plain errors) and message; the response is
// then ignored. ctx ends when the connection or the server closes.
type Handler func(ctx context.Context, req *ServerRequest) (*ServerResponse, error)

// Registrar is what a service needs to expose handlers on a data port; an
// RDMA server would implement it too.
type Registrar interface {
	Handle(op Op, h Handler)
}

// ServerStats are cumulative counters.
type ServerStats struct {
	Conns          int64 // connections accepted
	ActiveConns    int64
	Requests       int64 // requests dispatched to handlers
	FrameErrors    int64 // malformed or truncated frames (connection closed)
	AuthFailures   int64 // handshakes refused
	SendfileBytes  int64 // file-region bytes sent with sendfile(2)
	CopiedFileByte int64 // file-region bytes sent through a user-space copy
	RefusedConns   int64 // connections closed at once: MaxConns reached
	BufferedBytes  int64 // request bytes held now (MaxBufferedBytes bounds it)
	MemoryWaiters  int   // connections waiting for request memory now
	PreadBytes     int64 // bytes of small file regions read into memory and sent with their frame
	Frames         int64 // response frames written (handshakes included)
	WriteBatches   int64 // runs of frames written together (Frames / WriteBatches = coalescing)
}

// Server serves framed requests on a TCP data port.
type Server struct {
	cfg ServerConfig
	ln  net.Listener
	lim Limits
	log *slog.Logger
	mem *byteSem // server-wide request memory budget

	hmu      sync.RWMutex
	handlers map[Op]Handler

	mu     sync.Mutex
	conns  map[*serverConn]struct{}
	closed bool

	loops    sync.WaitGroup // accept loop and connection readers
	inflight sync.WaitGroup // running handlers

	nConns, nActive, nReq, nFrameErr, nAuthFail, nSendfile, nCopied, nRefused, nPread, nFrames, nBatches atomic.Int64
}

// NewServer listens on cfg.Addr and starts serving. Register handlers
// before handing the address to clients; until then requests for an
// opcode get NotSupported.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg.setDefaults()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, errcode.New(errcode.Unavailable, "data port: listen on %s: %v", cfg.Addr, err)
	}
	s := &Server{
		cfg:      cfg,
		ln:       ln,
		lim:      Limits{MaxExt: cfg.MaxExt, MaxPayload: cfg.MaxPayload},
		log:      cfg.Logger.With("component", "transport", "addr", ln.Addr().String()),
		handlers: make(map[Op]Handler),
		conns:    make(map[*serverConn]struct{}),
		mem:      newByteSem(cfg.MaxBufferedBytes),
	}
	s.loops.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Handle registers h for op, replacing any earlier handler. op must be a
// user opcode (1..MaxUserOp).
func (s *Server) Handle(op Op, h Handler) {
	if op == 0 || op > MaxUserOp {
		panic(fmt.Sprintf("transport: opcode %#x is reserved", uint16(op)))
	}
	s.hmu.Lock()
	s.handlers[op] = h
	s.hmu.Unlock()
}

func (s *Server) handler(op Op) Handler {
	s.hmu.RLock()
	h := s.handlers[op]
	s.hmu.RUnlock()
	return h
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	cur, _, waiting := s.mem.stats()
	return ServerStats{
		Conns: s.nConns.Load(), ActiveConns: s.nActive.Load(), Requests: s.nReq.Load(),
		FrameErrors: s.nFrameErr.Load(), AuthFailures: s.nAuthFail.Load(),
		SendfileBytes: s.nSendfile.Load(), CopiedFileByte: s.nCopied.Load(),
		RefusedConns: s.nRefused.Load(), BufferedBytes: cur, MemoryWaiters: waiting,
		PreadBytes: s.nPread.Load(), Frames: s.nFrames.Load(), WriteBatches: s.nBatches.Load(),
	}
}

// Close stops the server at once: the listener and every connection are
// closed and handler contexts canceled; clients see their in-flight
// requests fail with Unavailable. It waits for the connection readers,
// not for handlers that ignore their context.
func (s *Server) Close() error {
	conns := s.stop()
	for _, c := range conns {
		c.close()
	}
	s.loops.Wait()
	return nil
}

// Shutdown stops accepting connections and reading requests, lets the
// requests already read finish and their responses go out, then closes
// every connection. If ctx ends first it closes them at once and returns
// ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	conns := s.stop()
	for _, c := range conns {
		c.draining.Store(true)
		_ = c.nc.SetReadDeadline(time.Now()) // wakes the reader, which then exits
	}
	done := make(chan struct{})
	go func() {
		s.loops.Wait() // readers gone: no new handlers can start
		s.inflight.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	for _, c := range conns {
		c.close()
	}
	<-done
	return err
}

func (s *Server) stop() []*serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		_ = s.ln.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

func (s *Server) acceptLoop() {
	defer s.loops.Done()
	backoff := 5 * time.Millisecond
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			// Out of descriptors and the like: wait and retry rather than
			// spin or give up on the port.
			s.log.Warn("accept failed", "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		ctx, cancel := context.WithCancel(context.Background())
		c := &serverConn{
			s:      s,
			nc:     nc,
			br:     bufio.NewReaderSize(nc, 64<<10),
			ctx:    ctx,
			cancel: cancel,
			slots:  make(chan struct{}, s.cfg.MaxInFlightPerConn),
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.close()
			return
		}
		if len(s.conns) >= s.cfg.MaxConns {
			s.mu.Unlock()
			s.nRefused.Add(1)
			s.log.Warn("data connection refused: connection limit reached", "remote", nc.RemoteAddr().String(), "max_conns", s.cfg.MaxConns)
			cancel()
			_ = nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.loops.Add(1)
		s.mu.Unlock()
		s.nConns.Add(1)
		s.nActive.Add(1)
		go c.readLoop()
	}
}

// serverConn is one client connection: a reader goroutine that parses
// frames and starts a goroutine per request, and a send queue (send.go)
// through which responses go out whole, several per system call when
// they are ready together.
type serverConn struct {
	s      *Server
	nc     net.Conn
	br     *bufio.Reader
	ctx    context.Context
	cancel context.CancelFunc
	slots  chan struct{}

	peer Peer // from the handshake

	out       sendQueue
	draining  atomic.Bool
	closeOnce sync.Once
}

func (c *serverConn) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		_ = c.nc.Close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		c.s.nActive.Add(-1)
	})
}

// frameFailure reports a malformed or truncated frame to the peer (best
// effort: it may be gone) and closes the connection. Other connections
// are unaffected.
func (c *serverConn) frameFailure(id uint64, op Op, err error) {
	c.s.nFrameErr.Add(1)
	c.s.log.Warn("closing data connection after bad frame", "remote", c.nc.RemoteAddr().String(), "err", err)
	c.sendSync(c.errorFrame(id, op, errcode.New(errcode.InvalidArgument, "%v; closing connection", err)))
	c.close()
}

func (c *serverConn) readLoop() {
	defer c.s.loops.Done()
	if !c.handshake() {
		c.close()
		return
	}
	var hdr [HeaderSize]byte
	for {
		n, err := readHeader(c.br, &hdr)
		if err != nil {
			var fe *FrameError
			switch {
			case c.draining.Load():
				return // Shutdown closes the connection once handlers finish
			case errors.As(err, &fe):
				c.frameFailure(0, 0, err)
			case n > 0 && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)):
				c.frameFailure(0, 0, &FrameError{fmt.Sprintf("truncated frame header: got %d of %d bytes", n, HeaderSize)})
			default:
				c.close() // peer closed between frames, or a reset
			}
			return
		}
		h, err := DecodeHeader(hdr[:], c.s.lim)
		if err == nil {
			err = checkRequestHeader(h)
		}
		if err != nil {
			c.frameFailure(h.ID, h.Op, err)
			return
		}
		// The server-wide memory budget, taken before the body is read
		// into memory and held until the handler is done with it.
		memN := c.s.mem.clamp(int64(h.ExtLen) + int64(h.PayloadLen))
		if err := c.s.mem.acquire(c.ctx, memN); err != nil {
			return
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.FrameTimeout))
		ext := GetBuffer(int(h.ExtLen))
		payload := GetBuffer(int(h.PayloadLen))
		ne, err := io.ReadFull(c.br, ext)
		np := 0
		if err == nil {
			np, err = io.ReadFull(c.br, payload)
		}
		if err != nil {
			PutBuffer(ext)
			PutBuffer(payload)
			c.s.mem.release(memN)
			if c.draining.Load() {
				return
			}
			c.frameFailure(h.ID, h.Op, &FrameError{fmt.Sprintf("truncated frame (opcode %d, id %d): got %d of %d body bytes: %v",
				h.Op, h.ID, ne+np, int(h.ExtLen)+int(h.PayloadLen), err)})
			return
		}
		_ = c.nc.SetReadDeadline(time.Time{})
		// Backpressure: past the per-connection limit, stop reading until a
		// handler finishes.
		select {
		case c.slots <- struct{}{}:
		case <-c.ctx.Done():
			PutBuffer(ext)
			PutBuffer(payload)
			c.s.mem.release(memN)
			return
		}
		c.s.inflight.Add(1)
		go c.serve(h, ext, payload, memN)
	}
}

func checkRequestHeader(h Header) error {
	switch {
	case h.Flags&FlagResponse != 0:
		return &FrameError{"request frame has the response flag set"}
	case h.Status != errcode.OK:
		return &FrameError{fmt.Sprintf("request frame carries status %d", uint32(h.Status))}
	case h.Op == OpHandshake:
		return &FrameError{"second handshake on an established connection"}
	case h.Op == 0:
		return &FrameError{"opcode 0 is invalid"}
	}
	return nil
}

// handshake reads the client's first frame, checks the cluster token and
// answers with the server's limits, or with Unauthenticated.
func (c *serverConn) handshake() bool {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	var hdr [HeaderSize]byte
	n, err := readHeader(c.br, &hdr)
	if err != nil {
		var fe *FrameError
		if errors.As(err, &fe) {
			c.frameFailure(0, OpHandshake, err)
		} else if n > 0 {
			c.frameFailure(0, OpHandshake, &FrameError{fmt.Sprintf("truncated handshake header: got %d of %d bytes", n, HeaderSize)})
		}
		return false
	}
	h, err := DecodeHeader(hdr[:], c.s.lim)
	switch {
	case err != nil:
	case h.Op != OpHandshake:
		err = &FrameError{fmt.Sprintf("first frame must be a handshake (opcode %#x), got opcode %d", uint16(OpHandshake), h.Op)}
	case h.ExtLen > MaxTokenLen+peerLen || h.PayloadLen != 0:
		err = &FrameError{fmt.Sprintf("handshake with a %d-byte extension and %d payload bytes (want at most %d and 0)", h.ExtLen, h.PayloadLen, MaxTokenLen+peerLen)}
	case h.Flags&FlagPeer != 0 && h.ExtLen < peerLen:
		err = &FrameError{fmt.Sprintf("handshake flags a caller identity but its extension has %d bytes, fewer than %d", h.ExtLen, peerLen)}
	}
	if err != nil {
		c.frameFailure(h.ID, OpHandshake, err)
		return false
	}
	token := make([]byte, h.ExtLen)
	if _, err := io.ReadFull(c.br, token); err != nil {
		c.frameFailure(h.ID, OpHandshake, &FrameError{fmt.Sprintf("truncated handshake token: %v", err)})
		return false
	}
	var peer Peer
	var cred []byte
	if h.Flags&FlagPeer != 0 {
		p := token[len(token)-peerLen:]
		peer = Peer{Role: PeerRole(p[0]), Node: binary.LittleEndian.Uint32(p[1:5])}
		cred = p[5:]
		token = token[:len(token)-peerLen]
	}
	msg := ""
	switch {
	case subtle.ConstantTimeCompare(token, []byte(c.s.cfg.Token)) != 1:
		msg = "wrong cluster token"
		if len(token) == 0 {
			msg = "missing cluster token"
		}
	case h.Flags&FlagPeer == 0:
	case c.s.cfg.PeerToken == "":
		// A server without the peer token cannot check any claim, so it
		// takes none rather than trusting the cluster token for it.
		msg = fmt.Sprintf("connection declares role %d for node %d, but this server has no peer token and takes only plain clients", peer.Role, peer.Node)
	default:
		// hmac.Equal is constant-time: the comparison does not leak how
		// much of a guessed credential was right.
		want := PeerCredential(c.s.cfg.PeerToken, peer)
		if !hmac.Equal(cred, want[:]) {
			msg = fmt.Sprintf("wrong peer credential for node %d (role %d): the caller does not hold this cluster's peer token, or presents a credential made for another node id", peer.Node, peer.Role)
		}
	}
	if msg != "" {
		c.s.nAuthFail.Add(1)
		c.s.log.Warn("data connection refused", "remote", c.nc.RemoteAddr().String(), "reason", msg)
		c.sendSync(c.errorFrame(h.ID, OpHandshake, errcode.New(errcode.Unauthenticated, "%s", msg)))
		return false
	}
	c.peer = peer
	_ = c.nc.SetReadDeadline(time.Time{})
	var limits [8]byte
	binary.LittleEndian.PutUint32(limits[0:], c.s.lim.MaxExt)
	binary.LittleEndian.PutUint32(limits[4:], c.s.lim.MaxPayload)
	rh := Header{Flags: FlagResponse, Op: OpHandshake, ID: h.ID, ExtLen: uint32(len(limits))}
	return c.sendSync(newFrame(&rh, limits[:], nil)) == nil
}

func (c *serverConn) serve(h Header, ext, payload []byte, memN int64) {
	// The request's buffers, its memory grant, its slot and the handler's
	// Done are released once the response has been written (by whichever
	// goroutine writes it: see sendQueue), since a response may point into
	// them.
	var respDone func()
	release := func() {
		if respDone != nil {
			respDone()
		}
		PutBuffer(ext)
		PutBuffer(payload)
		c.s.mem.release(memN)
		<-c.slots
		c.s.inflight.Done()
	}
	c.s.nReq.Add(1)
	if h.Flags&FlagCRC != 0 {
		if got := crcOf(payload); got != h.CRC {
			f := c.errorFrame(h.ID, h.Op, errcode.New(errcode.ChecksumMismatch,
				"request payload CRC32C %#08x, header says %#08x", got, h.CRC))
			f.done = release
			c.send(f)
			return
		}
	}
	var resp *ServerResponse
	var err error
	if h.Op == OpPing {
		resp = &ServerResponse{}
	} else if hd := c.s.handler(h.Op); hd == nil {
		err = errcode.New(errcode.NotSupported, "no handler registered for opcode %d", h.Op)
	} else {
		req := &ServerRequest{Op: h.Op, ID: h.ID, Flags: h.Flags, Ext: ext, Payload: payload, RemoteAddr: c.nc.RemoteAddr(), Peer: c.peer}
		resp, err = callHandler(c.ctx, hd, req)
	}
	if resp != nil && resp.Done != nil {
		respDone = resp.Done
	}
	if err == nil && resp == nil {
		err = errcode.New(errcode.Internal, "handler for opcode %d returned neither response nor error", h.Op)
	}
	var f *outFrame
	if err != nil {
		f = c.errorFrame(h.ID, h.Op, err)
	} else {
		f = c.responseFrame(h, resp)
	}
	inner := f.done
	f.done = func() {
		if inner != nil {
			inner()
		}
		release()
	}
	c.send(f)
}

func callHandler(ctx context.Context, hd Handler, req *ServerRequest) (resp *ServerResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, errcode.New(errcode.Internal, "handler for opcode %d panicked: %v", req.Op, r)
		}
	}()
	return hd(ctx, req)
}

// errorFrame is a response carrying err's code and message.
func (c *serverConn) errorFrame(id uint64, op Op, err error) *outFrame {
	code := errcode.CodeOf(err)
	if code == errcode.OK {
		code = errcode.Internal
	}
	msg := errMessage(err) // the code travels as a number; don't repeat its name
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	rh := Header{Flags: FlagResponse, Op: op, ID: id, Status: code, ExtLen: uint32(len(msg))}
	return newFrame(&rh, []byte(msg), nil)
}

// smallRegion is the largest file region read into memory (pread into a
// pooled buffer) rather than sent with sendfile: for small reads one
// pread plus the frame's single writev costs less than writev + sendfile,
// and a short file shows up before the header is out.
const smallRegion = 64 << 10

// responseFrame checks resp and turns it into a frame; small file
// regions are read into pooled buffers here, in the handler's goroutine,
// so the connection's writer only writes.
func (c *serverConn) responseFrame(h Header, resp *ServerResponse) *outFrame {
	var total int64
	var pooled [][]byte
	releasePooled := func() {
		for _, b := range pooled {
			PutBuffer(b)
		}
	}
	segs := resp.Payload
	copied := false
	for i, seg := range segs {
		total += seg.size()
		if seg.File == nil {
			continue
		}
		if seg.Offset < 0 || seg.Length < 0 {
			releasePooled()
			return c.errorFrame(h.ID, h.Op, errcode.New(errcode.Internal, "file region offset %d length %d is negative", seg.Offset, seg.Length))
		}
		if seg.Length <= smallRegion && !c.s.cfg.DisableSendfile {
			buf := GetBuffer(int(seg.Length))
			n, err := seg.File.ReadAt(buf, seg.Offset)
			if n < len(buf) {
				PutBuffer(buf)
				releasePooled()
				if err == nil || err == io.EOF {
					return c.errorFrame(h.ID, h.Op, errcode.New(errcode.Internal, "file region [%d, %d) of %s ends beyond end of file",
						seg.Offset, seg.Offset+seg.Length, seg.File.Name()))
				}
				return c.errorFrame(h.ID, h.Op, errcode.New(errcode.Internal, "read response file region: %v", err))
			}
			pooled = append(pooled, buf)
			if !copied {
				segs = append([]Segment(nil), segs...)
				copied = true
			}
			segs[i] = Bytes(buf)
			c.s.nPread.Add(seg.Length)
			continue
		}
		// Check the region now: once the header is out, a short file
		// could only be answered by closing the connection.
		fi, err := seg.File.Stat()
		if err != nil {
			releasePooled()
			return c.errorFrame(h.ID, h.Op, errcode.New(errcode.Internal, "stat response file: %v", err))
		}
		if seg.Offset+seg.Length > fi.Size() {
			releasePooled()
			return c.errorFrame(h.ID, h.Op, errcode.New(errcode.Internal, "file region [%d, %d) of %s ends beyond end of file (size %d)",
				seg.Offset, seg.Offset+seg.Length, seg.File.Name(), fi.Size()))
		}
	}
	if total > int64(c.s.lim.MaxPayload) || len(resp.Ext) > int(c.s.lim.MaxExt) {
		releasePooled()
		return c.errorFrame(h.ID, h.Op, errcode.New(errcode.Internal, "response of %d payload bytes and %d extension bytes exceeds the frame limits (%d, %d)",
			total, len(resp.Ext), c.s.lim.MaxPayload, c.s.lim.MaxExt))
	}
	rh := Header{Flags: FlagResponse, Op: h.Op, ID: h.ID, ExtLen: uint32(len(resp.Ext)), PayloadLen: uint32(total)}
	if resp.batch {
		rh.Flags |= FlagBatch
	}
	if h.Flags&FlagCRC != 0 {
		crc, err := segmentsCRC(segs)
		if err != nil {
			releasePooled()
			return c.errorFrame(h.ID, h.Op, errcode.New(errcode.Internal, "checksum response file region: %v", err))
		}
		rh.Flags |= FlagCRC
		rh.CRC = crc
	}
	f := newFrame(&rh, resp.Ext, segs)
	if len(pooled) > 0 {
		f.done = releasePooled
	}
	return f
}

// segmentsCRC is the CRC32C of a payload; file regions are read for it, so
// asking for checksums gives up the zero-copy path (the storage service
// keeps its own chunk checksums and need not ask).
func segmentsCRC(segs []Segment) (uint32, error) {
	var crc uint32
	for _, seg := range segs {
		if seg.File == nil {
			crc = crcUpdate(crc, seg.Data)
			continue
		}
		buf := GetBuffer(int(min(seg.Length, 1<<20)))
		for done := int64(0); done < seg.Length; {
			n := min(int64(len(buf)), seg.Length-done)
			if _, err := seg.File.ReadAt(buf[:n], seg.Offset+done); err != nil {
				PutBuffer(buf)
				return 0, err
			}
			crc = crcUpdate(crc, buf[:n])
			done += n
		}
		PutBuffer(buf)
	}
	return crc, nil
}
