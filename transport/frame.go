package transport

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
)

// Op is a frame's opcode: which handler the server runs. Values up to
// MaxUserOp belong to the services that register handlers; the ones above
// are reserved for the transport itself.
type Op uint16

const (
	// MaxUserOp is the largest opcode a service may register.
	MaxUserOp Op = 0xFEFF
	// OpPing is answered by every server with an empty response; it is the
	// cheapest round trip (health checks, latency probes).
	OpPing Op = 0xFFFE
	// OpHandshake is the first frame on every connection: it carries the
	// cluster token one way and the server's frame limits the other.
	OpHandshake Op = 0xFFFF
)

// Flags are per-frame bits.
type Flags uint8

const (
	// FlagResponse marks a frame sent by a server.
	FlagResponse Flags = 1 << 0
	// FlagCRC says the header's CRC field holds the CRC32C (Castagnoli) of
	// the payload. On a request it also asks for a checksummed response.
	FlagCRC Flags = 1 << 1
	// FlagBatch marks a frame whose extension holds a batch table
	// (see batch.go); the payload is the sub-payloads back to back.
	FlagBatch Flags = 1 << 2
	// FlagPeer (handshake only) says the extension ends with the caller's
	// Peer identity and its credential (peerLen bytes) after the token.
	FlagPeer Flags = 1 << 3

	knownFlags = FlagResponse | FlagCRC | FlagBatch | FlagPeer
)

// PeerRole is what a connection's caller says it is in the handshake.
type PeerRole uint8

const (
	// PeerClient (the zero value) is any caller that gives no role.
	PeerClient PeerRole = iota
	// PeerStorage is a storage service: chain traffic (forwards, syncs)
	// is taken only from such connections.
	PeerStorage
)

// Peer identifies the caller of a connection, as it said in the
// handshake: its role and, for a service, the node id mgmtd registered.
// A declared Peer comes with a credential (PeerCredential) derived from
// the peer token, a secret only servers hold: the cluster token lets a
// caller in, the peer credential proves the caller holds the peer token,
// so a client cannot claim the storage role (issue 13, hole 1). The
// credential binds the node id too, which stops a misconfigured or
// replayed identity; every storage service holds the same peer token,
// so it does not stop a hostile storage host posing as another node.
type Peer struct {
	Role PeerRole
	Node uint32
}

// PeerCredentialLen is the size of a peer credential (an HMAC-SHA256).
const PeerCredentialLen = sha256.Size

// peerLen is the handshake's peer block: role, node id, credential.
const peerLen = 1 + 4 + PeerCredentialLen

// peerCredentialDomain separates these MACs from any other use of the
// same secret, and versions the derivation.
const peerCredentialDomain = "emberfs-peer/v1"

// PeerCredential is what a caller declaring p must present:
// HMAC-SHA256(peerToken, "emberfs-peer/v1" || role || node id as
// little-endian uint32). It binds the role and the node id, so a
// credential is good for exactly one identity; a server holding the
// peer token recomputes it, and nothing else can.
func PeerCredential(peerToken string, p Peer) [PeerCredentialLen]byte {
	m := hmac.New(sha256.New, []byte(peerToken))
	m.Write([]byte(peerCredentialDomain))
	m.Write(p.append(nil))
	var out [PeerCredentialLen]byte
	m.Sum(out[:0])
	return out
}

// append writes the identity part of the peer block (role, node id).
func (p Peer) append(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(append(b, byte(p.Role)), p.Node)
}

// Wire constants. Everything is little-endian (the byte order of every
// machine EmberFS runs on, so encoding is a plain load/store).
const (
	// HeaderSize is the fixed size of a frame header in bytes.
	HeaderSize = 32
	// Version is the protocol version this package speaks.
	Version = 1

	// DefaultMaxPayload fits a 64 MiB chunk (the largest chunk size) plus
	// room for the framing of a batch around it.
	DefaultMaxPayload = 64<<20 + 1<<20
	// DefaultMaxExt bounds the header extension (a batch table of a few
	// thousand sub-requests fits easily).
	DefaultMaxExt = 1 << 20
	// MaxTokenLen bounds the cluster token sent in the handshake.
	MaxTokenLen = 4096
)

// magic opens every frame: the bytes "EMBF".
var magic = [4]byte{'E', 'M', 'B', 'F'}

