package metaclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// FailoverClient implements meta.FS over several meta servers (all over one
// shared engine, so any of them can serve any call). It sticks to one
// server while it answers and moves to another when it is unreachable.
//
// The retry rule: only a failure to reach a server is retried elsewhere
// (a gRPC Unavailable that did not come from the server's own code; an
// answer from a live server, whatever its error, is final). Then
//
//   - read-only and idempotent operations (StatFS, Stat, BatchStat,
//     BatchStatPaths, Lookup, Readlink, ReadDir, GetXattr, ListXattr, Fsync,
//     RenewClient, SetAttr, Truncate, SetDirLayout, Mkdir with parents,
//     SetXattr without create/replace flags) are retried on the next server
//     whatever happened to the first attempt: applying them twice leaves
//     the same state and gives the same answer;
//   - every other operation (Create, Open, Close, Mkdir, Symlink, Mknod, Link,
//     Unlink, Rmdir, RemoveAll, Rename, SetXattr with flags, RemoveXattr)
//     is retried only when the request provably never left this process
//     (no connection to the server was ever picked for it, e.g. connection
//     refused). If the connection broke while the request was out, the
//     operation may have committed; repeating it could give a wrong answer
//     (EEXIST for our own create, ENOENT for our own unlink) or a second
//     write session, so the caller gets an Unavailable error saying the
//     outcome is unknown, and decides.
//
// A server that hangs without closing its connections is not detected: a
// call waits for its context as it would with one server.
type FailoverClient struct {
	cfg FailoverConfig

	mu        sync.Mutex
	clients   map[string]*Client
	preferred string
}

// FailoverConfig configures a FailoverClient.
type FailoverConfig struct {
	// Addrs returns the current meta server addresses; it is called before
	// every operation (RoutingMetaAddrs follows mgmtd's routing).
	Addrs func() []string
	Token string
	// RetryWindow is how long an operation keeps going round the servers
	// (with a growing pause) while none is reachable, e.g. during a
	// restart. Zero: one pass over the servers.
	RetryWindow time.Duration
	DialOptions []grpc.DialOption
}

var _ meta.FS = (*FailoverClient)(nil)

// DialMany returns a FailoverClient over a fixed list of meta servers.
func DialMany(addrs []string, token string) (*FailoverClient, error) {
	if len(addrs) == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "meta: DialMany needs at least one address")
	}
	fixed := append([]string(nil), addrs...)
	return NewFailoverClient(FailoverConfig{Addrs: func() []string { return fixed }, Token: token})
}

// NewFailoverClient returns a FailoverClient; connections are made lazily.
func NewFailoverClient(cfg FailoverConfig) (*FailoverClient, error) {
	if cfg.Addrs == nil {
		return nil, errcode.New(errcode.InvalidArgument, "meta: failover client needs an address source")
	}
	if cfg.Token == "" {
		return nil, errcode.New(errcode.InvalidArgument, "meta: failover client needs the cluster token")
	}
	return &FailoverClient{cfg: cfg, clients: map[string]*Client{}}, nil
}

// RoutingMetaAddrs returns the addresses of the meta servers that routing
// lists as active, for FailoverConfig.Addrs.
func RoutingMetaAddrs(cache *mgmtdclient.Cache) func() []string {
	return func() []string {
		r := cache.Current()
		if r == nil {
			return nil
		}
		var out []string
		for _, n := range r.ActiveNodes(mgmtdpb.NodeRole_ROLE_META) {
			if n.Address != "" {
				out = append(out, n.Address)
			}
		}
		return out
	}
}

// CloseConn closes every connection.
func (c *FailoverClient) CloseConn() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for a, cl := range c.clients {
		errs = append(errs, cl.CloseConn())
		delete(c.clients, a)
	}
	return errors.Join(errs...)
}

// Current is the server calls go to first ("" before the first success).
func (c *FailoverClient) Current() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.preferred
}

// attemptKey carries an *attempt from FailoverClient.do to the interceptor.
type attemptKey struct{}

// attempt is what the interceptor learned about one RPC's failure.
type attempt struct {
	unreachable bool // transport-level Unavailable, not an answer from the server
	notSent     bool // and no connection was ever picked for the request
}

