package crc32c

import (
	"math/rand/v2"
	"testing"
)

// TestCombine: Combine(CRC(a), CRC(b), len(b)) is CRC(a||b) for empty,
// short, odd and long pieces.
func TestCombine(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 3<<20)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	cuts := [][2]int{{0, 0}, {0, 1}, {1, 0}, {5, 7}, {4096, 4096}, {1, 1<<20 + 3}, {1<<20 + 17, 2<<20 - 17}, {0, 3 << 20}, {3 << 20, 0}}
	for range 20 {
		a := r.IntN(len(buf))
		cuts = append(cuts, [2]int{a, r.IntN(len(buf) - a + 1)})
	}
	for _, c := range cuts {
		a, b := buf[:c[0]], buf[c[0]:c[0]+c[1]]
		want := Checksum(buf[:c[0]+c[1]])
		if got := Combine(Checksum(a), Checksum(b), int64(len(b))); got != want {
			t.Fatalf("Combine of %d and %d bytes = %08x, CRC of the whole is %08x", len(a), len(b), got, want)
		}
	}
}
