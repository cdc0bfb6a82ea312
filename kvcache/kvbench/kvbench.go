// Package kvbench measures the KVCache client beside redis-server on the
// same machine in the same run: put, get, get_into, exists and
// longest_prefix (over 64-key prefix chains) for each value size and
// number of concurrent callers, reporting ops/s, MB/s, p50 and p99 for
// both and the EmberFS/Redis throughput ratio. `emberfs bench kvcache`
// runs it.
package kvbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/kvcache"
)

// Ops are the benchmarked operations, in table order.
var Ops = []string{"put", "get", "get_into", "exists", "longest_prefix"}

// ChainLen is the number of keys of one longest_prefix call.
const ChainLen = 64

// Options configure a run. Zero fields take the defaults noted.
type Options struct {
	// Mgmtd and Token name an existing cluster; with no Mgmtd an
	// in-process cluster (internal/localcluster) runs in a temp dir.
	Mgmtd []string
	Token string
	// Replicas of the in-process cluster (default 3, over 3 storage services).
	Replicas int
	// Sizes in bytes (default 4K,64K,256K,1M,4M); Concurrency (default
	// 1,16,64); Ops (default all).
	Sizes       []int
	Concurrency []int
	Ops         []string
	// Duration of each cell (default 1 s) per system.
	Duration time.Duration
	// DataBytes bounds the distinct data each size writes (default
	// 256 MiB): puts cycle over that many keys, so neither side grows.
	DataBytes int64
	// MemoryTierBytes gives the EmberFS client a memory tier (default 0:
	// every get goes to the cluster).
	MemoryTierBytes int64
	// RedisServer is the redis-server binary (default: from PATH).
	RedisServer string
	// Progress gets one line per step (default: discarded).
	Progress io.Writer
}

// Result is one measurement of one system.
type Result struct {
	Ops      int64
	Bytes    int64
	Elapsed  time.Duration
	P50, P99 time.Duration
}

// OpsPerSec is the throughput in calls per second.
func (r Result) OpsPerSec() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// MBPerSec is value bytes moved per second (MB = 10^6 bytes).
func (r Result) MBPerSec() float64 { return float64(r.Bytes) / r.Elapsed.Seconds() / 1e6 }

// Row is one cell of the table: one op, size and concurrency on both.
type Row struct {
	Op          string
	Size        int
	Concurrency int
	EmberFS     Result
	Redis       Result
}

// Ratio is EmberFS throughput over Redis throughput.
func (r Row) Ratio() float64 {
	if r.Redis.Ops == 0 {
		return 0
	}
	return r.EmberFS.OpsPerSec() / r.Redis.OpsPerSec()
}

// Header is the Markdown table header matching Row.Markdown.
const Header = "| op | size | conc | EmberFS ops/s | EmberFS MB/s | EmberFS p50 | EmberFS p99 | Redis ops/s | Redis MB/s | Redis p50 | Redis p99 | ops ratio | p99 ratio |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|"

// Markdown renders the row. MB/s is "-" for exists and longest_prefix,
// which move no values.
func (r Row) Markdown() string {
	mb := func(x Result) string {
		if r.Op == "exists" || r.Op == "longest_prefix" {
			return "-"
		}
		return fmt.Sprintf("%.0f", x.MBPerSec())
	}
	p99r := "-"
	if r.Redis.P99 > 0 {
		p99r = fmt.Sprintf("%.2f", float64(r.EmberFS.P99)/float64(r.Redis.P99))
	}
	return fmt.Sprintf("| %s | %s | %d | %.0f | %s | %s | %s | %.0f | %s | %s | %s | %.2fx | %s |", r.Op, SizeString(r.Size), r.Concurrency,
		r.EmberFS.OpsPerSec(), mb(r.EmberFS), dur(r.EmberFS.P50), dur(r.EmberFS.P99),
		r.Redis.OpsPerSec(), mb(r.Redis), dur(r.Redis.P50), dur(r.Redis.P99), r.Ratio(), p99r)
}

func dur(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	}
}

// SizeString prints 4K, 256K, 1M.
func SizeString(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprint(n)
}