// classify records, for calls made by a FailoverClient, whether a failure
// was the server being unreachable and whether the request can have been
// sent. Errors from the server's own code carry errcode details; transport
// failures do not. grpc.Peer is only filled once a connection was picked.
func classify(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	a, _ := ctx.Value(attemptKey{}).(*attempt)
	if a == nil {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	if err != nil {
		if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && len(st.Details()) == 0 {
			a.unreachable = true
			a.notSent = p.Addr == nil
		}
	}
	return err
}

func (c *FailoverClient) client(addr string) (*Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.clients[addr]; cl != nil {
		return cl, nil
	}
	// Reconnect promptly to a server that comes back at the same address
	// (the gRPC default waits up to two minutes between attempts).
	opts := append([]grpc.DialOption{
		grpc.WithUnaryInterceptor(classify),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}, c.cfg.DialOptions...)
	cl, err := Dial(addr, c.cfg.Token, opts...)
	if err != nil {
		return nil, err
	}
	c.clients[addr] = cl
	return cl, nil
}

// order lists the servers to try: the preferred one first if it is still
// listed, then the rest starting at a random one so that clients spread
// over the servers.
func (c *FailoverClient) order() []string {
	addrs := c.cfg.Addrs()
	if len(addrs) == 0 {
		return nil
	}
	c.mu.Lock()
	pref := c.preferred
	c.mu.Unlock()
	start := rand.IntN(len(addrs))
	for i, a := range addrs {
		if a == pref {
			start = i
			break
		}
	}
	out := make([]string, 0, len(addrs))
	for i := range addrs {
		out = append(out, addrs[(start+i)%len(addrs)])
	}
	return out
}

func (c *FailoverClient) setPreferred(addr string) {
	c.mu.Lock()
	c.preferred = addr
	c.mu.Unlock()
}

// retryRule says when an operation may be repeated on another server.
type retryRule int

const (
	retryAlways  retryRule = iota // read-only or idempotent
	retryNotSent                  // only when the request never left
)

// do runs op on one server after another until one answers.
func (c *FailoverClient) do(ctx context.Context, name string, rule retryRule, op func(ctx context.Context, cl *Client) error) error {
	var deadline time.Time
	if c.cfg.RetryWindow > 0 {
		deadline = time.Now().Add(c.cfg.RetryWindow)
	}
	pause := 50 * time.Millisecond
	var tried []string // each server once, however many rounds
	var attempts int
	var lastErr error
	for {
		addrs := c.order()
		for _, addr := range addrs {
			cl, err := c.client(addr)
			if err != nil {
				return err
			}
			a := &attempt{}
			err = op(context.WithValue(ctx, attemptKey{}, a), cl)
			if !a.unreachable {
				c.setPreferred(addr) // it answered, whatever the answer
				return err
			}
			attempts, lastErr = attempts+1, err
			if !slices.Contains(tried, addr) {
				tried = append(tried, addr)
			}
			// Whatever the rule, the next call starts elsewhere.
			c.mu.Lock()
			if c.preferred == addr {
				c.preferred = ""
			}
			c.mu.Unlock()
			if rule == retryNotSent && !a.notSent {
				return errcode.New(errcode.Unavailable, "meta %s: server %s became unreachable with the request out; it may or may not have been applied: %v", name, addr, err)
			}
			if ctx.Err() != nil {
				return errcode.FromGRPC(status.FromContextError(ctx.Err()).Err())
			}
		}
		if deadline.IsZero() || time.Now().Add(pause).After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return errcode.FromGRPC(status.FromContextError(ctx.Err()).Err())
		case <-time.After(pause):
		}
		pause = min(pause*2, time.Second)
	}
	if len(tried) == 0 {
		return errcode.New(errcode.Unavailable, "meta %s: no meta server known (none active in routing?)", name)
	}
	return errcode.New(errcode.Unavailable, "meta %s: no meta server reachable (%d attempts at %v): %v", name, attempts, tried, lastErr)
}

func (c *FailoverClient) StatFS(ctx context.Context) (r meta.FSStat, err error) {
	err = c.do(ctx, "statfs", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.StatFS(ctx); return })
	return
}

