package kvstore_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds cpu-µs/op: CPU time of the whole process (client and
// in-process servers) per operation. On a shared machine it moves much
// less than ns/op, which mostly measures waiting for a core.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

// BenchmarkKV measures put, get (one value into the caller's buffer) and
// a 16-key batch get on a 3-replica local cluster (one process, loopback).
// Run: go test -run XXX -bench KV -benchtime 200x ./storage/kvstore/
func BenchmarkKV(b *testing.B) {
	for _, size := range []int{4 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			k := startKV(b, 3, 3, 0)
			ns := k.createNamespace(b, kvformat.Descriptor{Name: "bench", ID: 30, CapacityBytes: 1 << 40, Evict: true})
			keys := make([]string, 16)
			for i := range keys {
				keys[i] = fmt.Sprintf("bench-%d", i)
				ns.put(b, keys[i], value(keys[i], size))
			}
			ctx := context.Background()
			b.Run("put", func(b *testing.B) {
				b.SetBytes(int64(size))
				defer reportCPU(b, cpuTime())
				for i := 0; i < b.N; i++ {
					ns.put(b, keys[i%len(keys)], value(keys[i%len(keys)], size))
				}
			})
			b.Run("get", func(b *testing.B) {
				buf := make([]byte, size)
				b.SetBytes(int64(size))
				defer reportCPU(b, cpuTime())
				for i := 0; i < b.N; i++ {
					if _, _, err := k.cl.KVGet(ctx, ns.ref(keys[i%len(keys)]), buf); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("exists64", func(b *testing.B) {
				// longest_prefix's call: 64 keys, one frame per target.
				refs := make([]storageclient.KVRef, 64)
				for i := range refs {
					key := fmt.Sprintf("chain-%d", i)
					if i < 16 {
						key = keys[i]
					}
					if i == 16 {
						for j := 16; j < 64; j++ {
							k := fmt.Sprintf("chain-%d", j)
							ns.put(b, k, value(k, 64))
						}
					}
					refs[i] = ns.ref(key)
				}
				defer reportCPU(b, cpuTime())
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					ex, err := k.cl.KVExists(ctx, refs)
					if err != nil || !ex[63] {
						b.Fatal(ex, err)
					}
				}
			})
			b.Run("batch16", func(b *testing.B) {
				refs := make([]storageclient.KVRef, len(keys))
				bufs := make([][]byte, len(keys))
				for i := range keys {
					refs[i], bufs[i] = ns.ref(keys[i]), make([]byte, size)
				}
				b.SetBytes(int64(size * len(keys)))
				defer reportCPU(b, cpuTime())
				for i := 0; i < b.N; i++ {
					for _, r := range k.cl.KVGetBatch(ctx, refs, bufs) {
						if r.Err != nil {
							b.Fatal(r.Err)
						}
					}
				}
			})
		})
	}
}