func (o *Options) setDefaults() error {
	if o.Replicas <= 0 {
		o.Replicas = 3
	}
	if len(o.Sizes) == 0 {
		o.Sizes = []int{4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20}
	}
	if len(o.Concurrency) == 0 {
		o.Concurrency = []int{1, 16, 64}
	}
	if len(o.Ops) == 0 {
		o.Ops = Ops
	}
	for _, op := range o.Ops {
		if !slices.Contains(Ops, op) {
			return fmt.Errorf("kvbench: unknown op %q (ops: %s)", op, strings.Join(Ops, ", "))
		}
	}
	if o.Duration <= 0 {
		o.Duration = time.Second
	}
	if o.DataBytes <= 0 {
		o.DataBytes = 256 << 20
	}
	if o.RedisServer == "" {
		o.RedisServer = "redis-server"
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return nil
}

// Run starts redis-server (and an in-process cluster unless Mgmtd is
// given), measures every cell and calls row for each as it completes.
func Run(ctx context.Context, o Options, row func(Row)) ([]Row, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	step := func(format string, args ...any) { fmt.Fprintf(o.Progress, "kvbench: "+format+"\n", args...) }
	tmp, err := os.MkdirTemp("", "emberfs-kvbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	redis, err := startRedis(ctx, o.RedisServer, tmp)
	if err != nil {
		return nil, err
	}
	defer redis.stop()
	step("redis-server %s listening on %s", redis.version, redis.addr)

	c, closeCluster, err := connect(ctx, o, tmp, step)
	if err != nil {
		return nil, err
	}
	defer closeCluster()

	maxSize := slices.Max(o.Sizes)
	name := fmt.Sprintf("kvbench-%d-%d", os.Getpid(), time.Now().UnixNano())
	s := kvcache.DefaultSettings(max(8*o.DataBytes, 1<<30))
	s.MaxValueBytes, s.Replicas = int64(maxSize), 0
	if len(o.Mgmtd) == 0 {
		s.Replicas = o.Replicas
	}
	if _, err := kvcache.Create(ctx, c, name, s); err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute) // a drop removes every chunk of the run
		defer cancel()
		if err := kvcache.Drop(dctx, c, name); err != nil {
			step("dropping namespace %s: %v", name, err)
		}
	}()
	k, err := kvcache.Open(ctx, c, name, kvcache.Options{MemoryTierBytes: o.MemoryTierBytes})
	if err != nil {
		return nil, err
	}
	defer k.Close()
	step("namespace %s: %d chains of %d replicas", name, len(k.Namespace().ChainIDs), k.Namespace().Replicas)

	b := &bench{o: o, k: k, redisAddr: redis.addr, step: step}
	var rows []Row
	for _, size := range o.Sizes {
		if err := b.load(ctx, size); err != nil {
			return rows, err
		}
		for _, op := range o.Ops {
			for _, conc := range o.Concurrency {
				r := Row{Op: op, Size: size, Concurrency: conc}
				step("%s %s x%d: EmberFS", op, SizeString(size), conc)
				if r.EmberFS, err = b.measure(ctx, op, size, conc, b.emberOp); err != nil {
					return rows, fmt.Errorf("EmberFS %s %s x%d: %w", op, SizeString(size), conc, err)
				}
				step("%s %s x%d: Redis", op, SizeString(size), conc)
				if r.Redis, err = b.measure(ctx, op, size, conc, b.redisOp); err != nil {
					return rows, fmt.Errorf("Redis %s %s x%d: %w", op, SizeString(size), conc, err)
				}
				rows = append(rows, r)
				if row != nil {
					row(r)
				}
			}
		}
	}
	return rows, nil
}

