package meta

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// Benchmarks: ops/s for create, stat, readdir (10k-entry directory),
// unlink and rename at 1, 16 and 64 concurrent clients, in-process and over
// gRPC (loopback). Each reports "ops/s"; run with
//
//	go test -run '^$' -bench . -benchtime 2000x ./service/meta/
var benchClients = []int{1, 16, 64}

type benchTarget struct {
	name string
	mk   func(b *testing.B, s *Server) FS
}

var benchTargets = []benchTarget{
	{"inproc", func(_ *testing.B, s *Server) FS { return s }},
	// "grpc" (over loopback) is added by grpc_test.go, an external test
	// package, since the gRPC client (metaclient) imports this package.
}

// runClients splits b.N operations over n goroutines and reports ops/s.
func runClients(b *testing.B, n int, op func(client, i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	b.ResetTimer()
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := op(c, i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if err := firstErr.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func benchEach(b *testing.B, setup func(b *testing.B, fs FS), op func(fs FS, client, i int) error) {
	for _, tg := range benchTargets {
		for _, n := range benchClients {
			b.Run(fmt.Sprintf("%s/clients=%d", tg.name, n), func(b *testing.B) {
				e := newEnv(b)
				fs := tg.mk(b, e.s)
				noErr(b, ignore(fs.Mkdir(ctx, Root, P("/bench"), 0o777, false)))
				if setup != nil {
					setup(b, fs)
				}
				runClients(b, n, func(c, i int) error { return op(fs, c, i) })
			})
		}
	}
}

func makeFiles(b *testing.B, fs FS, n int) {
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				noErr(b, ignore(fs.Create(ctx, Root, P(fmt.Sprintf("/bench/f%d", i)), CreateOptions{Mode: 0o644})))
			}
		}()
	}
	wg.Wait()
}

func BenchmarkCreate(b *testing.B) {
	benchEach(b, nil, func(fs FS, _, i int) error {
		return ignore(fs.Create(ctx, Root, P(fmt.Sprintf("/bench/f%d", i)), CreateOptions{Mode: 0o644, Exclusive: true}))
	})
}

func BenchmarkStat(b *testing.B) {
	benchEach(b, func(b *testing.B, fs FS) { makeFiles(b, fs, 1000) }, func(fs FS, _, i int) error {
		return ignore(fs.Stat(ctx, Root, P(fmt.Sprintf("/bench/f%d", i%1000))))
	})
}

// One op = listing the whole 10k-entry directory in pages of 1024.
func BenchmarkReadDir10k(b *testing.B) {
	benchEach(b, func(b *testing.B, fs FS) { makeFiles(b, fs, 10_000) }, func(fs FS, _, _ int) error {
		cursor, total := "", 0
		for {
			page, err := fs.ReadDir(ctx, Root, P("/bench"), ReadDirOptions{Cursor: cursor, Limit: 1024})
			if err != nil {
				return err
			}
			total += len(page.Entries)
			if !page.More {
				break
			}
			cursor = page.Entries[len(page.Entries)-1].Name
		}
		if total != 10_000 {
			return fmt.Errorf("listed %d entries", total)
		}
		return nil
	})
}

func BenchmarkUnlink(b *testing.B) {
	for _, tg := range benchTargets {
		for _, n := range benchClients {
			b.Run(fmt.Sprintf("%s/clients=%d", tg.name, n), func(b *testing.B) {
				e := newEnv(b)
				fs := tg.mk(b, e.s)
				noErr(b, ignore(fs.Mkdir(ctx, Root, P("/bench"), 0o777, false)))
				makeFiles(b, fs, b.N)
				runClients(b, n, func(_, i int) error { return fs.Unlink(ctx, Root, P(fmt.Sprintf("/bench/f%d", i))) })
			})
		}
	}
}

func BenchmarkRename(b *testing.B) {
	for _, tg := range benchTargets {
		for _, n := range benchClients {
			b.Run(fmt.Sprintf("%s/clients=%d", tg.name, n), func(b *testing.B) {
				e := newEnv(b)
				fs := tg.mk(b, e.s)
				noErr(b, ignore(fs.Mkdir(ctx, Root, P("/bench"), 0o777, false)))
				noErr(b, ignore(fs.Mkdir(ctx, Root, P("/bench2"), 0o777, false)))
				makeFiles(b, fs, b.N)
				runClients(b, n, func(_, i int) error {
					return fs.Rename(ctx, Root, P(fmt.Sprintf("/bench/f%d", i)), P(fmt.Sprintf("/bench2/g%d", i)), 0)
				})
			})
		}
	}
}
