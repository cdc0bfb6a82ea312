package kvstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/storageclient"
)

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
				for i := 0; i < b.N; i++ {
					ns.put(b, keys[i%len(keys)], value(keys[i%len(keys)], size))
				}
			})
			b.Run("get", func(b *testing.B) {
				buf := make([]byte, size)
				b.SetBytes(int64(size))
				for i := 0; i < b.N; i++ {
					if _, _, err := k.cl.KVGet(ctx, ns.ref(keys[i%len(keys)]), buf); err != nil {
						b.Fatal(err)
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