// connect reaches the cluster named in o, or starts one in dir.
func connect(ctx context.Context, o Options, dir string, step func(string, ...any)) (*client.Client, func(), error) {
	cfg := client.Config{CacheBytes: -1, ReadAhead: -1}
	if len(o.Mgmtd) > 0 {
		cfg.MgmtdAddrs, cfg.Token = o.Mgmtd, o.Token
		c, err := client.New(ctx, cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("connecting to %v: %w", o.Mgmtd, err)
		}
		return c, func() { c.Close() }, nil
	}
	storage := max(3, o.Replicas)
	targets := 2
	for storage*targets%o.Replicas != 0 {
		targets++
	}
	step("starting an in-process cluster: %d storage services, %d replicas", storage, o.Replicas)
	lc, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(dir, "cluster"), Storage: storage,
		Replicas: o.Replicas, TargetsPerNode: targets, NoSync: true})
	if err != nil {
		return nil, nil, err
	}
	cfg.MgmtdAddrs, cfg.Token = lc.MgmtdAddrs(), lc.Token()
	c, err := client.New(ctx, cfg)
	if err != nil {
		lc.Close(context.Background())
		return nil, nil, err
	}
	return c, func() {
		c.Close()
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		lc.Close(cctx)
	}, nil
}

type bench struct {
	o         Options
	k         *kvcache.Cache
	redisAddr string
	step      func(string, ...any)

	size  int
	keys  [][]byte // the size's key set: puts cycle over it, gets read it
	value []byte
}

func (b *bench) key(size, i int) []byte { return []byte(fmt.Sprintf("kvbench/%d/%08d", size, i)) }

// load writes the size's key set to both systems (and clears Redis of
// the previous size, so its memory stays bounded).
func (b *bench) load(ctx context.Context, size int) error {
	n := max(ChainLen, int(b.o.DataBytes/int64(size)))
	b.size, b.keys = size, make([][]byte, n)
	for i := range n {
		b.keys[i] = b.key(size, i)
	}
	b.value = make([]byte, size)
	for i := range b.value {
		b.value[i] = byte(i*7 + size)
	}
	b.step("loading %d values of %s into both", n, SizeString(size))
	rc, err := dialRESP(b.redisAddr)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := rc.do("FLUSHALL"); err != nil {
		return err
	}
	vals := make([][]byte, n)
	for i := range vals {
		vals[i] = b.value
	}
	for i, err := range b.k.BatchPutFrom(ctx, b.keys, vals) {
		if err != nil {
			return fmt.Errorf("loading key %d: %w", i, err)
		}
	}
	for _, key := range b.keys {
		if err := rc.Set(key, b.value); err != nil {
			return err
		}
	}
	return nil
}

// worker is one caller's state: its own Redis connection and buffer.
type worker struct {
	rc  *respConn
	buf []byte
}

// opFunc runs call number i of op on w and returns the value bytes moved.
type opFunc func(ctx context.Context, w *worker, op string, i int) (int, error)

func (b *bench) emberOp(ctx context.Context, w *worker, op string, i int) (int, error) {
	key := b.keys[i%len(b.keys)]
	switch op {
	case "put":
		return b.size, b.k.PutFrom(ctx, key, b.value)
	case "get":
		v, found, err := b.k.Get(ctx, key)
		return len(v), hitOrErr(found, err, key)
	case "get_into":
		n, found, err := b.k.GetInto(ctx, key, w.buf)
		return n, hitOrErr(found, err, key)
	case "exists":
		ex, err := b.k.Exists(ctx, [][]byte{key})
		if err == nil && !ex[0] {
			err = fmt.Errorf("key %s missing", key)
		}
		return 0, err
	case "longest_prefix":
		start := (i * ChainLen) % (len(b.keys) - ChainLen + 1)
		n, err := b.k.LongestPrefix(ctx, b.keys[start:start+ChainLen])
		if err == nil && n != ChainLen {
			err = fmt.Errorf("longest prefix %d of %d", n, ChainLen)
		}
		return 0, err
	}
	return 0, fmt.Errorf("unknown op %q", op)
}

func (b *bench) redisOp(_ context.Context, w *worker, op string, i int) (int, error) {
	key := b.keys[i%len(b.keys)]
	switch op {
	case "put":
		return b.size, w.rc.Set(key, b.value)
	case "get":
		v, found, err := w.rc.Get(key, nil)
		return len(v), hitOrErr(found, err, key)
	case "get_into":
		v, found, err := w.rc.Get(key, w.buf)
		return len(v), hitOrErr(found, err, key)
	case "exists":
		ok, err := w.rc.Exists(key)
		if err == nil && !ok {
			err = fmt.Errorf("key %s missing", key)
		}
		return 0, err
	case "longest_prefix":
		start := (i * ChainLen) % (len(b.keys) - ChainLen + 1)
		n, err := w.rc.LongestPrefix(b.keys[start : start+ChainLen])
		if err == nil && n != ChainLen {
			err = fmt.Errorf("longest prefix %d of %d", n, ChainLen)
		}
		return 0, err
	}
	return 0, fmt.Errorf("unknown op %q", op)
}

