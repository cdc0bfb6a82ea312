package chunkengine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// The benchmarks print engine throughput beside plain local-file I/O of
// the same sizes in the same run:
//
//	Write/engine-apply/SIZE   Apply (one-phase) appends: data fdatasync + metadata fdatasync
//	Write/engine-2phase/SIZE  Prepare + Commit: data fdatasync + two metadata fdatasyncs
//	Write/plain/SIZE          os.File WriteAt + Fsync appending to 4 MiB files
//	Read/engine/SIZE          ReadAt; a whole-chunk check vouches for VerifyInterval
//	Read/engine-strict/SIZE   ReadAt; whole chunk checked on every read
//	Read/plain/SIZE           os.File ReadAt of the same files
//
// go test -run '^$' -bench . -benchtime 2s ./storage/chunkengine/

var benchSizes = []struct {
	name string
	n    int
}{{"4KiB", 4 << 10}, {"128KiB", 128 << 10}, {"1MiB", 1 << 20}, {"4MiB", 4 << 20}}

const benchChunk = 4 << 20

func BenchmarkWrite(b *testing.B) {
	for _, sz := range benchSizes {
		data := randBytes(rand.New(rand.NewPCG(1, 1)), sz.n)
		for _, twoPhase := range []bool{false, true} {
			name := "engine-apply"
			if twoPhase {
				name = "engine-2phase"
			}
			b.Run(name+"/"+sz.name, func(b *testing.B) {
				e := openT(b, b.TempDir(), Options{})
				b.SetBytes(int64(sz.n))
				var idx uint32
				var off int
				for b.Loop() {
					if off+sz.n > benchChunk {
						idx, off = idx+1, 0
					}
					u := Update{Kind: UpdateWrite, Offset: uint32(off), Data: data, ChunkSize: benchChunk}
					id := ChunkID{1, idx}
					var err error
					if twoPhase {
						var v uint64
						if v, err = e.Prepare(id, u); err == nil {
							err = e.Commit(id, v, 0)
						}
					} else {
						_, err = e.Apply(id, u)
					}
					if err != nil {
						b.Fatal(err)
					}
					off += sz.n
				}
			})
		}
		b.Run("plain/"+sz.name, func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(int64(sz.n))
			var f *os.File
			off, files := benchChunk, 0
			for b.Loop() {
				if off+sz.n > benchChunk {
					if f != nil {
						f.Close()
					}
					var err error
					if f, err = os.Create(filepath.Join(dir, fmt.Sprint(files))); err != nil {
						b.Fatal(err)
					}
					files, off = files+1, 0
				}
				if _, err := f.WriteAt(data, int64(off)); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				off += sz.n
			}
			f.Close()
		})
	}
}

func BenchmarkRead(b *testing.B) {
	const chunks = 16
	dir := b.TempDir()
	r := rand.New(rand.NewPCG(2, 2))
	e := openT(b, dir, Options{NoSync: true})
	for i := uint32(0); i < chunks; i++ {
		mustApply(b, e, ChunkID{2, i}, Update{Kind: UpdateWrite, Data: randBytes(r, benchChunk), ChunkSize: benchChunk})
	}
	paths := make([]string, chunks)
	for i := range paths {
		paths[i] = e.DataPath(ChunkID{2, uint32(i)})
	}
	e.Close()
	for _, sz := range benchSizes {
		for _, strict := range []bool{false, true} {
			name := "engine"
			opts := Options{}
			if strict {
				name, opts.VerifyInterval = "engine-strict", -1
			}
			if strict && sz.n < 128<<10 {
				continue // each 4 KiB read would check 4 MiB; shown from 128 KiB up
			}
			b.Run(name+"/"+sz.name, func(b *testing.B) {
				e := openT(b, dir, opts)
				buf := make([]byte, sz.n)
				b.SetBytes(int64(sz.n))
				i := 0
				for b.Loop() {
					id := ChunkID{2, uint32(i % chunks)}
					off := uint32((i / chunks * sz.n) % benchChunk)
					if n, _, err := e.ReadAt(id, buf, off, false); err != nil || n != sz.n {
						b.Fatalf("read %d: %d %v", i, n, err)
					}
					i++
				}
			})
		}
		b.Run("plain/"+sz.name, func(b *testing.B) {
			files := make([]*os.File, chunks)
			for i, p := range paths {
				f, err := os.Open(p)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				files[i] = f
			}
			buf := make([]byte, sz.n)
			b.SetBytes(int64(sz.n))
			i := 0
			for b.Loop() {
				off := int64((i / chunks * sz.n) % benchChunk)
				if _, err := files[i%chunks].ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkWriteChunks writes whole 4 MiB chunks, each to a chunk not
// written before (what a sequential file writer sends), from exactly 1
// and 4 goroutines at once (not b.RunParallel, whose SetParallelism(n)
// runs n x GOMAXPROCS goroutines):
//
//	engine-direct    Apply, aligned data written with O_DIRECT (the default)
//	engine-buffered  Apply with Options.BufferedIO
//	plain            create a file, WriteAt, fdatasync, close (page cache)
//
// go test -run '^$' -bench WriteChunks -benchtime 64x ./storage/chunkengine/
func BenchmarkWriteChunks(b *testing.B) {
	data := randBytes(rand.New(rand.NewPCG(3, 3)), benchChunk)
	for _, writers := range []int{1, 4} {
		for _, mode := range []string{"engine-direct", "engine-buffered", "plain"} {
			b.Run(fmt.Sprintf("%s/writers=%d", mode, writers), func(b *testing.B) {
				dir := b.TempDir()
				var e *Engine
				if mode != "plain" {
					e = openT(b, dir, Options{BufferedIO: mode == "engine-buffered"})
				}
				b.SetBytes(benchChunk)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							if err := writeBenchChunk(e, dir, uint32(i), data); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			})
		}
	}
}

// writeBenchChunk writes chunk i through e, or as a plain file in dir
// when e is nil.
func writeBenchChunk(e *Engine, dir string, i uint32, data []byte) error {
	if e != nil {
		_, err := e.Apply(ChunkID{3, i}, Update{Kind: UpdateWrite, Data: data, ChunkSize: benchChunk})
		return err
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = syscall.Fdatasync(int(f.Fd()))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
