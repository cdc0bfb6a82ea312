// Package chaos runs an EmberFS cluster as separate processes (three etcd
// members, two mgmtd, two meta, four storage services with fsync on), a
// workload of native
// clients writing self-describing files, and a nemesis that kills, pauses,
// corrupts and fills; a checker then verifies with porcupine that every
// read returned what a linearizable file system could have returned, that
// every acknowledged write reads back, that fsck is clean and that the
// cluster serves on every target again. docs/reliability.md tells how to
// run it longer (CHAOS_DURATION) and what it found.
package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/tests/testproc"
)

// TestMain builds the emberfs binary the cluster runs (emberfsBin, in
// bin_test.go); only the tagged chaos run needs it.
// emberfsBin is the emberfs binary the chaos cluster runs, built by
// TestMain.
var emberfsBin string

func TestMain(m *testing.M) { testproc.Main(m, &emberfsBin) }

// settings reads CHAOS_DURATION (how long the nemesis and the workload
// run; default 60s) and CHAOS_SEED (default: random, printed).
func settings(t *testing.T) (time.Duration, uint64) {
	d := 60 * time.Second
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			t.Fatalf("CHAOS_DURATION=%q: want a positive Go duration such as 30m", s)
		}
	}
	seed := rand.Uint64() >> 1
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CHAOS_SEED=%q: want an unsigned integer", s)
		}
	}
	return d, seed
}

// workers clients run the workload; the last fuseWorkers of them through
// a FUSE mount, the others with the native Go client.
const workers, fuseWorkers = 4, 1

func TestChaos(t *testing.T) {
	duration, seed := settings(t)
	t.Logf("chaos: seed %d (CHAOS_SEED=%d reproduces the choices, not the timing), duration %v", seed, seed, duration)
	fmt.Fprintf(os.Stderr, "chaos: seed %d, duration %v\n", seed, duration)
	setup, cancelSetup := context.WithTimeout(context.Background(), 3*testproc.Eventually)
	defer cancelSetup()
	c := startCluster(t, setup)

	h := newHistory()
	st := &stats{}
	ws := make([]*worker, workers)
	var mnt fsys
	for i := range ws {
		cl, err := newClient(setup, c.mgmtdAdr, fmt.Sprintf("chaos-w%d", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		if _, err := cl.Mkdir(setup, meta.Root, at(fmt.Sprintf("/w%d", i)), 0o755, false); err != nil {
			t.Fatal(err)
		}
		var fs fsys = native{cl}
		diag := cl
		if i >= workers-fuseWorkers {
			// The last workers go through a FUSE mount (one
			// `emberfs mount` process they share).
			if mnt == nil {
				mnt = c.mount(t)
			}
			fs = mnt
			if diag, err = newClient(setup, c.mgmtdAdr, fmt.Sprintf("chaos-w%d-probe", i)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { diag.Close() })
		}
		ws[i] = &worker{id: i, fs: fs, h: h, rng: rand.New(rand.NewPCG(seed, uint64(i))), names: map[string]*file{}, all: ws, stats: st, diag: diag}
	}

	run, stopRun := context.WithTimeout(context.Background(), duration)
	defer stopRun()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for run.Err() == nil {
				w.step()
			}
		}()
	}
	nem := &nemesis{t: t, c: c, rng: rand.New(rand.NewPCG(seed, 1<<32)), h: h, counts: map[string]int{}, damaged: map[string]bool{}}
	nem.run(run)
	wg.Wait()
	t.Logf("faults:\n  %s", strings.Join(nem.log, "\n  "))

	// Every process runs again and every target serves.
	nem.checkAlive()
	final, cancelFinal := context.WithTimeout(context.Background(), 3*testproc.Eventually)
	defer cancelFinal()
	if err := c.waitAllServing(final); err != nil {
		t.Fatal(err)
	}

	// Every acknowledged write reads back: each worker's names are exactly
	// its model's, and a fresh client reads every file (the reads join the
	// history, after everything else).
	reader, err := newClient(final, c.mgmtdAdr, "chaos-final")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	files, latent := 0, 0
	for _, w := range ws {
		ents, err := reader.ReadDir(final, meta.Root, at(fmt.Sprintf("/w%d", w.id)), false)
		if err != nil {
			t.Fatalf("final readdir /w%d: %v", w.id, err)
		}
		var got, want []string
		for _, e := range ents {
			got = append(got, fmt.Sprintf("/w%d/%s", w.id, e.Name))
		}
		for p := range w.names {
			want = append(want, p)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			h.violate("worker %d: names %v, the acknowledged operations leave %v", w.id, got, want)
		}
		r := &worker{id: 100 + w.id, fs: native{reader}, h: h, stats: st}
		for _, p := range want {
			f := w.names[p]
			fid, ok := r.read(p, "final read")
			switch {
			case !ok:
				h.violate("final read of %s (file %d) failed", p, f.fid)
			case fid != 0 && fid != f.fid:
				h.violate("final read of %s: file %d, the model has file %d", p, fid, f.fid)
			case fid == 0 && f.fid != 0:
				// Empty or zero block 0: legal only if no write to block 0
				// was ever acknowledged; porcupine decides, so record it.
				h.add(r.id, regOp{key: regKey{f.fid, 0}, what: "final read " + p}, 0, h.now(), h.now())
			}
			files++
			// Every replica of every chunk holds the same bytes.
			diffs, err := auditReplicas(final, reader, p, &latent)
			if err != nil {
				h.violate("replica audit of %s: %v", p, err)
			}
			for _, d := range diffs {
				h.violate("%s", d)
			}
		}
	}

	violations, keys, undecided := h.check(2 * time.Minute)

	// fsck checks the namespace and every target's chunks.
	out, ferr := c.fsck(final)
	if ferr != nil || !strings.Contains(out, "clean") {
		violations = append(violations, fmt.Sprintf("fsck: %v\n%s", ferr, out))
	}

	var kinds []string
	total := 0
	for _, f := range faults {
		kinds = append(kinds, fmt.Sprintf("%s %d", f.name, nem.counts[f.name]))
		total += nem.counts[f.name]
	}
	t.Logf("chaos summary: seed %d, %v; %s; %d faults injected (%s); %d final files read back, every chunk compared across its replicas (%d latent corrupt copies found); %d block histories checked by porcupine (%d undecided); fsck: %s; violations = %d",
		seed, duration, st, total, strings.Join(kinds, ", "), files, latent, keys, undecided, strings.TrimSpace(lastLine(out)), len(violations))
	var per []string
	for _, w := range ws {
		per = append(per, fmt.Sprintf("w%d %s %d", w.id, w.fs.kind(), w.acked))
		if w.acked == 0 {
			t.Errorf("worker %d (%s) had no operation acknowledged", w.id, w.fs.kind())
		}
	}
	t.Logf("acknowledged per worker: %s", strings.Join(per, ", "))
	if total == 0 || st.ops.Load() == 0 || st.reads.Load() == 0 {
		t.Errorf("the run proved nothing: %d faults, %d acknowledged ops, %d reads", total, st.ops.Load(), st.reads.Load())
	}
	if len(violations) > 0 {
		t.Errorf("seed %d: %d violation(s):\n%s", seed, len(violations), strings.Join(violations, "\n"))
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
