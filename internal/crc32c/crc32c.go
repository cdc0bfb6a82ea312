// Package crc32c is the one CRC32C (Castagnoli) table every EmberFS package
// checksums with: chunk data, transport frames, metadata logs and KVCache
// records all use the same polynomial, which CPUs accelerate (SSE4.2).
package crc32c

import "hash/crc32"

// Table is the Castagnoli table.
var Table = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC32C of b.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, Table) }

// Update adds b to a running CRC32C.
func Update(crc uint32, b []byte) uint32 { return crc32.Update(crc, Table, b) }
