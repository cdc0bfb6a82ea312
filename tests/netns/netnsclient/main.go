// Command netnsclient is the client the namespace-cluster tests (tests/netns)
// run on their client hosts through `ip netns exec`: a process of its own
// in the host's network namespace, using the native Go client. It prints
// one line per event on stdout, which the test parses:
//
//	netnsclient write  DIR         write DIR/0, DIR/1, ... until SIGTERM: "ACK <unixnano> <path>" once a
//	                               file is closed (durable), "ERR <unixnano> <path> <error>" for a failure
//	netnsclient verify             read the paths on stdin, compare with their content: "BAD <path> <why>"
//	                               per mismatch, then "VERIFIED <n>"; exit 1 on any mismatch
//	netnsclient prep   DIR TABLE STRIPE N SIZE   make DIR with chain table TABLE striped over STRIPE
//	                               chains, and N files of SIZE bytes in it: "PREPARED <n>"
//	netnsclient read   DIR N SIZE  read DIR/0..N-1 whole, round robin, each read checked, until SIGTERM:
//	                               "READ <bytes> <seconds> <errors>" at the end, "ERR ..." per failed read
//	netnsclient probe  ADDR        ask the mgmtd at ADDR (only it, no redirects) for routing every 50 ms
//	                               until SIGTERM: "P <start> <end> primary <routing version>", "P ... standby"
//	                               or "P ... error <error>" (unixnano times around each call)
//
// Every file's content is a function of its path, so any process can check
// any file. Flags: --mgmtd (comma-separated), --token, --threads (read).
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/metaclient"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

var (
	mgmtd   = flag.String("mgmtd", "", "mgmtd addresses, comma-separated")
	token   = flag.String("token", "", "cluster token")
	threads = flag.Int("threads", 4, "read: concurrent readers")
	size    = flag.Int("size", 256<<10, "write: bytes per file")
)

func main() {
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		fail("usage: netnsclient [flags] write|verify|prep|read ARGS")
	}
	// SIGTERM ends write and read loops cleanly (the last lines printed).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	p := printer{w: out}
	if args[0] == "probe" {
		// Needs no cluster client: it talks to one mgmtd only.
		need(args, 2)
		probe(ctx, &p, args[1])
		return
	}
	c, err := client.New(ctx, client.Config{MgmtdAddrs: strings.Split(*mgmtd, ","), Token: *token,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		fail("connect: %v", err)
	}
	defer c.Close()
	switch args[0] {
	case "write":
		need(args, 2)
		write(ctx, c, &p, args[1])
	case "verify":
		if verify(c, &p, os.Stdin) {
			out.Flush()
			os.Exit(1)
		}
	case "prep":
		need(args, 6)
		prep(c, &p, args[1], uint32(atoi(args[2])), uint32(atoi(args[3])), atoi(args[4]), atoi(args[5]))
	case "read":
		need(args, 4)
		read(ctx, c, &p, args[1], atoi(args[2]), atoi(args[3]))
	default:
		fail("unknown mode %q (write, verify, prep, read, probe)", args[0])
	}
}

// printer writes whole lines, flushed at once so the test sees them live.
type printer struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (p *printer) line(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", a...)
	p.w.Flush()
}

// content is the bytes a file at path holds: a pseudo-random stream seeded
// by the path.
func content(path string, n int) []byte {
	h := fnv.New64a()
	h.Write([]byte(path))
	r := rand.New(rand.NewPCG(h.Sum64(), uint64(n)))
	b := make([]byte, n+7)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b[:n]
}

// write writes files until ctx ends. A write that fails is reported and
// not retried (its file is never acknowledged, so never checked).
func write(ctx context.Context, c *client.Client, p *printer, dir string) {
	if _, err := c.Mkdir(context.Background(), meta.Root, meta.P(dir), 0o755, true); err != nil {
		fail("mkdir %s: %v", dir, err)
	}
	for i := 0; ctx.Err() == nil; i++ {
		path := fmt.Sprintf("%s/%d", dir, i)
		// Not ctx: a write under way finishes (or fails) on its own, so
		// an ACK is never printed for a write cut short by SIGTERM.
		wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := c.WriteFile(wctx, meta.Root, meta.P(path), content(path, *size), 0o644)
		cancel()
		if err != nil {
			p.line("ERR %d %s %s", time.Now().UnixNano(), path, oneLine(err))
			time.Sleep(50 * time.Millisecond)
			continue
		}
		p.line("ACK %d %s", time.Now().UnixNano(), path)
	}
}

