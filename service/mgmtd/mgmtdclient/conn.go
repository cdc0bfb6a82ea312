package mgmtdclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/mgmtd/primaryhint"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// KeepaliveParams make a connection to an mgmtd that the network cut off
// fail within Time+Timeout while a call or a routing watch is on it: the
// watch stream is otherwise silent until routing changes, and without
// pings it would wait on a dead primary forever (tests/netns cuts the
// primary's link). gRPC raises Time to at least 10 s; mgmtd's server
// permits pings this often (KeepalivePolicy).
var KeepaliveParams = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second}

// KeepalivePolicy is what mgmtd's gRPC server allows: clients that ping
// more often than MinTime are disconnected, so it must not exceed
// KeepaliveParams.Time.
var KeepalivePolicy = keepalive.EnforcementPolicy{MinTime: 5 * time.Second}

// Conn is a set of gRPC connections to mgmtd instances. It remembers which
// one is the primary and moves on when that one redirects or is down.
type Conn struct {
	token string
	log   *slog.Logger

	mu    sync.Mutex
	addrs []string
	conns map[string]*grpc.ClientConn
	cur   int
}

// ParseAddrs reads mgmtd address lists: each entry may itself be a
// comma-separated list (as flags, config files and EMBERFS_MGMTD give
// them); blanks and repeats are dropped, order is kept. Every caller that
// takes mgmtd addresses from a user parses them here.
func ParseAddrs(lists ...string) []string {
	var clean []string
	seen := map[string]bool{}
	for _, a := range lists {
		for _, p := range strings.Split(a, ",") {
			if p = strings.TrimSpace(p); p != "" && !seen[p] {
				seen[p] = true
				clean = append(clean, p)
			}
		}
	}
	return clean
}

// Dial prepares connections to the given mgmtd addresses (connections are
// made lazily, so an instance being down is not an error here).
func Dial(addrs []string, token string) (*Conn, error) {
	clean := ParseAddrs(addrs...)
	if len(clean) == 0 {
		return nil, errors.New("routing: no mgmtd address given")
	}
	if token == "" {
		return nil, errors.New("routing: empty cluster token")
	}
	return &Conn{token: token, log: slog.Default(), addrs: clean, conns: map[string]*grpc.ClientConn{}}, nil
}

// Close closes every connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, cc := range c.conns {
		_ = cc.Close()
		delete(c.conns, a)
	}
	return nil
}

// Current is the address calls go to first (the believed primary).
func (c *Conn) Current() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addrs[c.cur]
}

func (c *Conn) client() (mgmtdpb.MgmtdClient, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := c.addrs[c.cur]
	cc := c.conns[addr]
	if cc == nil {
		var err error
		cc, err = grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			rpcauth.DialOption(c.token),
			grpc.WithKeepaliveParams(KeepaliveParams))
		if err != nil {
			return nil, addr, fmt.Errorf("routing: dial mgmtd %s: %w", addr, err)
		}
		c.conns[addr] = cc
	}
	return mgmtdpb.NewMgmtdClient(cc), addr, nil
}

// redirect points the next call at the primary a standby named.
func (c *Conn) redirect(to string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, a := range c.addrs {
		if a == to {
			c.cur = i
			return
		}
	}
	c.addrs = append(c.addrs, to)
	c.cur = len(c.addrs) - 1
}

// advance moves on from addr unless another call already did.
func (c *Conn) advance(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[c.cur] == addr {
		c.cur = (c.cur + 1) % len(c.addrs)
	}
}

func (c *Conn) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.addrs)
}

// Call runs fn against the primary. A NotPrimary answer redirects to the
// primary it names (or the next instance); an unreachable instance moves
// to the next. Once every instance has been tried it backs off and keeps
// going until ctx ends. Other errors are returned (as errcode errors).
func (c *Conn) Call(ctx context.Context, fn func(ctx context.Context, cl mgmtdpb.MgmtdClient) error) error {
	backoff := 20 * time.Millisecond
	misses := 0
	for {
		cl, addr, err := c.client()
		if err != nil {
			return err
		}
		err = errcode.FromGRPC(fn(ctx, cl))
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			// The caller's time ran out on this instance. An instance
			// cut off by the network (no RST, nothing answers) takes
			// every call's whole deadline, so the next call starts at
			// the next instance; a primary that was only slow is found
			// again through the standby's redirect.
			c.advance(addr)
			return err
		}
		switch errcode.CodeOf(err) {
		case errcode.NotPrimary:
			if to := primaryhint.Addr(err); to != "" && to != addr {
				c.redirect(to)
			} else {
				c.advance(addr)
			}
		case errcode.Unavailable:
			c.advance(addr)
		default:
			return err
		}
		misses++
		if misses >= c.size() {
			misses = 0
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("routing: no mgmtd primary reachable (last: %w)", err)
			case <-t.C:
			}
			backoff = min(backoff*2, 500*time.Millisecond)
		}
	}
}
