// Command readstall reads a file over and over in 1 MiB blocks with O_DIRECT
// (so the page cache cannot hide a slow read) for --duration and reports
// the read latency before and after --mark: bench/fuse.sh kills a storage
// replica at the mark and reads how long the worst read stalled.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	path := flag.String("file", "", "file to read (at least one block)")
	duration := flag.Duration("duration", 10*time.Second, "how long to read")
	mark := flag.Duration("mark", 3*time.Second, "time of the disturbance, from the start")
	block := flag.Int("block", 1<<20, "read size")
	flag.Parse()
	if *path == "" {
		fmt.Fprintln(os.Stderr, "readstall: --file is required")
		os.Exit(2)
	}
	fd, err := syscall.Open(*path, syscall.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "readstall: open with O_DIRECT:", err)
		os.Exit(1)
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Size < int64(*block) {
		fmt.Fprintf(os.Stderr, "readstall: %s must hold at least %d bytes\n", *path, *block)
		os.Exit(1)
	}
	buf := alignedBuf(*block)
	blocks := st.Size / int64(*block)
	var before, after []time.Duration
	errors := 0
	start := time.Now()
	for i := int64(0); time.Since(start) < *duration; i++ {
		t0 := time.Now()
		_, err := syscall.Pread(fd, buf, (i%blocks)*int64(*block))
		d := time.Since(t0)
		if err != nil {
			errors++
		}
		if t0.Sub(start) < *mark {
			before = append(before, d)
		} else {
			after = append(after, d)
		}
	}
	fmt.Printf("reads before: %d (p50 %v, max %v); after: %d (p50 %v, max %v); errors %d\n",
		len(before), pct(before, 50), pct(before, 100), len(after), pct(after, 50), pct(after, 100), errors)
	fmt.Printf("STALL_MS=%.1f\n", float64(pct(after, 100))/1e6)
	if errors > 0 {
		os.Exit(1)
	}
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

// alignedBuf returns a 4 KiB-aligned buffer, as O_DIRECT requires.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&b[0]))%4096)
	return b[off%4096 : off%4096+n]
}
