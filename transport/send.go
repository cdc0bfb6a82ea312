package transport

import (
	"net"
	"sync"
	"time"
)

// outFrame is one response frame waiting to be written: header,
// extension and payload segments (memory or file regions).
type outFrame struct {
	hdr  [HeaderSize]byte
	ext  []byte
	segs []Segment
	// done runs once the frame has been written, or abandoned because the
	// connection broke: it releases what the frame points into.
	done func()
}

func newFrame(h *Header, ext []byte, segs []Segment) *outFrame {
	f := &outFrame{ext: ext, segs: segs}
	h.Encode(f.hdr[:])
	return f
}

// sendQueue coalesces a connection's responses. Handlers finish in their
// own goroutines; the first one to find nobody writing becomes the writer
// and writes every frame queued until the queue is empty, so responses
// that are ready together leave in one writev (one system call, and on
// the client one wake-up) instead of one each. No goroutine is added per
// connection and a lone response is written by its own handler at once.
type sendQueue struct {
	mu      sync.Mutex
	queue   []*outFrame
	spare   []*outFrame
	writing bool
	broken  bool // a write failed: later frames are dropped, not written
}

// maxCoalesce bounds the memory bytes gathered into one writev, so one
// call does not hold a connection's writer for very long.
const maxCoalesce = 4 << 20

// send queues f and, unless another goroutine is writing, writes the
// queue out.
func (c *serverConn) send(f *outFrame) {
	q := &c.out
	q.mu.Lock()
	q.queue = append(q.queue, f)
	if q.writing {
		q.mu.Unlock()
		return
	}
	q.writing = true
	for len(q.queue) > 0 {
		batch := q.queue
		q.queue = q.spare[:0]
		broken := q.broken
		q.mu.Unlock()
		var err error
		if !broken {
			err = c.writeFrames(batch)
		}
		for i, fr := range batch {
			if fr.done != nil {
				fr.done()
			}
			batch[i] = nil
		}
		q.mu.Lock()
		q.spare = batch[:0]
		if err != nil && !q.broken {
			q.broken = true
			q.mu.Unlock()
			c.s.log.Warn("closing data connection after failed write", "remote", c.nc.RemoteAddr().String(), "err", err)
			c.close()
			q.mu.Lock()
		}
	}
	q.writing = false
	q.mu.Unlock()
}

// sendSync sends f and waits until it has been written; it reports
// whether the connection is still usable.
func (c *serverConn) sendSync(f *outFrame) error {
	written := make(chan struct{})
	inner := f.done
	f.done = func() {
		if inner != nil {
			inner()
		}
		close(written)
	}
	c.send(f)
	<-written
	c.out.mu.Lock()
	broken := c.out.broken
	c.out.mu.Unlock()
	if broken {
		return net.ErrClosed
	}
	return nil
}

// writeFrames writes frames back to back: memory pieces of consecutive
// frames go out in one writev (net.Buffers), file regions with sendfile.
// A failed write leaves a partial frame on the wire, so the caller must
// close the connection.
func (c *serverConn) writeFrames(frames []*outFrame) error {
	c.s.nBatches.Add(1)
	c.s.nFrames.Add(int64(len(frames)))
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.FrameTimeout))
	var vec [64][]byte
	bufs := vec[:0]
	pending := 0
	flush := func() error {
		if len(bufs) == 0 {
			return nil
		}
		nb := net.Buffers(bufs)
		_, err := nb.WriteTo(c.nc)
		clear(bufs)
		bufs, pending = vec[:0], 0
		return err
	}
	for _, f := range frames {
		bufs = append(bufs, f.hdr[:])
		pending += HeaderSize
		if len(f.ext) > 0 {
			bufs = append(bufs, f.ext)
			pending += len(f.ext)
		}
		for _, seg := range f.segs {
			if seg.File == nil {
				if len(seg.Data) > 0 {
					bufs = append(bufs, seg.Data)
					pending += len(seg.Data)
				}
				continue
			}
			if err := flush(); err != nil {
				return err
			}
			if err := c.sendRegion(seg); err != nil {
				return err
			}
		}
		if pending >= maxCoalesce {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

func (c *serverConn) sendRegion(seg Segment) error {
	if c.s.cfg.DisableSendfile {
		n, err := copyRegion(c.nc, seg.File, seg.Offset, seg.Length)
		c.s.nCopied.Add(n)
		return err
	}
	n, zero, err := sendFileRegion(c.nc, seg.File, seg.Offset, seg.Length)
	if zero {
		c.s.nSendfile.Add(n)
	} else {
		c.s.nCopied.Add(n)
	}
	return err
}
