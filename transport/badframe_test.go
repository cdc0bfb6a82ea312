package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
)

// rawHandshake opens a plain TCP connection and completes the handshake
// by hand, so the test can then write arbitrary bytes.
func rawHandshake(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc := rawConn(t, addr)
	if _, err := handshake(nc, testToken, Peer{}, nil); err != nil {
		t.Fatal(err)
	}
	return nc
}

func header(h Header) []byte {
	b := make([]byte, HeaderSize)
	h.Encode(b)
	return b
}

// readErrorFrame reads one response frame and then expects the server to
// have closed the connection.
func readErrorFrame(t *testing.T, nc net.Conn) (errcode.Code, string) {
	t.Helper()
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		t.Fatalf("no error frame from the server: %v", err)
	}
	h, err := DecodeHeader(hdr[:], Limits{MaxExt: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, h.ExtLen)
	if _, err := io.ReadFull(nc, msg); err != nil {
		t.Fatal(err)
	}
	if h.Flags&FlagResponse == 0 || h.PayloadLen != 0 {
		t.Fatalf("error frame has flags %#x payload %d", h.Flags, h.PayloadLen)
	}
	var one [1]byte
	if _, err := nc.Read(one[:]); !errors.Is(err, io.EOF) {
		t.Fatalf("server kept the connection open after a bad frame (read: %v)", err)
	}
	return h.Status, string(msg)
}

func TestGarbageAndTruncatedFrames(t *testing.T) {
	ts := startTestServer(t, ServerConfig{MaxPayload: 1 << 20})
	good := Header{Op: opEcho, ID: 9, PayloadLen: 4}
	cases := []struct {
		name      string
		handshake bool
		send      []byte
		halfClose bool
		want      string
	}{
		{"http before handshake", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, "bad magic"},
		{"request before handshake", false, header(good), false, "first frame must be a handshake"},
		{"bad magic", true, append([]byte("XXXX"), header(good)[4:]...), false, "bad magic"},
		{"wrong version", true, func() []byte { b := header(good); b[4] = 9; return b }(), false, "unsupported protocol version 9"},
		{"unknown flags", true, func() []byte { b := header(good); b[5] = 0x80; return b }(), false, "unknown flag bits"},
		{"oversize payload", true, header(Header{Op: opEcho, ID: 3, PayloadLen: 1<<20 + 1}), false, "payload length 1048577 exceeds limit 1048576"},
		{"oversize ext", true, header(Header{Op: opEcho, ID: 3, ExtLen: 1 << 30}), false, "header extension length"},
		{"response flag", true, header(Header{Flags: FlagResponse, Op: opEcho, ID: 3}), false, "response flag"},
		{"opcode zero", true, header(Header{ID: 3}), false, "opcode 0"},
		{"truncated header", true, header(good)[:10], true, "truncated frame header: got 10 of 32"},
		{"truncated body", true, append(header(good), 'a', 'b'), true, "got 2 of 4 body bytes"},
		{"truncated handshake", false, header(Header{Op: OpHandshake})[:20], true, "truncated handshake header"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var nc net.Conn
			if tc.handshake {
				nc = rawHandshake(t, ts.Addr())
			} else {
				var err error
				if nc, err = net.Dial("tcp", ts.Addr()); err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
			}
			if _, err := nc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.halfClose {
				_ = nc.(*net.TCPConn).CloseWrite()
			}
			code, msg := readErrorFrame(t, nc)
			if code != errcode.InvalidArgument || !strings.Contains(msg, tc.want) {
				t.Fatalf("got %v %q, want invalid argument mentioning %q", code, msg, tc.want)
			}
			// The server keeps serving: a fresh, well-behaved client works.
			c := newTestClient(t, ClientConfig{})
			resp, err := c.Call(testCtx(t), ts.Addr(), &Request{Op: opEcho, Payload: [][]byte{[]byte("ok")}}, nil)
			if err != nil || string(resp.Payload) != "ok" {
				t.Fatalf("server stopped serving after %s: %v", tc.name, err)
			}
		})
	}
	if n := ts.Stats().FrameErrors; n != int64(len(cases)) {
		t.Fatalf("server counted %d frame errors, want %d", n, len(cases))
	}
}

func TestBadRequestChecksum(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	nc := rawHandshake(t, ts.Addr())
	body := []byte("payload")
	h := Header{Flags: FlagCRC, Op: opEcho, ID: 1, PayloadLen: uint32(len(body)), CRC: crcOf(body) ^ 1}
	if _, err := nc.Write(append(header(h), body...)); err != nil {
		t.Fatal(err)
	}
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		t.Fatal(err)
	}
	rh, err := DecodeHeader(hdr[:], Limits{MaxExt: 4096})
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, rh.ExtLen)
	io.ReadFull(nc, msg)
	if rh.ID != 1 || rh.Status != errcode.ChecksumMismatch || !bytes.Contains(msg, []byte("CRC32C")) {
		t.Fatalf("got id %d status %v %q, want checksum mismatch for id 1", rh.ID, rh.Status, msg)
	}
	// A checksum error is per request: the same connection still serves.
	h = Header{Flags: FlagCRC, Op: opEcho, ID: 2, PayloadLen: uint32(len(body)), CRC: crcOf(body)}
	if _, err := nc.Write(append(header(h), body...)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		t.Fatal(err)
	}
	rh, _ = DecodeHeader(hdr[:], Limits{MaxExt: 4096, MaxPayload: 4096})
	got := make([]byte, rh.PayloadLen)
	io.ReadFull(nc, got)
	if rh.ID != 2 || rh.Status != errcode.OK || rh.Flags&FlagCRC == 0 || rh.CRC != crcOf(got) || !bytes.Equal(got, body) {
		t.Fatalf("good request after a bad checksum: header %+v payload %q", rh, got)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Flags: FlagCRC | FlagBatch, Op: 0x1234, ID: 1<<63 + 5, Status: errcode.StaleVersion, ExtLen: 77, PayloadLen: 1 << 20, CRC: 0xdeadbeef}
	b := header(h)
	if !bytes.Equal(b[:4], []byte("EMBF")) || b[4] != Version || binary.LittleEndian.Uint16(b[6:]) != 0x1234 {
		t.Fatalf("layout: % x", b)
	}
	got, err := DecodeHeader(b, Limits{MaxExt: 77, MaxPayload: 1 << 20})
	if err != nil || got != h {
		t.Fatalf("decoded %+v, %v; want %+v", got, err, h)
	}
	if _, err := DecodeHeader(b[:31], Limits{}); err == nil {
		t.Fatal("short header accepted")
	}
}
