package transport

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
)

const testPeerToken = "test-peer-token"

// opWhoAmI answers with the Peer the server attached to the connection.
const opWhoAmI Op = 100

func startPeerServer(t *testing.T, peerToken string) *testServer {
	t.Helper()
	ts := startTestServer(t, ServerConfig{PeerToken: peerToken})
	ts.Handle(opWhoAmI, func(_ context.Context, req *ServerRequest) (*ServerResponse, error) {
		return &ServerResponse{Ext: req.Peer.append(nil)}, nil
	})
	return ts
}

// TestPeerCredentialAdmitsOwnIdentity: a caller holding the peer token
// gets the identity it declared attached to its requests; a plain client
// gets the zero Peer.
func TestPeerCredentialAdmitsOwnIdentity(t *testing.T) {
	ts := startPeerServer(t, testPeerToken)
	for _, p := range []Peer{{Role: PeerStorage, Node: 3}, {}} {
		c := newTestClient(t, ClientConfig{Peer: p, PeerToken: testPeerToken})
		resp, err := c.Call(testCtx(t), ts.Addr(), &Request{Op: opWhoAmI}, nil)
		if err != nil {
			t.Fatalf("caller %+v with the right peer token: %v", p, err)
		}
		if got := string(resp.Ext); got != string(p.append(nil)) {
			t.Fatalf("server saw identity %x, want %x (%+v)", got, p.append(nil), p)
		}
	}
	if n := ts.Stats().AuthFailures; n != 0 {
		t.Fatalf("server refused %d handshakes, want none", n)
	}
}

// TestPeerClaimsRefused: holding the cluster token is not enough to claim
// a role. Each refusal happens at the handshake, names the node, and
// leaves the server taking good callers.
func TestPeerClaimsRefused(t *testing.T) {
	ts := startPeerServer(t, testPeerToken)
	storage3 := Peer{Role: PeerStorage, Node: 3}
	cases := map[string]ClientConfig{
		// Every client has the cluster token; without the peer token the
		// credential it makes (here from an empty secret) is wrong.
		"client with only the cluster token": {Peer: storage3},
		"wrong peer token":                   {Peer: storage3, PeerToken: "guessed-peer-token"},
	}
	for name, cfg := range cases {
		c := newTestClient(t, cfg)
		_, err := c.Call(testCtx(t), ts.Addr(), &Request{Op: opWhoAmI}, nil)
		t.Logf("%s: %v", name, err)
		wantCode(t, err, errcode.Unauthenticated, "wrong peer credential for node 3")
	}
	// Node 4 presenting node 3's (valid) credential: the credential binds
	// the node id, so it proves nothing about node 4.
	cred3 := PeerCredential(testPeerToken, storage3)
	_, err := handshake(rawConn(t, ts.Addr()), testToken, Peer{Role: PeerStorage, Node: 4}, cred3[:])
	wantCode(t, err, errcode.Unauthenticated, "wrong peer credential for node 4")
	// The same credential for the identity it was made for is taken.
	if _, err := handshake(rawConn(t, ts.Addr()), testToken, storage3, cred3[:]); err != nil {
		t.Fatalf("node 3 with its own credential: %v", err)
	}
	if n := ts.Stats().AuthFailures; n != 3 {
		t.Fatalf("server counted %d refused handshakes, want 3", n)
	}
	// A right peer token still works after the refusals.
	c := newTestClient(t, ClientConfig{Peer: storage3, PeerToken: testPeerToken})
	if _, err := c.Call(testCtx(t), ts.Addr(), &Request{Op: opWhoAmI}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestServerWithoutPeerTokenTakesNoClaims: a server that cannot check a
// credential refuses every declared identity instead of believing it,
// and still serves plain clients.
func TestServerWithoutPeerTokenTakesNoClaims(t *testing.T) {
	ts := startPeerServer(t, "")
	c := newTestClient(t, ClientConfig{Peer: Peer{Role: PeerStorage, Node: 2}, PeerToken: testPeerToken})
	_, err := c.Call(testCtx(t), ts.Addr(), &Request{Op: opWhoAmI}, nil)
	wantCode(t, err, errcode.Unauthenticated, "no peer token")
	plain := NewClient(ClientConfig{Token: testToken, Logger: testutil.Logger()})
	defer plain.Close()
	if err := plain.Ping(testCtx(t), ts.Addr()); err != nil {
		t.Fatalf("plain client: %v", err)
	}
}

// TestPeerCredentialBindsIdentity: the derivation is a MAC of the role
// and node id under the peer token; any change to one of them gives a
// different credential.
func TestPeerCredentialBindsIdentity(t *testing.T) {
	base := PeerCredential("k", Peer{Role: PeerStorage, Node: 1})
	for name, other := range map[string][PeerCredentialLen]byte{
		"other node":  PeerCredential("k", Peer{Role: PeerStorage, Node: 2}),
		"other role":  PeerCredential("k", Peer{Role: PeerClient, Node: 1}),
		"other token": PeerCredential("k2", Peer{Role: PeerStorage, Node: 1}),
	} {
		if other == base {
			t.Errorf("%s gives the same credential", name)
		}
	}
	if PeerCredential("k", Peer{Role: PeerStorage, Node: 1}) != base {
		t.Fatal("credential is not deterministic")
	}
}

// rawConn is a plain TCP connection to addr, closed when the test ends,
// for handshakes written by hand.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	return nc
}
