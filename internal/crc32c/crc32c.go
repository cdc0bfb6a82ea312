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
// CRC32C(b) and lenB = len(b), without the bytes: an O(log lenB) walk of
// GF(2) matrix squarings (zlib's crc32_combine, for the Castagnoli
// polynomial). The chunk engine extends a chunk's checksum by appended
// data whose checksum the storage service already computed.
func Combine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA
	}
	// odd is the operator for one zero bit; even and odd then alternate
	// as the operators for 2^k zero bits.
	var even, odd [32]uint32
	odd[0] = crc32.Castagnoli
	row := uint32(1)
	for n := 1; n < 32; n++ {
		odd[n] = row
		row <<= 1
	}
	gf2Square(&even, &odd) // two zero bits
	gf2Square(&odd, &even) // four zero bits
	for {
		gf2Square(&even, &odd) // first pass: one zero byte
		if lenB&1 != 0 {
			crcA = gf2Times(&even, crcA)
		}
		if lenB >>= 1; lenB == 0 {
			break
		}
		gf2Square(&odd, &even)
		if lenB&1 != 0 {
			crcA = gf2Times(&odd, crcA)
		}
		if lenB >>= 1; lenB == 0 {
			break
		}
	}
	return crcA ^ crcB
}

func gf2Times(mat *[32]uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

func gf2Square(square, mat *[32]uint32) {
	for n := range mat {
		square[n] = gf2Times(mat, mat[n])
	}
}