// Header is the fixed 32-byte frame header:
//
//	off len field
//	  0   4 magic "EMBF"
//	  4   1 version (1)
//	  5   1 flags
//	  6   2 opcode
//	  8   8 request id
//	 16   4 status (errcode.Code; 0 on requests)
//	 20   4 extension length
//	 24   4 payload length
//	 28   4 payload CRC32C (valid when FlagCRC is set)
type Header struct {
	Flags      Flags
	Op         Op
	ID         uint64
	Status     errcode.Code
	ExtLen     uint32
	PayloadLen uint32
	CRC        uint32
}

// Encode writes h into b, which must hold HeaderSize bytes.
func (h *Header) Encode(b []byte) {
	_ = b[HeaderSize-1]
	copy(b[0:4], magic[:])
	b[4] = Version
	b[5] = byte(h.Flags)
	binary.LittleEndian.PutUint16(b[6:], uint16(h.Op))
	binary.LittleEndian.PutUint64(b[8:], h.ID)
	binary.LittleEndian.PutUint32(b[16:], uint32(h.Status))
	binary.LittleEndian.PutUint32(b[20:], h.ExtLen)
	binary.LittleEndian.PutUint32(b[24:], h.PayloadLen)
	binary.LittleEndian.PutUint32(b[28:], h.CRC)
}

// Limits are the largest extension and payload a peer accepts in one frame.
type Limits struct {
	MaxExt     uint32
	MaxPayload uint32
}

// FrameError is a malformed frame: the stream cannot be trusted past it,
// so the connection is closed after reporting it.
type FrameError struct{ Reason string }

func (e *FrameError) Error() string { return "bad frame: " + e.Reason }

// DecodeHeader parses and validates a header against lim. Any error is a
// *FrameError naming the offending field.
func DecodeHeader(b []byte, lim Limits) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, &FrameError{fmt.Sprintf("header is %d bytes, want %d", len(b), HeaderSize)}
	}
	if [4]byte(b[0:4]) != magic {
		return h, &FrameError{fmt.Sprintf("bad magic %q (want %q): not an EmberFS data-port peer", b[0:4], magic[:])}
	}
	if b[4] != Version {
		return h, &FrameError{fmt.Sprintf("unsupported protocol version %d (this side speaks %d)", b[4], Version)}
	}
	h.Flags = Flags(b[5])
	h.Op = Op(binary.LittleEndian.Uint16(b[6:]))
	h.ID = binary.LittleEndian.Uint64(b[8:])
	h.Status = errcode.Code(binary.LittleEndian.Uint32(b[16:]))
	h.ExtLen = binary.LittleEndian.Uint32(b[20:])
	h.PayloadLen = binary.LittleEndian.Uint32(b[24:])
	h.CRC = binary.LittleEndian.Uint32(b[28:])
	if h.Flags&^knownFlags != 0 {
		return h, &FrameError{fmt.Sprintf("unknown flag bits %#02x", uint8(h.Flags&^knownFlags))}
	}
	if h.ExtLen > lim.MaxExt {
		return h, &FrameError{fmt.Sprintf("header extension length %d exceeds limit %d", h.ExtLen, lim.MaxExt)}
	}
	if h.PayloadLen > lim.MaxPayload {
		return h, &FrameError{fmt.Sprintf("payload length %d exceeds limit %d", h.PayloadLen, lim.MaxPayload)}
	}
	return h, nil
}

// readHeader reads one frame header from r. It checks the magic as soon as
// its 4 bytes are in, so a peer speaking another protocol (an HTTP probe,
// say) is told at once instead of after a read timeout. n is the number of
// bytes read.
func readHeader(r io.Reader, hdr *[HeaderSize]byte) (n int, err error) {
	n, err = io.ReadFull(r, hdr[:4])
	if err != nil {
		return n, err
	}
	if [4]byte(hdr[:4]) != magic {
		return n, &FrameError{fmt.Sprintf("bad magic %q (want %q): not an EmberFS data-port peer", hdr[:4], magic[:])}
	}
	m, err := io.ReadFull(r, hdr[4:])
	return n + m, err
}

// crcOf is the CRC32C of the concatenation of bufs.
func crcOf(bufs ...[]byte) uint32 {
	var c uint32
	for _, b := range bufs {
		c = crcUpdate(c, b)
	}
	return c
}

// errorMessage turns a non-OK response's extension into an *errcode.Error.
func errorFromStatus(st errcode.Code, ext []byte) error {
	if st == errcode.OK {
		return nil
	}
	return &errcode.Error{Code: st, Msg: string(ext)}
}

func crcUpdate(c uint32, b []byte) uint32 { return crc32c.Update(c, b) }
