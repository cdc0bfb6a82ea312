package client

// The write pipeline of an open file: writes are handed to goroutines that
// send them to storage (fanned out over chunks, so over the stripe's
// chains), at most Config.WriteInFlight per file. A write waits for any
// earlier write in flight that overlaps it, so writes through one File are
// still applied in call order; a failure is kept and reported by the next
// WriteAt, Flush, Sync, Truncate or Close. Flush, Sync, Truncate and Close
// wait for every write in flight; a read waits for those overlapping it.

// pendingWrite is one write sent to storage and not yet acknowledged.
type pendingWrite struct {
	off, end int64
	done     chan struct{}
	err      error // set before done is closed
}

func (w *pendingWrite) overlaps(off, n int64) bool { return off < w.end && off+n > w.off }

// submit starts writing p at off, once fewer than WriteInFlight writes are
// in flight and none overlaps [off, off+len(p)). owned, when not nil, is a
// pool buffer returned to the pool when the write is done. The caller
// holds f.wmu.
func (f *File) submit(p []byte, off int64, owned []byte) *pendingWrite {
	w := &pendingWrite{off: off, end: off + int64(len(p)), done: make(chan struct{})}
	f.pmu.Lock()
	for len(f.inflight) >= f.c.writeInFlight || f.overlapsLocked(off, int64(len(p))) {
		f.pcond.Wait()
	}
	f.inflight = append(f.inflight, w)
	f.pmu.Unlock()
	go func() {
		_, err := f.writeDirect(p, off)
		f.pmu.Lock()
		for i, x := range f.inflight {
			if x == w {
				f.inflight = append(f.inflight[:i], f.inflight[i+1:]...)
				break
			}
		}
		if err != nil && f.perr == nil {
			f.perr = err
		}
		w.err = err
		close(w.done)
		f.pcond.Broadcast()
		f.pmu.Unlock()
		// Readers that fetched the old bytes while the write ran must not
		// cache them.
		f.changed(w.end)
		if owned != nil {
			f.c.putBuf(owned)
		}
	}()
	return w
}

func (f *File) overlapsLocked(off, n int64) bool {
	for _, w := range f.inflight {
		if w.overlaps(off, n) {
			return true
		}
	}
	return false
}

func (f *File) inFlightOverlaps(off, n int64) bool {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	return f.overlapsLocked(off, n)
}

// waitAll waits until no write is in flight.
func (f *File) waitAll() {
	f.pmu.Lock()
	for len(f.inflight) > 0 {
		f.pcond.Wait()
	}
	f.pmu.Unlock()
}

// waitRange waits for the writes in flight overlapping [off, off+n) and
// returns the first of their errors.
func (f *File) waitRange(off, n int64) error {
	f.pmu.Lock()
	var ws []*pendingWrite
	for _, w := range f.inflight {
		if w.overlaps(off, n) {
			ws = append(ws, w)
		}
	}
	f.pmu.Unlock()
	var err error
	for _, w := range ws {
		<-w.done
		if err == nil {
			err = w.err
		}
	}
	return err
}

// forgetErr drops err from the errors still to report (its caller has
// reported it).
func (f *File) forgetErr(err error) {
	f.pmu.Lock()
	if f.perr == err {
		f.perr = nil
	}
	f.pmu.Unlock()
}

// getBuf returns an empty write-back buffer of capacity WriteBuffer.
func (c *Client) getBuf() []byte {
	if b, ok := c.bufPool.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, c.cfg.WriteBuffer)
}

func (c *Client) putBuf(b []byte) {
	if int64(cap(b)) == c.cfg.WriteBuffer {
		c.bufPool.Put(&b)
	}
}
