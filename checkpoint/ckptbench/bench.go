// Package ckptbench measures checkpoint save and load throughput on
// EmberFS beside the same bytes written to and read from the local disk
// (os.File + fsync) in the same run (`emberfs bench checkpoint`).
package ckptbench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emberfs/emberfs/checkpoint"
	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/service/meta"
)

// Options of a run. Zero fields take the defaults noted.
type Options struct {
	Total    int64 // bytes per checkpoint (default 1 GiB)
	Shards   int   // shard files written in parallel, like ranks (default 1)
	Replicas int   // of the in-process cluster when MgmtdAddrs is empty (default 1)
	// MgmtdAddrs and Token use a running cluster instead of starting one.
	MgmtdAddrs []string
	Token      string
	// Dir holds the local-disk baseline files and the in-process
	// cluster's data (default: a temp dir, removed afterwards).
	Dir string
	// NoSync turns fsync off in the in-process cluster (not the default:
	// the baseline fsyncs too).
	NoSync   bool
	Progress io.Writer
}

// Result is one run's numbers (GB/s are 1e9 bytes per second).
type Result struct {
	Bytes                     int64
	Regions                   int
	EmberSave, EmberLoad      float64
	LocalSave, LocalLoad      float64
	SaveTime, LoadTime        time.Duration
	LocalSaveTime, LocalLoadT time.Duration
}

// Sizes returns the region sizes of a mixed state dict of about total
// bytes: many small tensors (1 KiB to 64 KiB) and large ones up to
// 512 MiB, largest first.
func Sizes(total int64) []int {
	var out []int
	var sum int64
	for _, s := range []int{1 << 10, 4 << 10, 16 << 10, 64 << 10} {
		for range 32 {
			if sum+int64(s) > total {
				break
			}
			out = append(out, s)
			sum += int64(s)
		}
	}
	for _, s := range []int{512 << 20, 128 << 20, 32 << 20, 8 << 20, 2 << 20, 512 << 10, 128 << 10} {
		for sum+int64(s) <= total && (s < 512<<20 || sum+int64(s) <= total/2+int64(s)) {
			out = append(out, s)
			sum += int64(s)
		}
	}
	if rest := total - sum; rest > 0 {
		out = append(out, int(rest))
	}
	return out
}

