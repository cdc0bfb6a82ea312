package transport

import (
	"math/bits"
	"sync"
)

// Buffers come from sync.Pools in power-of-two size classes from 4 KiB to
// 64 MiB so that a steady stream of chunk I/O allocates nothing; larger
// buffers (rare: only frames above 64 MiB) are allocated and left to the GC.
const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 26 // 64 MiB
)

var bufClasses [maxClassShift - minClassShift + 1]sync.Pool

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// GetBuffer returns a buffer of length n from the pool. Return it with
// PutBuffer when done; forgetting to is harmless apart from garbage.
func GetBuffer(n int) []byte {
	c := classOf(n)
	if c >= len(bufClasses) {
		return make([]byte, n)
	}
	if p, ok := bufClasses[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<(c+minClassShift))
}

// PutBuffer returns b (obtained from GetBuffer) to its size class. Buffers
// whose capacity is not exactly a class size are dropped.
func PutBuffer(b []byte) {
	c := cap(b)
	if c < 1<<minClassShift || c&(c-1) != 0 {
		return
	}
	cl := classOf(c)
	if cl >= len(bufClasses) {
		return
	}
	b = b[:0]
	bufClasses[cl].Put(&b)
}
