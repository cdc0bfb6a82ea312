// Package metabench measures metadata operations per second (create, stat,
// readdir of a large directory, rename, unlink) at several numbers of
// concurrent clients, against a meta server in-process and over gRPC on
// loopback. `emberfs bench meta` prints its table.
package metabench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/kv/kvopen"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/metaclient"
	"github.com/emberfs/emberfs/service/proto/metapb"
)

// Modes and operations, in table order.
var (
	Modes = []string{"inproc", "grpc"}
	Ops   = []string{"create", "stat", "readdir", "rename", "unlink"}
)

// Options configure Run; zero fields take the defaults noted.
type Options struct {
	Duration   time.Duration // per measurement (default 1 s)
	Clients    []int         // concurrent clients (default 1, 16, 64)
	DirEntries int           // size of the directory readdir lists (default 10 000)
	Modes      []string      // subset of Modes (default both)
	KV         string        // engine spec (default "memory")
	Progress   io.Writer     // a line per measurement (nil: silent)
}

// Result is one measurement.
type Result struct {
	Mode    string
	Clients int
	Op      string
	Ops     int // readdir: full listings of the directory
	Elapsed time.Duration
}

// OpsPerSec is the measured rate.
func (r Result) OpsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

const token = "metabench"

// Run runs every measurement and returns them in table order.
func Run(ctx context.Context, o Options) ([]Result, error) {
	if o.Duration <= 0 {
		o.Duration = time.Second
	}
	if len(o.Clients) == 0 {
		o.Clients = []int{1, 16, 64}
	}
	if o.DirEntries <= 0 {
		o.DirEntries = 10_000
	}
	if len(o.Modes) == 0 {
		o.Modes = Modes
	}
	if o.KV == "" {
		o.KV = "memory"
	}
	for _, m := range o.Modes {
		if m != "inproc" && m != "grpc" {
			return nil, fmt.Errorf("metabench: unknown mode %q (want inproc or grpc)", m)
		}
	}
	for _, n := range o.Clients {
		if n <= 0 {
			return nil, fmt.Errorf("metabench: client count %d must be positive", n)
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := kvopen.OpenWith(o.KV, kvopen.Options{Logger: quiet, MaxRetries: 10_000})
	if err != nil {
		return nil, fmt.Errorf("metabench: open KV %q: %w", o.KV, err)
	}
	defer eng.Close()
	srv, err := meta.New(ctx, eng, meta.Config{Logger: quiet})
	if err != nil {
		return nil, err
	}
	// Every run works under a directory of its own, so a durable KV used
	// before does not get in the way.
	top := fmt.Sprintf("/metabench-%d", time.Now().UnixNano())
	if _, err := srv.Mkdir(ctx, meta.Root, path(top), 0o777, false); err != nil {
		return nil, err
	}
	var out []Result
	for _, mode := range o.Modes {
		clients, closeAll, err := connect(mode, srv, o.Clients)
		if err != nil {
			return nil, err
		}
		res, err := runMode(ctx, o, mode, srv, clients, top+"/"+mode)
		closeAll()
		if err != nil {
			return nil, fmt.Errorf("metabench %s: %w", mode, err)
		}
		out = append(out, res...)
	}
	return out, nil
}

// connect returns the FS each of up to max(clients) goroutines uses: the
// server itself, or gRPC connections to a loopback server over it (one per
// client up to 8, then shared, as several clients in one process would).
func connect(mode string, srv *meta.Server, counts []int) ([]meta.FS, func(), error) {
	most := 0
	for _, n := range counts {
		most = max(most, n)
	}
	if mode == "inproc" {
		fs := make([]meta.FS, most)
		for i := range fs {
			fs[i] = srv
		}
		return fs, func() {}, nil
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	gs := grpc.NewServer(rpcauth.ServerOptions(token)...)
	metapb.RegisterMetaServer(gs, meta.NewGRPCService(srv))
	go gs.Serve(lis)
	var conns []*metaclient.Client
	closeAll := func() {
		for _, c := range conns {
			c.CloseConn()
		}
		gs.Stop()
	}
	for range min(most, 8) {
		c, err := metaclient.Dial(lis.Addr().String(), token)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns = append(conns, c)
	}
	fs := make([]meta.FS, most)
	for i := range fs {
		fs[i] = conns[i%len(conns)]
	}
	return fs, closeAll, nil
}

func path(p string) meta.PathAt { return meta.PathAt{Path: p} }

func runMode(ctx context.Context, o Options, mode string, srv *meta.Server, fs []meta.FS, base string) ([]Result, error) {
	progress := func(r Result) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%-6s clients=%-3d %-8s %10.0f ops/s (%d in %v)\n", r.Mode, r.Clients, r.Op, r.OpsPerSec(), r.Ops, r.Elapsed.Round(time.Millisecond))
		}
	}
	big := base + "/big"
	if err := makeDir(ctx, srv, big, o.DirEntries); err != nil {
		return nil, err
	}
	var out []Result
	for _, n := range o.Clients {
		x, y := fmt.Sprintf("%s/c%d-x", base, n), fmt.Sprintf("%s/c%d-y", base, n)
		for _, d := range []string{x, y} {
			if _, err := srv.Mkdir(ctx, meta.Root, path(d), 0o777, true); err != nil {
				return nil, err
			}
		}
		measure := func(op string, limit int, fn func(fs meta.FS, i int) error) (Result, error) {
			r := Result{Mode: mode, Clients: n, Op: op}
			var err error
			r.Ops, r.Elapsed, err = drive(ctx, fs[:n], o.Duration, limit, fn)
			if err != nil {
				return r, fmt.Errorf("%s with %d clients: %w", op, n, err)
			}
			progress(r)
			out = append(out, r)
			return r, nil
		}
		created, err := measure("create", -1, func(fs meta.FS, i int) error {
			_, err := fs.Create(ctx, meta.Root, path(fmt.Sprintf("%s/f%d", x, i)), meta.CreateOptions{Mode: 0o644, Exclusive: true})
			return err
		})
		if err != nil {
			return nil, err
		}
		if created.Ops == 0 {
			return nil, fmt.Errorf("no create finished within %v with %d clients; raise the duration", o.Duration, n)
		}
		if _, err := measure("stat", -1, func(fs meta.FS, _ int) error {
			_, err := fs.Stat(ctx, meta.Root, path(fmt.Sprintf("%s/f%d", x, rand.IntN(created.Ops))))
			return err
		}); err != nil {
			return nil, err
		}
		if _, err := measure("readdir", -1, func(fs meta.FS, _ int) error { return listAll(ctx, fs, big, o.DirEntries) }); err != nil {
			return nil, err
		}
		renamed, err := measure("rename", created.Ops, func(fs meta.FS, i int) error {
			return fs.Rename(ctx, meta.Root, path(fmt.Sprintf("%s/f%d", x, i)), path(fmt.Sprintf("%s/f%d", y, i)), 0)
		})
		if err != nil {
			return nil, err
		}
		if _, err := measure("unlink", renamed.Ops, func(fs meta.FS, i int) error {
			return fs.Unlink(ctx, meta.Root, path(fmt.Sprintf("%s/f%d", y, i)))
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// drive runs fn from len(fs) goroutines with increasing indices until d
// has passed or limit indices (when limit >= 0) are used up. Every index
// taken is finished, so indices 0..ops-1 are exactly the ones done.
func drive(ctx context.Context, fs []meta.FS, d time.Duration, limit int, fn func(fs meta.FS, i int) error) (int, time.Duration, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for c := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) && firstErr.Load() == nil {
				i := int(next.Add(1)) - 1
				if limit >= 0 && i >= limit {
					next.Add(-1)
					return
				}
				if err := fn(fs[c], i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, err
	}
	return int(next.Load()), time.Since(start), ctx.Err()
}

// makeDir fills dir with n empty files (in-process, 8 at a time).
func makeDir(ctx context.Context, srv *meta.Server, dir string, n int) error {
	if _, err := srv.Mkdir(ctx, meta.Root, path(dir), 0o777, true); err != nil {
		return err
	}
	fs := make([]meta.FS, 8)
	for i := range fs {
		fs[i] = srv
	}
	done, _, err := drive(ctx, fs, 24*time.Hour, n, func(fs meta.FS, i int) error {
		_, err := fs.Create(ctx, meta.Root, path(fmt.Sprintf("%s/e%07d", dir, i)), meta.CreateOptions{Mode: 0o644})
		return err
	})
	if err == nil && done != n {
		err = fmt.Errorf("filled %s with %d of %d entries", dir, done, n)
	}
	return err
}

// listAll reads dir completely in pages of 1024 entries.
func listAll(ctx context.Context, fs meta.FS, dir string, want int) error {
	cursor, total := "", 0
	for {
		page, err := fs.ReadDir(ctx, meta.Root, path(dir), meta.ReadDirOptions{Cursor: cursor, Limit: 1024})
		if err != nil {
			return err
		}
		total += len(page.Entries)
		if !page.More || len(page.Entries) == 0 {
			break
		}
		cursor = page.Entries[len(page.Entries)-1].Name
	}
	if total != want {
		return fmt.Errorf("listed %d entries of %s, want %d", total, dir, want)
	}
	return nil
}

// WriteTable prints results as a Markdown table: a row per mode and
// client count, a column per operation (ops/s; readdir in full listings
// per second).
func WriteTable(w io.Writer, results []Result, dirEntries int) error {
	type rowKey struct {
		mode    string
		clients int
	}
	cells := map[rowKey]map[string]Result{}
	var rows []rowKey
	for _, r := range results {
		k := rowKey{r.Mode, r.Clients}
		if cells[k] == nil {
			cells[k] = map[string]Result{}
			rows = append(rows, k)
		}
		cells[k][r.Op] = r
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| mode | clients | create | stat | readdir %d (listings/s) | rename | unlink |\n", dirEntries)
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, k := range rows {
		fmt.Fprintf(&b, "| %s | %d |", k.mode, k.clients)
		for _, op := range Ops {
			if r, ok := cells[k][op]; ok {
				fmt.Fprintf(&b, " %s |", formatRate(r.OpsPerSec()))
			} else {
				b.WriteString(" - |")
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatRate(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