// verify reads every path on in and reports whether any differed.
func verify(c *client.Client, p *printer, in io.Reader) (bad bool) {
	sc := bufio.NewScanner(in)
	n := 0
	for sc.Scan() {
		path := strings.TrimSpace(sc.Text())
		if path == "" {
			continue
		}
		n++
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		got, err := c.ReadFile(ctx, meta.Root, meta.P(path))
		cancel()
		switch {
		case err != nil:
			p.line("BAD %s %s", path, oneLine(err))
			bad = true
		case !bytes.Equal(got, content(path, *size)):
			p.line("BAD %s content differs (%d bytes, want %d)", path, len(got), *size)
			bad = true
		}
	}
	p.line("VERIFIED %d", n)
	return bad
}

// prep makes dir on chain table table (stripe chains per file) and n files
// of sz bytes in it.
func prep(c *client.Client, p *printer, dir string, table, stripe uint32, n, sz int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.Mkdir(ctx, meta.Root, meta.P(dir), 0o755, true); err != nil {
		fail("mkdir %s: %v", dir, err)
	}
	// The native client has no layout call; meta's has.
	conn, err := mgmtdclient.Dial(strings.Split(*mgmtd, ","), *token)
	if err != nil {
		fail("mgmtd: %v", err)
	}
	defer conn.Close()
	cache := mgmtdclient.NewCache(conn)
	cache.Start()
	defer cache.Close()
	if err := cache.Refresh(ctx); err != nil {
		fail("routing: %v", err)
	}
	mfs, err := metaclient.NewFailoverClient(metaclient.FailoverConfig{Addrs: metaclient.RoutingMetaAddrs(cache), Token: *token, RetryWindow: 30 * time.Second})
	if err != nil {
		fail("meta: %v", err)
	}
	defer mfs.CloseConn()
	if _, err := mfs.SetDirLayout(ctx, meta.Root, meta.P(dir), meta.Layout{ChainTable: table, ChunkSize: 1 << 20, StripeSize: stripe}); err != nil {
		fail("layout of %s: %v", dir, err)
	}
	for i := range n {
		path := fmt.Sprintf("%s/%d", dir, i)
		if err := c.WriteFile(ctx, meta.Root, meta.P(path), content(path, sz), 0o644); err != nil {
			fail("write %s: %v", path, err)
		}
	}
	p.line("PREPARED %d", n)
}

// read reads the n files of dir whole, again and again, from --threads
// goroutines, with O_DIRECT so that every read goes to storage (no
// read-ahead or cache), until ctx ends.
func read(ctx context.Context, c *client.Client, p *printer, dir string, n, sz int) {
	files := make([]*client.File, n)
	want := make([][]byte, n)
	for i := range n {
		path := fmt.Sprintf("%s/%d", dir, i)
		f, err := c.Open(context.Background(), meta.Root, meta.P(path), os.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			fail("open %s: %v", path, err)
		}
		defer f.Close()
		files[i], want[i] = f, content(path, sz)
	}
	var bytesRead, errs atomic.Int64
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range *threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, sz)
			for ctx.Err() == nil {
				i := int(next.Add(1)) % n
				k, err := files[i].ReadAt(buf, 0)
				if errors.Is(err, io.EOF) && k == sz {
					err = nil
				}
				if err == nil && !bytes.Equal(buf[:k], want[i]) {
					err = fmt.Errorf("content differs (%d bytes)", k)
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					errs.Add(1)
					p.line("ERR %d %s/%d %s", time.Now().UnixNano(), dir, i, oneLine(err))
					continue
				}
				bytesRead.Add(int64(k))
			}
		}()
	}
	wg.Wait()
	p.line("READ %d %.3f %d", bytesRead.Load(), time.Since(start).Seconds(), errs.Load())
}

// probe asks one mgmtd for routing, with no redirect: a primary whose
// lease is live by its own clock answers, a standby answers NotPrimary.
func probe(ctx context.Context, p *printer, addr string) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), rpcauth.DialOption(*token))
	if err != nil {
		fail("dial %s: %v", addr, err)
	}
	defer cc.Close()
	cl := mgmtdpb.NewMgmtdClient(cc)
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now().UnixNano()
		rsp, err := cl.GetRoutingInfo(cctx, &mgmtdpb.GetRoutingInfoReq{})
		end := time.Now().UnixNano()
		cancel()
		err = errcode.FromGRPC(err)
		switch {
		case ctx.Err() != nil:
		case err == nil:
			p.line("P %d %d primary %d", start, end, rsp.GetInfo().GetVersion())
		case errcode.Is(err, errcode.NotPrimary):
			p.line("P %d %d standby", start, end)
		default:
			p.line("P %d %d error %s", start, end, oneLine(err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

func need(args []string, n int) {
	if len(args) != n {
		fail("%s: want %d arguments, got %d", args[0], n-1, len(args)-1)
	}
}

func atoi(s string) int {
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		fail("%q is not a count", s)
	}
	return v
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "netnsclient: "+format+"\n", a...)
	os.Exit(2)
}
