package pybind

import "github.com/emberfs/emberfs/internal/crc32c"

// CRC32CUpdate extends crc (0 to start) with the n bytes at addr, the same
// CRC32C (Castagnoli) the storage service and checkpoint manifests use.
// Python checksums tensor memory with it without copying it into a bytes
// object, and gopy releases the GIL, so threads checksum in parallel.
func CRC32CUpdate(crc int64, addr uintptr, n int, e *Err) int64 {
	buf, err := buffer(addr, n)
	if err != nil {
		e.set(err)
		return 0
	}
	return int64(crc32c.Update(uint32(crc), buf))
}
