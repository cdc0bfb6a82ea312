// Command mdtest measures metadata ops/s on any directory (an EmberFS mount,
// a local disk), like a small mdtest: each of --threads workers creates
// --files empty files (open O_CREAT|O_EXCL, close), then stats them, then
// unlinks them; each phase is timed on its own. Workers use a directory of
// their own (mdtest -u) unless --shared puts every file in one directory.
//
//	go run ./bench/mdtest --dir /mnt/emberfs/bench --threads 8 --files 2000
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

func main() {
	dir := flag.String("dir", "", "directory to work in (created; must not hold earlier mdtest files)")
	threads := flag.Int("threads", 4, "concurrent workers")
	files := flag.Int("files", 1000, "files per worker")
	shared := flag.Bool("shared", false, "all workers in one directory (default: one directory each)")
	label := flag.String("label", "", "name of this run in the output table")
	keep := flag.Bool("keep", false, "create and stat only: keep the files (for a listing test afterwards); unlink/s prints as -")
	flag.Parse()
	if *dir == "" || *threads <= 0 || *files <= 0 {
		fmt.Fprintln(os.Stderr, "mdtest: --dir is required; --threads and --files must be positive")
		os.Exit(2)
	}
	if *label == "" {
		*label = *dir
	}
	res, err := run(*dir, *threads, *files, *shared, *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mdtest:", err)
		os.Exit(1)
	}
	unlink := fmt.Sprintf("%.0f", res[2])
	if *keep {
		unlink = "-"
	}
	fmt.Printf("| %s | %d | %.0f | %.0f | %s |\n", *label, *threads, res[0], res[1], unlink)
}

// run returns create, stat and unlink ops/s.
func run(dir string, threads, files int, shared, keep bool) ([3]float64, error) {
	var res [3]float64
	workDir := func(w int) string {
		if shared {
			return filepath.Join(dir, "shared")
		}
		return filepath.Join(dir, fmt.Sprintf("w%d", w))
	}
	for w := 0; w < threads; w++ {
		if err := os.MkdirAll(workDir(w), 0o755); err != nil {
			return res, err
		}
	}
	phases := []func(p string) error{
		func(p string) error {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		},
		func(p string) error { _, err := os.Stat(p); return err },
		os.Remove,
	}
	if keep {
		phases = phases[:2]
	}
	for i, op := range phases {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, threads)
		for w := 0; w < threads; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				d := workDir(w)
				for j := 0; j < files; j++ {
					if err := op(filepath.Join(d, fmt.Sprintf("f.%d.%d", w, j))); err != nil {
						errs <- err
						return
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return res, err
		}
		res[i] = float64(threads*files) / time.Since(start).Seconds()
		fmt.Fprintf(os.Stderr, "mdtest %s: %s %.0f ops/s\n", dir, []string{"create", "stat", "unlink"}[i], res[i])
	}
	if !keep {
		for w := 0; w < threads; w++ {
			os.Remove(workDir(w))
		}
	}
	return res, nil
}
