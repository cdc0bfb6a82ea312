package kvtest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberfs/emberfs/service/kv"
)

// benchValue is a metadata-sized value (an inode is a few hundred bytes).
var benchValue = bytes.Repeat([]byte("v"), 256)

const scanKeysCount = 10_000

// RunBenchmarks measures an engine: single-key write transactions with 1, 8
// and 64 concurrent writers, point reads, and scans of 10k keys. Each
// reports transactions per second (txn/s) so that engines and machines can
// be compared; nothing is asserted about speed. open is called once per
// sub-benchmark and must return an empty engine; RunBenchmarks closes it.
func RunBenchmarks(b *testing.B, open func(b *testing.B) kv.Engine) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("PointWrite/writers=%d", writers), func(b *testing.B) {
			e := openBench(b, open)
			var next atomic.Int64
			runConcurrent(b, writers, func(int) error {
				i := next.Add(1)
				return e.Transact(context.Background(), func(tx kv.Tx) error {
					return tx.Set(fmt.Appendf(nil, "w/%012d", i), benchValue)
				})
			})
		})
	}
	for _, readers := range []int{1, 8} {
		b.Run(fmt.Sprintf("PointRead/readers=%d", readers), func(b *testing.B) {
			e := openBench(b, open)
			preload(b, e, scanKeysCount)
			runConcurrent(b, readers, func(i int) error {
				key := fmt.Appendf(nil, "s/%08d", (i*7919)%scanKeysCount)
				return e.ReadTransact(context.Background(), func(tx kv.ReadTx) error {
					_, found, err := tx.Get(key)
					if err == nil && !found {
						err = fmt.Errorf("preloaded key %q missing", key)
					}
					return err
				})
			})
		})
	}
	b.Run("RangeScan/keys=10000", func(b *testing.B) {
		e := openBench(b, open)
		preload(b, e, scanKeysCount)
		runConcurrent(b, 1, func(int) error {
			return e.ReadTransact(context.Background(), func(tx kv.ReadTx) error {
				kvs, err := tx.GetRange([]byte("s/"), []byte("s0"), kv.RangeOptions{})
				if err == nil && len(kvs) != scanKeysCount {
					err = fmt.Errorf("scan returned %d keys, want %d", len(kvs), scanKeysCount)
				}
				return err
			})
		})
		b.ReportMetric(float64(b.N*scanKeysCount)/b.Elapsed().Seconds(), "keys/s")
	})
}

func openBench(b *testing.B, open func(b *testing.B) kv.Engine) kv.Engine {
	b.Helper()
	e := open(b)
	b.Cleanup(func() {
		if err := e.Close(); err != nil {
			b.Errorf("Close: %v", err)
		}
	})
	return e
}

// preload writes n keys s/00000000... in transactions of 1000 keys.
func preload(b *testing.B, e kv.Engine, n int) {
	b.Helper()
	for start := 0; start < n; start += 1000 {
		err := e.Transact(context.Background(), func(tx kv.Tx) error {
			for i := start; i < min(start+1000, n); i++ {
				if err := tx.Set(fmt.Appendf(nil, "s/%08d", i), benchValue); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatalf("preload: %v", err)
		}
	}
}

// runConcurrent runs op b.N times spread over workers goroutines and
// reports txn/s.
func runConcurrent(b *testing.B, workers int, op func(i int) error) {
	b.Helper()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	b.ResetTimer()
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := op(i); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "txn/s")
}
