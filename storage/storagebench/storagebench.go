// Package storagebench measures the storage path (client -> chain ->
// chunk engines over the data transport) on an in-process cluster on
// loopback, beside plain loopback TCP moving the same sizes in the same
// run. `emberfs bench storage` and the Go benchmarks use it.
package storagebench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
	"github.com/emberfs/emberfs/transport"
)

// Options select what to measure.
type Options struct {
	Sizes    []int
	InFlight []int
	Replicas []int
	Duration time.Duration // per cell
	Dir      string        // target directories go under it ("" = a temp dir)
	Sync     bool          // fsync in the chunk engines (default off: measures the path, not the disk)
	Logger   *slog.Logger
}

// Row is one measured cell.
type Row struct {
	Replicas, Size, InFlight int
	Write, RawWrite          transport.Result
	Read, RawRead            transport.Result
	// CPU-seconds of this process (client and servers together) per GB
	// moved, for the storage path's writes and reads and for plain TCP
	// reads: unlike MB/s on a shared machine, these hardly depend on what
	// else runs.
	WriteCPU, ReadCPU, RawReadCPU float64
}

// cpuSeconds is this process's user+system CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// PeakRSS is this process's peak resident set size in bytes.
func PeakRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss << 10 // kilobytes on Linux
}

// measured runs fn and returns its result with the CPU-seconds per GB it
// moved.
func measured(fn func() (transport.Result, error)) (transport.Result, float64, error) {
	c0 := cpuSeconds()
	r, err := fn()
	cpu := cpuSeconds() - c0
	perGB := 0.0
	if r.Bytes > 0 {
		perGB = cpu / (float64(r.Bytes) / 1e9)
	}
	return r, perGB, err
}

// chunkSize fits the largest size measured.
func chunkSize(size int) uint32 { return uint32(max(size, chunkengine.MinChunkSize)) }

// Run measures every (replicas, size, in-flight) cell and reports each
// row to report as it completes.
func Run(ctx context.Context, o Options, report func(Row)) ([]Row, error) {
	if o.Duration <= 0 {
		o.Duration = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "emberfs-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	var rows []Row
	for _, reps := range o.Replicas {
		lo := localcluster.StorageOnly(fmt.Sprintf("%s/r%d", dir, reps), reps)
		lo.NoSync, lo.Logger = !o.Sync, o.Logger
		lo.HeartbeatInterval, lo.FailureTimeout = 500*time.Millisecond, 5*time.Second
		c, err := localcluster.Start(ctx, lo)
		if err != nil {
			return rows, err
		}
		chains, err := c.CreateChains(ctx, reps)
		if err != nil {
			c.Close(ctx)
			return rows, err
		}
		cl := c.StorageClient(storageclient.Config{})
		for _, size := range o.Sizes {
			for _, inflight := range o.InFlight {
				row, err := runCell(ctx, cl, chains[0], reps, size, inflight, o.Duration)
				if err != nil {
					cl.Close()
					c.Close(ctx)
					return rows, fmt.Errorf("replicas=%d size=%d inflight=%d: %w", reps, size, inflight, err)
				}
				rows = append(rows, row)
				if report != nil {
					report(row)
				}
			}
		}
		cl.Close()
		c.Close(ctx)
	}
	return rows, nil
}

func runCell(ctx context.Context, cl *storageclient.Client, chain uint32, reps, size, inflight int, d time.Duration) (Row, error) {
	row := Row{Replicas: reps, Size: size, InFlight: inflight}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 13)
	}
	// Each worker owns a chunk (writes to one chunk serialize at the head).
	id := func(w int) chunkengine.ChunkID {
		return chunkengine.ChunkID{Inode: uint64(1000 + size), Index: uint32(w)}
	}
	var err error
	row.Write, row.WriteCPU, err = measured(func() (transport.Result, error) {
		return transport.RunLoad(ctx, transport.LoadSpec{Size: size, InFlight: inflight, Duration: d}, func(ctx context.Context, w int) error {
			_, err := cl.Write(ctx, chain, id(w), chunkSize(size), 0, data)
			return err
		})
	})
	if err != nil {
		return row, err
	}
	if row.RawWrite, err = transport.RawTCPBaseline(ctx, transport.RawWrite, size, inflight, d); err != nil {
		return row, err
	}
	bufs := make([][]byte, inflight)
	for w := range bufs {
		bufs[w] = make([]byte, size)
	}
	row.Read, row.ReadCPU, err = measured(func() (transport.Result, error) {
		return transport.RunLoad(ctx, transport.LoadSpec{Size: size, InFlight: inflight, Duration: d}, func(ctx context.Context, w int) error {
			res, err := cl.Read(ctx, chain, id(w), 0, bufs[w], storageclient.ReadOptions{})
			if err == nil && res.N != size {
				err = fmt.Errorf("short read: %d of %d bytes", res.N, size)
			}
			return err
		})
	})
	if err != nil {
		return row, err
	}
	row.RawRead, row.RawReadCPU, err = measured(func() (transport.Result, error) {
		return transport.RawTCPBaseline(ctx, transport.RawRead, size, inflight, d)
	})
	return row, err
}

// SizeName renders 4096 as "4 KiB".
func SizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// Header is the Markdown table header matching Row.Markdown.
const Header = "| replicas | size | in flight | write MB/s | write p50 / p99 | raw TCP write MB/s | read MB/s | read p50 / p99 | raw TCP read MB/s | read / raw | CPU s/GB write | CPU s/GB read (raw TCP) |\n" +
	"|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

func us(d time.Duration) string {
	if d >= 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%d µs", d.Microseconds())
}

// Markdown renders the row as a table line.
func (r Row) Markdown() string {
	ratio := 0.0
	if r.RawRead.MBps > 0 {
		ratio = r.Read.MBps / r.RawRead.MBps
	}
	return fmt.Sprintf("| %d | %s | %d | %.0f | %s / %s | %.0f | %.0f | %s / %s | %.0f | %.0f%% | %.2f | %.2f (%.2f) |",
		r.Replicas, SizeName(r.Size), r.InFlight, r.Write.MBps, us(r.Write.P50), us(r.Write.P99), r.RawWrite.MBps,
		r.Read.MBps, us(r.Read.P50), us(r.Read.P99), r.RawRead.MBps, 100*ratio, r.WriteCPU, r.ReadCPU, r.RawReadCPU)
}
