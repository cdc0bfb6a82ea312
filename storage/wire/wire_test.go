package wire

import (
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
)

func TestRoundTrips(t *testing.T) {
	u := UpdateReq{Target: 301, Chain: 7, ChainVer: 9, Chunk: chunkengine.ChunkID{Inode: 1 << 40, Index: 3}, Kind: KindTruncate,
		Flags: FlagCheckCRC | FlagFull, Offset: 11, Length: 12, ChunkSize: 1 << 20, Version: 5, ClientID: 99, Channel: 4, Seq: 1 << 33, DataCRC: 0xdeadbeef}
	b := u.Encode(nil)
	if len(b) != UpdateReqSize {
		t.Fatalf("encoded %d bytes, want %d", len(b), UpdateReqSize)
	}
	if got, err := DecodeUpdateReq(b); err != nil || got != u {
		t.Fatalf("update: %+v %v, want %+v", got, err, u)
	}
	q := ReadReq{Target: 1, Chain: 2, ChainVer: 3, Chunk: chunkengine.ChunkID{Inode: 4, Index: 5}, Offset: 6, Length: 7, Relaxed: true}
	if got, err := DecodeReadReq(q.Encode(nil)); err != nil || got != q {
		t.Fatalf("read: %+v %v", got, err)
	}
	i := InodeReq{Target: 1, Chain: 2, ChainVer: 3, Inode: 4}
	if got, err := DecodeInodeReq(i.Encode(nil)); err != nil || got != i {
		t.Fatalf("inode: %+v %v", got, err)
	}
	l := LastChunkRsp{Found: true, Index: 8, Length: 9}
	if got, err := DecodeLastChunkRsp(l.Encode(nil)); err != nil || got != l {
		t.Fatalf("last chunk: %+v %v", got, err)
	}
}

func TestDecodeRejectsBadHeaders(t *testing.T) {
	u := UpdateReq{Kind: KindWrite}
	b := u.Encode(nil)
	b[32] = 0 // kind
	if _, err := DecodeUpdateReq(b); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("kind 0: %v", err)
	}
	b = u.Encode(nil)
	b[33] = 0x80 // unknown flag
	if _, err := DecodeUpdateReq(b); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("unknown flag: %v", err)
	}
	if _, err := DecodeReadReq(make([]byte, ReadReqSize-1)); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("short read header: %v", err)
	}
}

func TestKVRoundTrips(t *testing.T) {
	g := KVGetReq{Target: 1, Chain: 2, ChainVer: 3, Chunk: chunkengine.ChunkID{Inode: 0xFE << 56, Index: 5}, MaxLen: 1 << 20, Key: []byte("prefix-hash")}
	b := g.Encode(nil)
	if len(b) != KVGetReqFixedSize+len(g.Key) {
		t.Fatalf("kv get encoded %d bytes", len(b))
	}
	got, err := DecodeKVGetReq(b)
	if err != nil || got.Target != 1 || got.Chain != 2 || got.ChainVer != 3 || got.Chunk != g.Chunk || got.MaxLen != g.MaxLen || string(got.Key) != "prefix-hash" {
		t.Fatalf("kv get: %+v %v", got, err)
	}
	for _, bad := range [][]byte{b[:KVGetReqFixedSize-1], b[:len(b)-1], append(append([]byte(nil), b...), 0)} {
		if _, err := DecodeKVGetReq(bad); !errcode.Is(err, errcode.InvalidArgument) {
			t.Fatalf("bad kv get of %d bytes: %v", len(bad), err)
		}
	}
	empty := KVGetReq{Chunk: g.Chunk}
	if _, err := DecodeKVGetReq(empty.Encode(nil)); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("empty key accepted: %v", err)
	}
	long := KVGetReq{Key: make([]byte, MaxKVKeyLen+1)}
	if _, err := DecodeKVGetReq(long.Encode(nil)); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("long key accepted: %v", err)
	}
	n := KVNamespaceReq{Target: 9, Namespace: 1<<24 - 1}
	if got, err := DecodeKVNamespaceReq(n.Encode(nil)); err != nil || got != n {
		t.Fatalf("namespace req: %+v %v", got, err)
	}
	s := KVStatsRsp{1, 2, 3, 4, 5, 6, 7, 8}
	if got, err := DecodeKVStatsRsp(s.Encode(nil)); err != nil || got != s {
		t.Fatalf("stats: %+v %v", got, err)
	}
	if got, err := DecodeKVDropRsp(EncodeKVDropRsp(77)); err != nil || got != 77 {
		t.Fatalf("drop: %d %v", got, err)
	}
}
