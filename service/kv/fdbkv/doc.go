// Package fdbkv is the kv.Engine over FoundationDB, as 3FS keeps its
// metadata. It needs the FoundationDB client library (libfdb_c) and its
// headers at build time, so everything but this comment is compiled only
// with -tags fdb; see docs/kv.md for the status on EmberFS's build machines.
//
// FoundationDB does the real work: serializable optimistic transactions
// with read-your-writes, conflict detection on whole read ranges (phantoms
// included), snapshot reads and explicit conflict ranges. This package maps
// kv's API onto it, enforces the same portable size limits as every other
// engine, bounds retries and honours context cancellation.
//
// Keys are stored as given, so each EmberFS cluster uses its own FDB
// cluster (or at least owns the whole user keyspace [\x00, \xff)): a key
// prefix would eat into FDB's 10,000-byte key limit that kv.MaxKeySize
// promises to callers.
package fdbkv
