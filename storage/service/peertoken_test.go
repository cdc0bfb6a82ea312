package service_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/service"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// TestStorageRoleNeedsPeerToken (hole 1, role separation by a secret):
// the storage role that chain traffic is taken from was vouched for by
// the cluster token, which every client holds, so any client could
// declare it. Now a caller declaring it must present the credential
// derived from the storage services' peer token for the node id it
// claims. A client holding only the cluster token, a wrong peer token,
// and one node presenting another node's credential are all refused at
// the handshake of a real storage service, before any chain traffic; the
// chain between the real services keeps working.
func TestStorageRoleNeedsPeerToken(t *testing.T) {
	c, chains, cl := startCluster(t, 3, 3)
	chain := chains[0]
	ctx := context.Background()
	id := chunkengine.ChunkID{Inode: 97}
	if _, err := cl.Write(ctx, chain, id, chunkSize, 0, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	r := c.Current()
	order := r.ServingTargets(chain)
	head, mid, tail := order[0], order[1], order[2]
	midNode := uint32(nodeOf(mid))
	_, addr, _ := r.TargetAddress(tail)
	// A forward and a sync that would be admitted from mid's node: the
	// credential is all that stands between them and the tail.
	fwd := wire.UpdateReq{Target: tail, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: id, Kind: wire.KindWrite,
		Version: 2, ChunkSize: chunkSize, From: mid}
	syn := wire.UpdateReq{Target: tail, Chain: chain, ChainVer: r.ChainVersion(chain), Chunk: id, Kind: wire.KindReplace,
		Flags: wire.FlagFull | wire.FlagRepair, Version: 9, ChunkSize: chunkSize, From: mid}
	asMid := transport.Peer{Role: transport.PeerStorage, Node: midNode}
	callers := map[string]transport.ClientConfig{
		"client with only the cluster token": {Token: c.Token(), Peer: asMid},
		"wrong peer token":                   {Token: c.Token(), Peer: asMid, PeerToken: "not-" + c.PeerToken()},
		// The cluster token cannot stand in for the peer token.
		"cluster token as peer token": {Token: c.Token(), Peer: asMid, PeerToken: c.Token()},
	}
	want := fmt.Sprintf("wrong peer credential for node %d", midNode)
	for name, cfg := range callers {
		tc := transport.NewClient(cfg)
		for op, u := range map[transport.Op]wire.UpdateReq{wire.OpForward: fwd, wire.OpSync: syn} {
			_, err := tc.Call(ctx, addr, &transport.Request{Op: op, Ext: u.Encode(nil), Payload: [][]byte{[]byte("XX")}}, nil)
			if !errcode.Is(err, errcode.Unauthenticated) || !strings.Contains(fmt.Sprint(err), want) {
				t.Errorf("%s claiming storage node %d, op %d: %v, want Unauthenticated %q", name, midNode, op, err, want)
			}
		}
		tc.Close()
	}
	// The head's node presenting mid's node's (valid) credential as its
	// own: the credential binds the node id, so it is refused.
	midCred := transport.PeerCredential(c.PeerToken(), asMid)
	headNode := uint32(nodeOf(head))
	err := rawPeerHandshake(t, addr, c.Token(), transport.Peer{Role: transport.PeerStorage, Node: headNode}, midCred[:])
	if !errcode.Is(err, errcode.Unauthenticated) || !strings.Contains(err.Error(), fmt.Sprintf("wrong peer credential for node %d", headNode)) {
		t.Errorf("node %d presenting node %d's credential: %v, want Unauthenticated naming node %d", headNode, midNode, err, headNode)
	}
	// That credential is good for the node it was made for.
	if err := rawPeerHandshake(t, addr, c.Token(), asMid, midCred[:]); err != nil {
		t.Errorf("node %d presenting its own credential: %v", midNode, err)
	}
	s := c.StorageService(nodeOf(tail))
	if got, ver, err := s.Engine(tail).Read(id, 0, 2, false); err != nil || string(got) != "v1" || ver != 1 {
		t.Fatalf("tail holds %q at version %d (%v) after the refused claims, want v1 at 1", got, ver, err)
	}
	// Chain traffic between the real services (which hold the peer
	// token) still flows: a write goes head -> mid -> tail.
	if _, err := cl.Write(ctx, chain, id, chunkSize, 0, []byte("v2")); err != nil {
		t.Fatalf("write through the chain after the refusals: %v", err)
	}
	if got, ver, err := s.Engine(tail).Read(id, 0, 2, false); err != nil || string(got) != "v2" || ver != 2 {
		t.Fatalf("tail holds %q at version %d (%v) after a chain write, want v2 at 2", got, ver, err)
	}
}

// rawPeerHandshake does a data-port handshake by hand, declaring peer
// with credential cred (which the transport client would always derive
// for the declared peer itself), and returns the server's refusal.
func rawPeerHandshake(t *testing.T, addr, token string, peer transport.Peer, cred []byte) error {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	// Extension: token, role, node id (little-endian), credential
	// (docs/wire-format.md, "Handshake").
	ext := append([]byte(token), byte(peer.Role))
	ext = binary.LittleEndian.AppendUint32(ext, peer.Node)
	ext = append(ext, cred...)
	h := transport.Header{Flags: transport.FlagPeer, Op: transport.OpHandshake, ID: 1, ExtLen: uint32(len(ext))}
	frame := make([]byte, transport.HeaderSize)
	h.Encode(frame)
	if _, err := nc.Write(append(frame, ext...)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(nc, frame); err != nil {
		t.Fatalf("no handshake response: %v", err)
	}
	rh, err := transport.DecodeHeader(frame, transport.Limits{MaxExt: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, rh.ExtLen)
	if _, err := io.ReadFull(nc, msg); err != nil {
		t.Fatal(err)
	}
	if rh.Status != errcode.OK {
		return errcode.New(rh.Status, "%s", msg)
	}
	return nil
}

// TestStorageConfigNeedsPeerToken: a storage service does not start
// without a peer token (it could not prove its own chain traffic, nor
// check anyone else's), nor with the cluster token reused as one.
func TestStorageConfigNeedsPeerToken(t *testing.T) {
	base := service.DefaultConfig()
	base.NodeID, base.Token = 1, "cluster-token"
	for _, tc := range []struct{ peer, want string }{
		{"", "no peer_token"},
		{"cluster-token", "peer_token equals the cluster token"},
	} {
		cfg := base
		cfg.PeerToken = tc.peer
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("peer_token %q: %v, want an error mentioning %q", tc.peer, err, tc.want)
		}
	}
	cfg := base
	cfg.PeerToken = "peer-token"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with a peer token: %v", err)
	}
}