func (c *FailoverClient) Stat(ctx context.Context, u meta.User, p meta.PathAt) (r meta.Inode, err error) {
	err = c.do(ctx, "stat", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Stat(ctx, u, p); return })
	return
}

func (c *FailoverClient) BatchStat(ctx context.Context, ids []uint64) (r []*meta.Inode, err error) {
	err = c.do(ctx, "batch stat", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.BatchStat(ctx, ids); return })
	return
}

func (c *FailoverClient) BatchStatPaths(ctx context.Context, u meta.User, paths []meta.PathAt) (r []meta.Inode, errs []error, err error) {
	err = c.do(ctx, "batch stat", retryAlways, func(ctx context.Context, cl *Client) (e error) {
		r, errs, e = cl.BatchStatPaths(ctx, u, paths)
		return
	})
	return
}

func (c *FailoverClient) Lookup(ctx context.Context, u meta.User, parent uint64, name string) (r meta.Inode, err error) {
	err = c.do(ctx, "lookup", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Lookup(ctx, u, parent, name); return })
	return
}

func (c *FailoverClient) Create(ctx context.Context, u meta.User, p meta.PathAt, o meta.CreateOptions) (r meta.OpenResult, err error) {
	err = c.do(ctx, "create", retryNotSent, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Create(ctx, u, p, o); return })
	return
}

func (c *FailoverClient) Open(ctx context.Context, u meta.User, p meta.PathAt, o meta.OpenOptions) (r meta.OpenResult, err error) {
	err = c.do(ctx, "open", retryNotSent, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Open(ctx, u, p, o); return })
	return
}

func (c *FailoverClient) Close(ctx context.Context, u meta.User, o meta.CloseOptions) (r meta.Inode, err error) {
	err = c.do(ctx, "close", retryNotSent, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Close(ctx, u, o); return })
	return
}

func (c *FailoverClient) Fsync(ctx context.Context, u meta.User, inode uint64) (r meta.Inode, err error) {
	err = c.do(ctx, "fsync", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Fsync(ctx, u, inode); return })
	return
}

func (c *FailoverClient) Mkdir(ctx context.Context, u meta.User, p meta.PathAt, mode uint32, parents bool) (r meta.Inode, err error) {
	rule := retryNotSent
	if parents {
		rule = retryAlways // mkdir -p succeeds on an existing directory
	}
	err = c.do(ctx, "mkdir", rule, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Mkdir(ctx, u, p, mode, parents); return })
	return
}

func (c *FailoverClient) Symlink(ctx context.Context, u meta.User, p meta.PathAt, target string) (r meta.Inode, err error) {
	err = c.do(ctx, "symlink", retryNotSent, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Symlink(ctx, u, p, target); return })
	return
}

func (c *FailoverClient) Mknod(ctx context.Context, u meta.User, p meta.PathAt, typ meta.FileType, mode, rdev uint32) (r meta.Inode, err error) {
	err = c.do(ctx, "mknod", retryNotSent, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Mknod(ctx, u, p, typ, mode, rdev); return })
	return
}

func (c *FailoverClient) Readlink(ctx context.Context, u meta.User, p meta.PathAt) (r string, err error) {
	err = c.do(ctx, "readlink", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Readlink(ctx, u, p); return })
	return
}

func (c *FailoverClient) Link(ctx context.Context, u meta.User, oldPath, newPath meta.PathAt) (r meta.Inode, err error) {
	err = c.do(ctx, "link", retryNotSent, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Link(ctx, u, oldPath, newPath); return })
	return
}

func (c *FailoverClient) Unlink(ctx context.Context, u meta.User, p meta.PathAt) error {
	return c.do(ctx, "unlink", retryNotSent, func(ctx context.Context, cl *Client) error { return cl.Unlink(ctx, u, p) })
}

func (c *FailoverClient) Rmdir(ctx context.Context, u meta.User, p meta.PathAt) error {
	return c.do(ctx, "rmdir", retryNotSent, func(ctx context.Context, cl *Client) error { return cl.Rmdir(ctx, u, p) })
}

