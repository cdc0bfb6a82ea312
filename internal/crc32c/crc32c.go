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

// Combine returns the CRC32C of a||b from crcA = CRC32C(a), crcB =
// CRC32C(b) and lenB = len(b), without the bytes: crcA times x^(8 lenB)
// modulo the polynomial, plus crcB (zlib 1.2.12's crc32_combine, for the
// Castagnoli polynomial). The chunk engine extends a chunk's checksum by
// appended data whose checksum the storage service already computed.
//
// It costs about a microsecond whatever lenB: one 32-step multiplication
// per set bit of lenB, with the powers x^(2^k) precomputed. (The GF(2)
// matrix squarings of zlib's older crc32_combine cost 30-300 µs a call,
// more than a hardware CRC pass over appends below about 256 KiB.)
func Combine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA
	}
	return multModP(x2nModP(uint64(lenB), 3), crcA) ^ crcB
}

// x2nTable[k] is x^(2^k) modulo the polynomial, in the reflected bit
// order the CRC uses (bit 31 is x^0).
var x2nTable = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < 32; k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// multModP returns a times b modulo the polynomial; a must not be zero
// (every power of x is non-zero modulo it).
func multModP(a, b uint32) uint32 {
	m := uint32(1) << 31
	var p uint32
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ crc32.Castagnoli
		} else {
			b >>= 1
		}
	}
}

// x2nModP returns x^(n 2^k) modulo the polynomial.
func x2nModP(n uint64, k uint) uint32 {
	p := uint32(1) << 31 // x^0
	for ; n != 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = multModP(x2nTable[k&31], p)
		}
	}
	return p
}
