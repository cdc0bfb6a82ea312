package transport

import (
	"container/list"
	"context"
	"sync"
)

// byteSem is a FIFO weighted semaphore counting bytes in flight. FIFO
// order matters: a 4 MiB read must not starve behind a stream of 4 KiB
// ones that keep slipping into the gaps.
type byteSem struct {
	mu      sync.Mutex
	size    int64
	cur     int64
	peak    int64
	waiters list.List // of *semWaiter
}

type semWaiter struct {
	n     int64
	ready chan struct{}
}

func newByteSem(size int64) *byteSem { return &byteSem{size: size} }

// clamp lets a request larger than the whole budget run alone instead of
// waiting forever.
func (s *byteSem) clamp(n int64) int64 { return min(n, s.size) }

func (s *byteSem) acquire(ctx context.Context, n int64) error {
	s.mu.Lock()
	if s.waiters.Len() == 0 && s.cur+n <= s.size {
		s.take(n)
		s.mu.Unlock()
		return nil
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return err
	}
	w := &semWaiter{n: n, ready: make(chan struct{})}
	elem := s.waiters.PushBack(w)
	s.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		select {
		case <-w.ready:
			// Granted while we were giving up: hand the bytes back.
			s.cur -= n
			s.wake()
		default:
			front := s.waiters.Front() == elem
			s.waiters.Remove(elem)
			if front {
				s.wake() // we may have been blocking smaller waiters behind us
			}
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

func (s *byteSem) release(n int64) {
	s.mu.Lock()
	s.cur -= n
	if s.cur < 0 {
		s.mu.Unlock()
		panic("transport: released more in-flight bytes than held")
	}
	s.wake()
	s.mu.Unlock()
}

func (s *byteSem) take(n int64) {
	s.cur += n
	s.peak = max(s.peak, s.cur)
}

// wake grants waiters in order while they fit. Called with mu held.
func (s *byteSem) wake() {
	for e := s.waiters.Front(); e != nil; e = s.waiters.Front() {
		w := e.Value.(*semWaiter)
		if s.cur+w.n > s.size {
			return
		}
		s.take(w.n)
		s.waiters.Remove(e)
		close(w.ready)
	}
}

func (s *byteSem) stats() (cur, peak int64, waiting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.peak, s.waiters.Len()
}
