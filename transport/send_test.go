package transport

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/emberfs/emberfs/internal/testutil"
)

// Responses that are ready while the connection's writer is busy leave
// together: with a 16 MiB response stuck on a client that does not read,
// twenty small responses queue up, and once the client reads they are
// written in one batch (one writev) after the big one, each intact.
func TestResponsesCoalesce(t *testing.T) {
	ts := startTestServer(t, ServerConfig{})
	nc := rawHandshake(t, ts.Addr())
	var sc *serverConn
	testutil.WaitUntil(t, "the connection", func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		for c := range ts.conns {
			sc = c
		}
		return sc != nil
	})
	queue := func() (writing bool, queued int) {
		sc.out.mu.Lock()
		defer sc.out.mu.Unlock()
		return sc.out.writing, len(sc.out.queue)
	}
	send := func(id uint64, ext, payload []byte) error {
		h := Header{Op: opEcho, ID: id, ExtLen: uint32(len(ext)), PayloadLen: uint32(len(payload))}
		b := append(header(h), ext...)
		_, err := nc.Write(append(b, payload...))
		return err
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20)
	// Sent from a goroutine: the server may stop reading once its reply
	// stalls, and this write would then wait for nothing.
	bigSent := make(chan error, 1)
	go func() { bigSent <- send(1, nil, big) }()
	testutil.WaitUntil(t, "the big response to stall the writer", func() bool {
		w, q := queue()
		return w && q == 0 && ts.Stats().Frames == 2 // the handshake, then the big one being written
	})
	const small = 20
	for i := range small {
		ext := make([]byte, 8)
		binary.LittleEndian.PutUint64(ext, uint64(100+i))
		if err := send(uint64(100+i), ext, []byte("small")); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-bigSent; err != nil {
		t.Fatal(err)
	}
	testutil.WaitUntil(t, "the small responses to queue", func() bool { _, q := queue(); return q == small })
	before := ts.Stats()

	seen := map[uint64]bool{}
	for range small + 1 {
		var hdr [HeaderSize]byte
		if _, err := io.ReadFull(nc, hdr[:]); err != nil {
			t.Fatal(err)
		}
		h, err := DecodeHeader(hdr[:], Limits{MaxExt: 1 << 16, MaxPayload: 32 << 20})
		if err != nil {
			t.Fatal(err)
		}
		body := make([]byte, h.ExtLen+h.PayloadLen)
		if _, err := io.ReadFull(nc, body); err != nil {
			t.Fatal(err)
		}
		switch {
		case h.ID == 1:
			if len(seen) != 0 || !bytes.Equal(body, big) {
				t.Fatalf("big response: came after %d others or content differs", len(seen))
			}
		case h.ID >= 100 && h.ID < 100+small:
			if binary.LittleEndian.Uint64(body) != h.ID || string(body[8:]) != "small" {
				t.Fatalf("response %d: body %q", h.ID, body)
			}
		default:
			t.Fatalf("unexpected response id %d", h.ID)
		}
		seen[h.ID] = true
	}
	testutil.WaitUntil(t, "the counters", func() bool { return ts.Stats().Frames == 2+small })
	st := ts.Stats()
	if batches := st.WriteBatches - before.WriteBatches; batches != 1 {
		t.Fatalf("the %d queued responses went out in %d batches, want 1 (stats %+v)", small, batches, st)
	}
}