// hitOrErr turns a miss into an error: every benchmarked key was loaded,
// so a miss means the run is not measuring what it claims.
func hitOrErr(found bool, err error, key []byte) error {
	if err == nil && !found {
		return fmt.Errorf("key %s missing", key)
	}
	return err
}

// measure runs conc callers of fn for the duration and collects latencies.
func (b *bench) measure(ctx context.Context, op string, size, conc int, fn opFunc) (Result, error) {
	workers := make([]*worker, conc)
	for i := range workers {
		rc, err := dialRESP(b.redisAddr)
		if err != nil {
			return Result{}, err
		}
		defer rc.Close()
		workers[i] = &worker{rc: rc, buf: make([]byte, size)}
	}
	var next atomic.Int64
	var total atomic.Int64
	lats := make([][]time.Duration, conc)
	errs := make([]error, conc)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for wi, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := int(next.Add(1) - 1)
				t0 := time.Now()
				n, err := fn(ctx, w, op, i)
				if err != nil {
					errs[wi] = err
					return
				}
				lats[wi] = append(lats[wi], time.Since(t0))
				total.Add(int64(n))
			}
		}()
	}
	select {
	case <-time.After(b.o.Duration):
	case <-ctx.Done():
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return Result{}, fmt.Errorf("no call finished in %v", b.o.Duration)
	}
	slices.Sort(all)
	pct := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
	return Result{Ops: int64(len(all)), Bytes: total.Load(), Elapsed: elapsed, P50: pct(0.50), P99: pct(0.99)}, nil
}

// redisProc is a redis-server this run started.
type redisProc struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process is reaped
	addr    string
	version string
}

// startRedis runs redis-server on a free loopback port with persistence
// off. Redis cannot listen on port 0, so a port is taken from the kernel
// and released just before; a lost race is retried on a new port.
func startRedis(ctx context.Context, bin, dir string) (*redisProc, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("kvbench: redis-server not found (%v); install it (Debian: apt-get install redis-server) or pass --redis-server", err)
	}
	var lastErr error
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cmd := exec.Command(path, "--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--save", "", "--appendonly", "no",
			"--dir", dir, "--protected-mode", "no", "--maxmemory", "0")
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("redis-%d.log", port)))
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			return nil, fmt.Errorf("kvbench: starting %s: %w", path, err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
		p := &redisProc{cmd: cmd, done: done, addr: fmt.Sprintf("127.0.0.1:%d", port)}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if rc, err := dialRESP(p.addr); err == nil {
				err = rc.do("PING")
				if err == nil {
					p.version = redisVersion(rc)
				}
				rc.Close()
				if err == nil {
					return p, nil
				}
			}
			select {
			case <-done:
				log, _ := os.ReadFile(logf.Name())
				lastErr = fmt.Errorf("kvbench: redis-server exited: %s", strings.TrimSpace(string(log)))
			case <-ctx.Done():
				p.stop()
				return nil, ctx.Err()
			case <-time.After(20 * time.Millisecond):
				continue
			}
			break
		}
		p.stop()
		if lastErr == nil {
			lastErr = fmt.Errorf("kvbench: redis-server on port %d did not answer PING in 10 s", port)
		}
	}
	return nil, lastErr
}

func redisVersion(rc *respConn) string {
	if err := rc.writeCmd([]byte("INFO"), []byte("server")); err != nil {
		return "?"
	}
	if rc.w.Flush() != nil {
		return "?"
	}
	v, _, err := rc.bulk(nil)
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(v), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(l), "redis_version:"); ok {
			return s
		}
	}
	return "?"
}

func (p *redisProc) stop() {
	_ = p.cmd.Process.Kill()
	<-p.done
}
