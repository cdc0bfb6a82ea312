package service_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// TestBadInputOnDataPort sends malformed and out-of-range requests to a
// chain head's data port: each gets an error naming what was wrong, and
// the server keeps serving normal requests after every one.
func TestBadInputOnDataPort(t *testing.T) {
	c, chains, cl := startCluster(t, 1, 1)
	chain := chains[0]
	ctx := context.Background()
	r := c.Current()
	head, _ := r.Head(chain)
	_, addr, _ := r.TargetAddress(head)
	cv := r.ChainVersion(chain)
	tc := transport.NewClient(transport.ClientConfig{Token: c.Token()})
	defer tc.Close()
	id := chunkengine.ChunkID{Inode: 3}

	healthy := func(step string) {
		t.Helper()
		data := []byte("still serving after " + step)
		if _, err := cl.Write(ctx, chain, id, chunkSize, 0, data); err != nil {
			t.Fatalf("after %s: write: %v", step, err)
		}
		buf := make([]byte, len(data))
		if res, err := cl.Read(ctx, chain, id, 0, buf, storageclient.ReadOptions{}); err != nil || string(buf[:res.N]) != string(data) {
			t.Fatalf("after %s: read %q, %v", step, buf, err)
		}
	}
	healthy("start")
	upd := func(u wire.UpdateReq) wire.UpdateReq {
		u.Target, u.Chain, u.ChainVer = head, chain, cv
		return u
	}
	cases := []struct {
		name    string
		op      transport.Op
		ext     []byte
		payload []byte
		code    errcode.Code
		msg     string
	}{
		{"oversize write", wire.OpWrite, func() []byte {
			u := upd(wire.UpdateReq{Chunk: id, Kind: wire.KindWrite, ChunkSize: chunkSize})
			return u.Encode(nil)
		}(),
			make([]byte, chunkSize+1), errcode.OutOfRange, "past its chunk size"},
		{"write past chunk size", wire.OpWrite, func() []byte {
			u := upd(wire.UpdateReq{Chunk: id, Kind: wire.KindWrite, Offset: chunkSize - 10})
			return u.Encode(nil)
		}(), make([]byte, 100), errcode.OutOfRange, "past chunk size"},
		{"new chunk without chunk size", wire.OpWrite, func() []byte {
			u := upd(wire.UpdateReq{Chunk: chunkengine.ChunkID{Inode: 77}, Kind: wire.KindWrite})
			return u.Encode(nil)
		}(),
			[]byte("x"), errcode.InvalidArgument, "no chunk size"},
		{"bad chunk size", wire.OpWrite, func() []byte {
			u := upd(wire.UpdateReq{Chunk: chunkengine.ChunkID{Inode: 78}, Kind: wire.KindWrite, ChunkSize: 100})
			return u.Encode(nil)
		}(), []byte("x"), errcode.InvalidArgument, "chunk size"},
		{"unknown target", wire.OpWrite, func() []byte {
			u := upd(wire.UpdateReq{Chunk: id, Kind: wire.KindWrite})
			u.Target = 999999
			return u.Encode(nil)
		}(),
			[]byte("x"), errcode.StaleVersion, "target 999999"},
		{"stale chain version", wire.OpWrite, func() []byte {
			u := upd(wire.UpdateReq{Chunk: id, Kind: wire.KindWrite})
			u.ChainVer = cv - 1
			return u.Encode(nil)
		}(),
			[]byte("x"), errcode.StaleVersion, "chain version"},
		{"unknown update kind", wire.OpWrite, func() []byte { u := upd(wire.UpdateReq{Chunk: id, Kind: 9}); return u.Encode(nil) }(),
			nil, errcode.InvalidArgument, "unknown kind 9"},
		{"client sets a version", wire.OpWrite, func() []byte {
			u := upd(wire.UpdateReq{Chunk: id, Kind: wire.KindWrite, Version: 5})
			return u.Encode(nil)
		}(),
			[]byte("x"), errcode.InvalidArgument, "version"},
		{"bad data checksum", wire.OpWrite, func() []byte {
			u := upd(wire.UpdateReq{Chunk: id, Kind: wire.KindWrite, Flags: wire.FlagCheckCRC, DataCRC: 1})
			return u.Encode(nil)
		}(), []byte("hello"), errcode.ChecksumMismatch, "CRC32C"},
		{"short update header", wire.OpWrite, []byte{1, 2, 3}, nil, errcode.InvalidArgument, "update request header is 3 bytes"},
		{"read of unknown chunk", wire.OpRead, func() []byte {
			q := wire.ReadReq{Target: head, Chain: chain, ChainVer: cv, Chunk: chunkengine.ChunkID{Inode: 4040}, Length: 10}
			return q.Encode(nil)
		}(), nil, errcode.NotFound, "not found"},
		{"read offset past chunk size", wire.OpRead, func() []byte {
			q := wire.ReadReq{Target: head, Chain: chain, ChainVer: cv, Chunk: id, Offset: chunkSize + 1, Length: 10}
			return q.Encode(nil)
		}(), nil, errcode.OutOfRange, "past chunk size"},
		{"read longer than any chunk", wire.OpRead, func() []byte {
			q := wire.ReadReq{Target: head, Chain: chain, ChainVer: cv, Chunk: id, Length: chunkengine.MaxChunkSize + 1}
			return q.Encode(nil)
		}(), nil, errcode.OutOfRange, "exceeds the largest chunk size"},
		{"read with garbage header", wire.OpRead, []byte("garbage"), nil, errcode.InvalidArgument, "read request header"},
		{"unknown opcode", 999, nil, nil, errcode.NotSupported, "no handler"},
		{"forward from a client to the head", wire.OpForward, func() []byte {
			u := upd(wire.UpdateReq{Chunk: id, Kind: wire.KindWrite, Version: 9})
			return u.Encode(nil)
		}(),
			[]byte("x"), errcode.PermissionDenied, "chain traffic comes only from storage peers"},
	}
	for _, tc2 := range cases {
		req := &transport.Request{Op: tc2.op, Ext: tc2.ext}
		if tc2.payload != nil {
			req.Payload = [][]byte{tc2.payload}
		}
		_, err := tc.Call(ctx, addr, req, nil)
		if !errcode.Is(err, tc2.code) || !strings.Contains(err.Error(), tc2.msg) {
			t.Errorf("%s: got %v, want %s mentioning %q", tc2.name, err, tc2.code, tc2.msg)
		}
		healthy(tc2.name)
	}

	// Wrong token: refused at connection set-up.
	bad := transport.NewClient(transport.ClientConfig{Token: "wrong"})
	_, err := bad.Call(ctx, addr, &transport.Request{Op: wire.OpRead, Ext: make([]byte, wire.ReadReqSize)}, nil)
	bad.Close()
	if !errcode.Is(err, errcode.Unauthenticated) {
		t.Errorf("wrong token: %v, want unauthenticated", err)
	}
	healthy("wrong token")

	// Garbage and truncated frames on a raw connection.
	for _, raw := range [][]byte{
		[]byte("GET /metrics HTTP/1.1\r\n\r\n"),
		[]byte("EMBF\x01\x00"), // truncated header, then half-close
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(raw)
		conn.(*net.TCPConn).CloseWrite()
		conn.SetReadDeadline(time.Now().Add(testutil.Eventually))
		reply, _ := io.ReadAll(conn)
		conn.Close()
		if !strings.Contains(string(reply), "bad frame") && !strings.Contains(string(reply), "truncated") {
			t.Errorf("raw %q: reply %q does not name the bad frame", raw, reply)
		}
		healthy("garbage frame")
	}
}
