package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/tests/testproc"
)

// nemesis injects one fault at a time, each held for a while and then
// healed (the process restarted or continued, the disk freed), and waits
// for the cluster to serve on every target again before the next, so no
// chain ever loses more than one replica to the nemesis at once. Chunk
// files it damages stay damaged until the chain notices and repairs them.
type nemesis struct {
	t      *testing.T
	c      *cluster
	rng    *rand.Rand
	h      *history
	counts map[string]int
	log    []string
	// damaged holds the chunks ("inode.index") whose file on some
	// replica the nemesis damaged.
	damaged map[string]bool
}

// faults are the kinds the nemesis picks from, with weights.
var faults = []struct {
	name   string
	weight int
}{
	{"kill-storage", 4}, {"pause-storage", 3}, {"kill-meta", 2}, {"pause-meta", 1},
	{"kill-mgmtd", 2}, {"pause-mgmtd", 1}, {"kill-etcd", 1}, {"corrupt-chunk", 3}, {"delete-chunk", 1}, {"fill-disk", 2},
}

func (n *nemesis) pick() string {
	total := 0
	for _, f := range faults {
		total += f.weight
	}
	r := n.rng.IntN(total)
	for _, f := range faults {
		if r -= f.weight; r < 0 {
			return f.name
		}
	}
	panic("unreachable")
}

func (n *nemesis) sleep(min, spread time.Duration) time.Duration {
	d := min + time.Duration(n.rng.Int64N(int64(spread)+1))
	time.Sleep(d)
	return d
}

func (n *nemesis) note(format string, args ...any) {
	n.log = append(n.log, fmt.Sprintf("%7.3fs ", time.Since(n.h.start).Seconds())+fmt.Sprintf(format, args...))
}

// run injects faults until ctx ends.
func (n *nemesis) run(ctx context.Context) {
	for ctx.Err() == nil {
		n.checkAlive()
		kind := n.pick()
		n.inject(kind)
		n.counts[kind]++
		wctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		if err := n.c.waitAllServing(wctx); err != nil {
			n.h.violate("after %s: %v", kind, err)
			n.t.Errorf("after %s: %v", kind, err)
		}
		cancel()
		n.sleep(200*time.Millisecond, 800*time.Millisecond)
	}
}

// checkAlive restarts (and reports) any process that died on its own.
func (n *nemesis) checkAlive() {
	for _, r := range slices.Concat(n.c.mgmtd, n.c.meta, n.c.storage) {
		if !r.Alive() {
			out := testproc.Tail(r.Proc().Output(), 4000)
			n.t.Errorf("%s exited without being killed (%v):\n%s", r.Name, r.Proc().Err(), out)
			n.note("%s found dead, restarted", r.Name)
			r.Start()
		}
	}
}

func (n *nemesis) inject(kind string) {
	c := n.c
	switch kind {
	case "kill-storage", "kill-meta", "kill-mgmtd":
		r := n.role(kind)
		r.Kill()
		d := n.sleep(0, 1500*time.Millisecond)
		n.note("SIGKILL %s, restarted after %v", r.Name, d.Round(time.Millisecond))
		r.Start()
	case "pause-storage", "pause-meta", "pause-mgmtd":
		r := n.role(kind)
		r.Signal(syscall.SIGSTOP)
		// Longer than the failure timeout: leases run out, mgmtd
		// reroutes, and the process wakes up to a changed cluster.
		d := n.sleep(failureTimeout+failureTimeout/2, failureTimeout)
		r.Signal(syscall.SIGCONT)
		n.note("SIGSTOP %s for %v", r.Name, d.Round(time.Millisecond))
	case "kill-etcd":
		i := n.rng.IntN(3)
		c.etcd.Kill(i)
		d := n.sleep(0, 1500*time.Millisecond)
		n.note("SIGKILL etcd member %d, restarted after %v", i, d.Round(time.Millisecond))
		c.etcd.Restart(i)
	case "corrupt-chunk", "delete-chunk":
		node := n.rng.IntN(len(c.storage))
		files := c.storageFiles(node)
		if len(files) == 0 {
			n.note("%s: storage%d has no chunk files yet", kind, node+1)
			return
		}
		// At most one damaged replica per chunk in a run: damage is only
		// repaired when something reads or writes that chunk, and three
		// damaged replicas would be a loss no replication can prevent.
		f := ""
		for try := 0; try < 20 && f == ""; try++ {
			cand := files[n.rng.IntN(len(files))]
			if chunk := chunkOfFile(cand); !n.damaged[chunk] {
				n.damaged[chunk] = true
				f = cand
			}
		}
		if f == "" {
			n.note("%s: storage%d: no chunk file left that is undamaged elsewhere", kind, node+1)
			return
		}
		if kind == "delete-chunk" {
			err := os.Remove(f)
			n.note("deleted chunk file %s of storage%d: %v", shortPath(c.dir, f), node+1, err)
			return
		}
		n.note("flipped a byte in %s of storage%d: %v", shortPath(c.dir, f), node+1, flipByte(f, n.rng))
	case "fill-disk":
		node := n.rng.IntN(len(c.storage))
		filler := filepath.Join(c.tmpfs[node], "filler")
		written, err := fill(filler)
		d := n.sleep(time.Second, 2*time.Second)
		rmErr := os.Remove(filler)
		n.note("filled storage%d's tmpfs target (%d MiB, %v), freed after %v: %v", node+1, written>>20, err, d.Round(time.Millisecond), rmErr)
	default:
		panic(kind)
	}
}

func (n *nemesis) role(kind string) *testproc.Role {
	var rs []*testproc.Role
	switch {
	case strings.HasSuffix(kind, "storage"):
		rs = n.c.storage
	case strings.HasSuffix(kind, "meta"):
		rs = n.c.meta
	default:
		rs = n.c.mgmtd
	}
	return rs[n.rng.IntN(len(rs))]
}

func shortPath(base, p string) string {
	if r, err := filepath.Rel(base, p); err == nil {
		return r
	}
	return p
}

// flipByte inverts one byte of the file at a random offset.
func flipByte(path string, rng *rand.Rand) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		return errors.New("empty file")
	}
	off := rng.Int64N(st.Size())
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return err
	}
	b[0] ^= 0xff
	_, err = f.WriteAt(b, off)
	return err
}

// fill writes path until the file system is full (ENOSPC).
func fill(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			if len(buf) > 4096 {
				buf = buf[:4096] // fill the last pages too
				continue
			}
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// chunkOfFile names the chunk a data file holds: its file name is
// <inode:016x>.<index:08x>.<gen:016x> (docs/chunk-engine.md).
func chunkOfFile(path string) string {
	parts := strings.Split(filepath.Base(path), ".")
	if len(parts) != 3 {
		return path
	}
	return parts[0] + "." + parts[1]
}
