package storagebench

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkStorage runs the same cells as `emberfs bench storage`
// (reduced: 128 KiB and 1 MiB, 1 and 4 in flight) and reports MB/s of the
// storage path and of raw TCP as custom metrics.
func BenchmarkStorage(b *testing.B) {
	for _, reps := range []int{1, 3} {
		for _, size := range []int{128 << 10, 1 << 20} {
			for _, inflight := range []int{1, 4} {
				b.Run(fmt.Sprintf("replicas=%d/size=%s/inflight=%d", reps, SizeName(size), inflight), func(b *testing.B) {
					var row Row
					for range b.N {
						rows, err := Run(context.Background(), Options{Sizes: []int{size}, InFlight: []int{inflight}, Replicas: []int{reps},
							Duration: 200 * time.Millisecond, Dir: b.TempDir()}, nil)
						if err != nil {
							b.Fatal(err)
						}
						row = rows[0]
					}
					b.ReportMetric(row.Write.MBps, "write-MB/s")
					b.ReportMetric(row.RawWrite.MBps, "rawtcp-write-MB/s")
					b.ReportMetric(row.Read.MBps, "read-MB/s")
					b.ReportMetric(row.RawRead.MBps, "rawtcp-read-MB/s")
				})
			}
		}
	}
}

// TestRowMarkdown checks the table rendering used in docs/storage.md.
func TestRowMarkdown(t *testing.T) {
	r := Row{Replicas: 3, Size: 1 << 20, InFlight: 4}
	r.Read.MBps, r.RawRead.MBps = 900, 1000
	r.Read.P50, r.Read.P99 = 500*time.Microsecond, 20*time.Millisecond
	r.WriteCPU, r.ReadCPU, r.RawReadCPU = 2.5, 0.75, 0.5
	got := r.Markdown()
	want := "| 3 | 1 MiB | 4 | 0 | 0 µs / 0 µs | 0 | 900 | 500 µs / 20.0 ms | 1000 | 90% | 2.50 | 0.75 (0.50) |"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
