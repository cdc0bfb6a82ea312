// Package transport is EmberFS's data path for bulk chunk data: a framed
// binary protocol over TCP with request ids, requests multiplexed and
// pipelined over a small pool of connections per server, batch frames,
// pooled buffers, writev on send and sendfile for file-backed responses,
// deadlines, a cluster-token handshake and a client-side cap on bytes in
// flight. The wire format is in docs/wire-format.md.
//
// Services register a Handler per opcode on a Server; clients call them
// through a Client (or any Caller, so an RDMA transport can stand in).
package transport