func (c *FailoverClient) RemoveAll(ctx context.Context, u meta.User, p meta.PathAt) error {
	return c.do(ctx, "remove all", retryNotSent, func(ctx context.Context, cl *Client) error { return cl.RemoveAll(ctx, u, p) })
}

func (c *FailoverClient) Rename(ctx context.Context, u meta.User, src, dst meta.PathAt, flags meta.RenameFlags) error {
	return c.do(ctx, "rename", retryNotSent, func(ctx context.Context, cl *Client) error { return cl.Rename(ctx, u, src, dst, flags) })
}

func (c *FailoverClient) ReadDir(ctx context.Context, u meta.User, p meta.PathAt, o meta.ReadDirOptions) (r meta.DirPage, err error) {
	err = c.do(ctx, "readdir", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.ReadDir(ctx, u, p, o); return })
	return
}

func (c *FailoverClient) SetAttr(ctx context.Context, u meta.User, p meta.PathAt, a meta.SetAttr) (r meta.Inode, err error) {
	err = c.do(ctx, "setattr", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.SetAttr(ctx, u, p, a); return })
	return
}

func (c *FailoverClient) Truncate(ctx context.Context, u meta.User, p meta.PathAt, size uint64) (r meta.Inode, err error) {
	err = c.do(ctx, "truncate", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.Truncate(ctx, u, p, size); return })
	return
}

func (c *FailoverClient) SetDirLayout(ctx context.Context, u meta.User, p meta.PathAt, l meta.Layout) (r meta.Inode, err error) {
	err = c.do(ctx, "set layout", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.SetDirLayout(ctx, u, p, l); return })
	return
}

func (c *FailoverClient) GetXattr(ctx context.Context, u meta.User, p meta.PathAt, name string) (r []byte, err error) {
	err = c.do(ctx, "getxattr", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.GetXattr(ctx, u, p, name); return })
	return
}

func (c *FailoverClient) SetXattr(ctx context.Context, u meta.User, p meta.PathAt, name string, value []byte, flags int) error {
	rule := retryAlways // a plain set is idempotent
	if flags != 0 {
		rule = retryNotSent // XATTR_CREATE / XATTR_REPLACE answer differently the second time
	}
	return c.do(ctx, "setxattr", rule, func(ctx context.Context, cl *Client) error { return cl.SetXattr(ctx, u, p, name, value, flags) })
}

func (c *FailoverClient) ListXattr(ctx context.Context, u meta.User, p meta.PathAt) (r []string, err error) {
	err = c.do(ctx, "listxattr", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.ListXattr(ctx, u, p); return })
	return
}

func (c *FailoverClient) RemoveXattr(ctx context.Context, u meta.User, p meta.PathAt, name string) error {
	return c.do(ctx, "removexattr", retryNotSent, func(ctx context.Context, cl *Client) error { return cl.RemoveXattr(ctx, u, p, name) })
}

func (c *FailoverClient) RenewClient(ctx context.Context, client string) (r time.Time, err error) {
	err = c.do(ctx, "renew client", retryAlways, func(ctx context.Context, cl *Client) (e error) { r, e = cl.RenewClient(ctx, client); return })
	return
}

// String names the servers for logs.
func (c *FailoverClient) String() string {
	return fmt.Sprintf("meta failover client %v", c.cfg.Addrs())
}

// Lock: setting a lock is idempotent for its owner (the same lock again
// changes nothing), so it may be repeated elsewhere; so is a test.
func (c *FailoverClient) Lock(ctx context.Context, u meta.User, r meta.LockRequest) (res meta.LockResult, err error) {
	err = c.do(ctx, "lock", retryAlways, func(ctx context.Context, cl *Client) (e error) { res, e = cl.Lock(ctx, u, r); return })
	return
}

// ReserveAppend moves the end of the file: repeating it would leave a gap.
func (c *FailoverClient) ReserveAppend(ctx context.Context, u meta.User, inode, session, length uint64) (off uint64, err error) {
	err = c.do(ctx, "reserve append", retryNotSent, func(ctx context.Context, cl *Client) (e error) {
		off, e = cl.ReserveAppend(ctx, u, inode, session, length)
		return
	})
	return
}
