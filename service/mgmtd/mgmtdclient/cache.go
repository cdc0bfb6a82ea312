package mgmtdclient

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
)

// Cache holds the latest routing info. After Start it follows mgmtd's
// watch stream (across failovers); Refresh fetches on demand, which callers
// do after any errcode.StaleVersion. Versions only ever move forward.
type Cache struct {
	conn *Conn
	log  *slog.Logger

	mu      sync.Mutex
	cur     *routing.Routing
	changed chan struct{} // closed and replaced on every new version

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewCache returns an empty cache over conn.
func NewCache(conn *Conn) *Cache {
	return &Cache{conn: conn, log: slog.Default().With("component", "routing"), changed: make(chan struct{})}
}

// Start follows the watch stream in the background until Close.
func (c *Cache) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.watch(ctx)
	}()
}

// Close stops the watch.
func (c *Cache) Close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
}

// Current returns the latest routing (nil before the first one arrives).
func (c *Cache) Current() *routing.Routing {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// Version is the latest routing version (0 if none yet).
func (c *Cache) Version() uint64 {
	if r := c.Current(); r != nil {
		return r.Version()
	}
	return 0
}

// Changed returns a channel closed when a newer version is installed.
func (c *Cache) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// install keeps info if it is newer than what the cache has.
func (c *Cache) install(info *mgmtdpb.RoutingInfo) bool {
	if info == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil && info.Version <= c.cur.Version() {
		return false
	}
	c.cur = routing.NewRouting(info)
	close(c.changed)
	c.changed = make(chan struct{})
	return true
}

// Refresh fetches the routing info from the primary now.
func (c *Cache) Refresh(ctx context.Context) error {
	return c.conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		rsp, err := cl.GetRoutingInfo(ctx, &mgmtdpb.GetRoutingInfoReq{KnownVersion: c.Version()})
		if err != nil {
			return err
		}
		if !rsp.Unchanged {
			c.install(rsp.Info)
		}
		return nil
	})
}

// RefreshOnStale refreshes if err says the caller's versions are stale,
// and reports whether it did (so the caller retries its request).
func (c *Cache) RefreshOnStale(ctx context.Context, err error) bool {
	if !errcode.Is(err, errcode.StaleVersion) {
		return false
	}
	if rerr := c.Refresh(ctx); rerr != nil {
		c.log.Warn("refresh after stale version failed", "err", rerr)
	}
	return true
}

// WaitFor blocks until the cached routing satisfies ok (checked on every
// version), returning it, or until ctx ends.
func (c *Cache) WaitFor(ctx context.Context, ok func(*routing.Routing) bool) (*routing.Routing, error) {
	for {
		c.mu.Lock()
		r, ch := c.cur, c.changed
		c.mu.Unlock()
		if r != nil && ok(r) {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-ch:
		}
	}
}

// ErrRoutingMoved is the cause of a context from WhileRouting that ended
// because routing changed.
var ErrRoutingMoved = errors.New("routing moved on")

// WhileRouting returns a context that ends (with cause ErrRoutingMoved)
// as soon as the cached routing no longer satisfies ok, checked now and
// on every new version, or when parent ends. A call to a peer that the
// network cut off gets no answer and no error (no RST); once mgmtd takes
// the peer out of the chain, such a context lets the caller give up on it
// and retry on the new chain instead of waiting out its timeout. The
// returned cancel must be called.
func (c *Cache) WhileRouting(parent context.Context, ok func(*routing.Routing) bool) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	go func() {
		for {
			c.mu.Lock()
			r, ch := c.cur, c.changed
			c.mu.Unlock()
			if r != nil && !ok(r) {
				cancel(ErrRoutingMoved)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

func (c *Cache) watch(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := c.conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
			stream, err := cl.WatchRouting(ctx, &mgmtdpb.WatchRoutingReq{KnownVersion: c.Version()})
			if err != nil {
				return err
			}
			for {
				info, err := stream.Recv()
				if err != nil {
					return err
				}
				c.install(info)
				backoff = 50 * time.Millisecond
			}
		})
		if ctx.Err() != nil {
			return
		}
		c.log.Debug("routing watch ended; reconnecting", "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}