// Run performs one save and one load on EmberFS and on the local disk.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Total <= 0 {
		o.Total = 1 << 30
	}
	if o.Shards <= 0 {
		o.Shards = 1
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "emberfs-ckptbench-")
		if err != nil {
			return Result{}, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	addrs, token := o.MgmtdAddrs, o.Token
	if len(addrs) == 0 {
		fmt.Fprintf(o.Progress, "starting a local cluster (3 storage services, %d replicas) in %s\n", o.Replicas, dir)
		c, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(dir, "cluster"), Storage: 3, Replicas: o.Replicas,
			TargetsPerNode: 2 * o.Replicas, NoSync: o.NoSync})
		if err != nil {
			return Result{}, err
		}
		defer c.Close(context.Background())
		addrs, token = c.MgmtdAddrs(), c.Token()
	}
	cl, err := client.New(ctx, client.Config{MgmtdAddrs: addrs, Token: token})
	if err != nil {
		return Result{}, err
	}
	defer cl.Close()
	s := checkpoint.New(cl, meta.Root, checkpoint.Options{})

	sizes := Sizes(o.Total)
	fmt.Fprintf(o.Progress, "generating %d regions, %.2f GiB\n", len(sizes), float64(o.Total)/(1<<30))
	bufs := make([][]byte, len(sizes))
	rng := rand.New(rand.NewPCG(1, 2))
	for i, n := range sizes {
		bufs[i] = make([]byte, n)
		for j := 0; j < n; j += 4096 {
			bufs[i][j] = byte(rng.Uint32())
		}
	}
	shardOf := func(i int) int { return i % o.Shards }
	res := Result{Bytes: o.Total, Regions: len(sizes)}

	// Local disk baseline: one file per shard, written sequentially and
	// fsynced, shards in parallel.
	local := filepath.Join(dir, "local")
	if err := os.MkdirAll(local, 0o755); err != nil {
		return res, err
	}
	fmt.Fprintln(o.Progress, "local disk: save")
	offs := make([]int64, len(sizes))
	t0 := time.Now()
	err = forShards(o.Shards, func(r int) error {
		f, err := os.Create(filepath.Join(local, fmt.Sprintf("rank-%d.bin", r)))
		if err != nil {
			return err
		}
		var off int64
		for i := range bufs {
			if shardOf(i) != r {
				continue
			}
			if _, err := f.Write(bufs[i]); err != nil {
				f.Close()
				return err
			}
			offs[i] = off
			off += int64(len(bufs[i]))
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	if err != nil {
		return res, err
	}
	res.LocalSaveTime = time.Since(t0)
	dropCache(local)
	fmt.Fprintln(o.Progress, "local disk: load")
	t0 = time.Now()
	err = forShards(o.Shards, func(r int) error {
		f, err := os.Open(filepath.Join(local, fmt.Sprintf("rank-%d.bin", r)))
		if err != nil {
			return err
		}
		defer f.Close()
		for i := range bufs {
			if shardOf(i) == r {
				if _, err := f.ReadAt(bufs[i], offs[i]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	res.LocalLoadT = time.Since(t0)
	_ = os.RemoveAll(local)

	// EmberFS: Begin, one shard writer per rank in parallel, commit.
	jobDir := fmt.Sprintf("/ckptbench-%d", time.Now().UnixNano())
	fmt.Fprintln(o.Progress, "emberfs: save")
	t0 = time.Now()
	sv, err := s.Begin(ctx, jobDir, "step-1")
	if err != nil {
		return res, err
	}
	var m checkpoint.Manifest
	var mu sync.Mutex
	err = forShards(o.Shards, func(r int) error {
		file := fmt.Sprintf("rank-%d.bin", r)
		w, err := s.OpenShard(ctx, sv.Pending, file)
		if err != nil {
			return err
		}
		var idx []int
		var regs [][]byte
		for i := range bufs {
			if shardOf(i) == r {
				idx, regs = append(idx, i), append(regs, bufs[i])
			}
		}
		out, err := w.Write(regs)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		mu.Lock()
		for k, x := range out {
			m.Tensors = append(m.Tensors, checkpoint.Tensor{Name: fmt.Sprintf("t%d", idx[k]), File: file, Offset: x.Offset,
				Length: x.Length, Dtype: "uint8", Shape: []int64{x.Length}, CRC32C: x.CRC32C})
		}
		mu.Unlock()
		return nil
	})
	if err != nil {
		_ = sv.Abort(ctx)
		return res, err
	}
	p, err := sv.Commit(ctx, &m, 0)
	if err != nil {
		return res, err
	}
	res.SaveTime = time.Since(t0)
	if len(o.MgmtdAddrs) == 0 {
		dropCache(filepath.Join(dir, "cluster")) // the chunk files
	}
	fmt.Fprintln(o.Progress, "emberfs: load")
	t0 = time.Now()
	rd, err := s.Open(ctx, p)
	if err != nil {
		return res, err
	}
	names := make([]string, len(bufs))
	for i := range names {
		names[i] = fmt.Sprintf("t%d", i)
	}
	err = rd.ReadTensors(ctx, names, bufs)
	rd.Close()
	if err != nil {
		return res, err
	}
	res.LoadTime = time.Since(t0)
	_ = cl.RemoveAll(ctx, meta.Root, meta.P(jobDir))

	gbps := func(d time.Duration) float64 { return float64(o.Total) / d.Seconds() / 1e9 }
	res.EmberSave, res.EmberLoad = gbps(res.SaveTime), gbps(res.LoadTime)
	res.LocalSave, res.LocalLoad = gbps(res.LocalSaveTime), gbps(res.LocalLoadT)
	return res, nil
}

// dropCache evicts the files under dir from the page cache
// (POSIX_FADV_DONTNEED after fsync), so that both loads read the disk
// rather than memory the save just filled.
func dropCache(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		_ = f.Sync()
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
		return nil
	})
}

func forShards(n int, fn func(r int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Add(1)
		go func() { defer wg.Done(); errs[r] = fn(r) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Table formats results as Markdown, one row per operation.
func Table(label string, r Result) string {
	return fmt.Sprintf("| %s save | %.2f | %.2f | %.2fx |\n| %s load | %.2f | %.2f | %.2fx |\n",
		label, r.EmberSave, r.LocalSave, r.EmberSave/r.LocalSave, label, r.EmberLoad, r.LocalLoad, r.EmberLoad/r.LocalLoad)
}

// Header is the Markdown table header for Table rows.
const Header = "| operation | EmberFS GB/s | local disk GB/s | ratio |\n|---|---:|---:|---:|"
