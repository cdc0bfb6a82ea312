package kvstore

import (
	"math/bits"
	"sync"
)

// Buffers for records read whole into memory (Get's inline path), in
// power-of-two size classes from 4 KiB to 8 MiB, so a steady stream of
// gets allocates nothing. The bytes held by gets whose response has not
// been sent yet are bounded by Options.InlineBudget: past it a get sends
// from the file instead, which holds no memory.
const (
	inlineMinShift = 12 // 4 KiB
	inlineMaxShift = 23 // 8 MiB
)

var inlineClasses [inlineMaxShift - inlineMinShift + 1]sync.Pool

func inlineClass(n int) int {
	if n <= 1<<inlineMinShift {
		return 0
	}
	return bits.Len(uint(n-1)) - inlineMinShift
}

// getInline returns a buffer of length n (at most 8 MiB).
func getInline(n int) []byte {
	c := inlineClass(n)
	if p, ok := inlineClasses[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<(c+inlineMinShift))
}

func putInline(b []byte) {
	b = b[:0]
	inlineClasses[inlineClass(cap(b))].Put(&b)
}

// takeInline reserves n bytes of the inline budget; false when it has
// no room (the caller sends from the file).
func (s *Store) takeInline(n int64) bool {
	if s.inlineHeld.Add(n) > s.inlineBudget {
		s.inlineHeld.Add(-n)
		return false
	}
	return true
}

func (s *Store) releaseInline(n int64) { s.inlineHeld.Add(-n) }

// InlineHeld returns the bytes of inline buffers held by gets now (tests:
// zero once every response has been sent).
func (s *Store) InlineHeld() int64 { return s.inlineHeld.Load() }
