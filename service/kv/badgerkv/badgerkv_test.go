package badgerkv_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/badgerkv"
	"github.com/emberfs/emberfs/service/kv/kvtest"
)

// crashChildEnv switches the test binary into the crash-test child: it
// commits transactions into the directory the variable names and prints
// each acknowledged one, until its parent kills it.
const crashChildEnv = "EMBERFS_KV_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(runCrashChild(dir, os.Getenv("EMBERFS_KV_CRASH_ROUND")))
	}
	os.Exit(m.Run())
}

// testOptions keep the retry bound small so that RetryBound runs quickly;
// the load tests retry at the caller when they hit it.
func testOptions(t testing.TB) badgerkv.Options {
	return badgerkv.Options{MaxRetries: 20, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func openDisk(t testing.TB) kv.Engine {
	e, err := badgerkv.Open(t.TempDir(), testOptions(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if e.Name() != "badger" {
		t.Fatalf("Name() = %q, want badger", e.Name())
	}
	return e
}

func openMemory(t testing.TB) kv.Engine {
	e, err := badgerkv.OpenMemory(testOptions(t))
	if err != nil {
		t.Fatalf("open memory: %v", err)
	}
	if e.Name() != "memory" {
		t.Fatalf("Name() = %q, want memory", e.Name())
	}
	return e
}

func TestConformanceBadger(t *testing.T) {
	kvtest.RunConformance(t, func(t *testing.T) kv.Engine { return openDisk(t) })
}

func TestConformanceMemory(t *testing.T) {
	kvtest.RunConformance(t, func(t *testing.T) kv.Engine { return openMemory(t) })
}

// TestPhantomInsertNotDetected pins the documented limit of this engine
// (docs/kv.md): an insert into a scanned range that the scan did not return
// does not conflict. If this starts failing, the engine has learnt range
// conflicts: update the docs and run kvtest.RunRangeConflictConformance.
func TestPhantomInsertNotDetected(t *testing.T) {
	e := openMemory(t)
	defer e.Close()
	ctx := t.Context()
	attempts := 0
	err := e.Transact(ctx, func(tx kv.Tx) error {
		attempts++
		if _, err := tx.GetRange([]byte("r/"), []byte("r0"), kv.RangeOptions{}); err != nil {
			return err
		}
		if attempts == 1 {
			if err := e.Transact(context.Background(), func(w kv.Tx) error { return w.Set([]byte("r/new"), []byte("x")) }); err != nil {
				return err
			}
		}
		return tx.Set([]byte("count"), []byte("0"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if attempts != 1 {
		t.Fatalf("phantom insert caused %d attempts; docs/kv.md says badger does not detect phantoms", attempts)
	}
}

func TestOpenEmptyDir(t *testing.T) {
	if _, err := badgerkv.Open("", badgerkv.Options{}); err == nil {
		t.Fatal("Open(\"\") succeeded, want an error")
	}
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	e, err := badgerkv.Open(dir, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	set := func(e kv.Engine, k, v string) {
		t.Helper()
		if err := e.Transact(t.Context(), func(tx kv.Tx) error { return tx.Set([]byte(k), []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	set(e, "a", "1")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = badgerkv.Open(dir, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// Versions continue after the reopen: a new commit is visible and wins.
	set(e, "a", "2")
	err = e.ReadTransact(t.Context(), func(tx kv.ReadTx) error {
		v, found, err := tx.Get([]byte("a"))
		if err != nil || !found || string(v) != "2" {
			return fmt.Errorf("after reopen and rewrite: a = %q found=%v err=%v, want 2", v, found, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func BenchmarkBadger(b *testing.B) {
	kvtest.RunBenchmarks(b, func(b *testing.B) kv.Engine {
		e, err := badgerkv.Open(b.TempDir(), badgerkv.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return e
	})
}

func BenchmarkMemory(b *testing.B) {
	kvtest.RunBenchmarks(b, func(b *testing.B) kv.Engine {
		e, err := badgerkv.OpenMemory(badgerkv.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return e
	})
}

// Crash test. The child runs crashWriters goroutines; writer w commits
// transaction i as crashKeysPerTxn keys "c/<round>/<w>/<i>/<j>" = "<i>" in
// one transaction, and prints "ack <w> <i>" only after Transact returned
// nil. Each writer waits for its previous commit, so per writer at most one
// transaction (the one after its last ack) is in doubt at the kill.
const (
	crashWriters    = 4
	crashKeysPerTxn = 3
	crashRounds     = 4
)

func crashKey(round string, w, i, j int) []byte {
	return fmt.Appendf(nil, "c/%s/%d/%06d/%d", round, w, i, j)
}

func runCrashChild(dir, round string) int {
	e, err := badgerkv.Open(dir, badgerkv.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child: open:", err)
		return 2
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				err := e.Transact(context.Background(), func(tx kv.Tx) error {
					for j := range crashKeysPerTxn {
						if err := tx.Set(crashKey(round, w, i, j), []byte(strconv.Itoa(i))); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					fmt.Fprintln(os.Stderr, "crash child: commit:", err)
					os.Exit(3)
				}
				out.Lock()
				// Unbuffered write: once it returns, the parent can read it.
				fmt.Fprintf(os.Stdout, "ack %d %d\n", w, i)
				out.Unlock()
			}
		}()
	}
	wg.Wait()
	return 0
}

// TestCrashDurability kills a committing child process with SIGKILL at a
// random moment and checks, after reopening, that every acknowledged
// transaction is there, whole, and that in-doubt transactions are all or
// nothing. Each round reopens the directory left by the previous kill.
func TestCrashDurability(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for round := range crashRounds {
		roundName := strconv.Itoa(round)
		acked := crashRound(t, exe, dir, roundName)
		e, err := badgerkv.Open(dir, testOptions(t))
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		total := 0
		for r := 0; r <= round; r++ { // earlier rounds must survive later crashes too
			if r == round {
				total = verifyCrashRound(t, e, strconv.Itoa(r), acked)
			} else {
				verifyCrashRound(t, e, strconv.Itoa(r), nil)
			}
		}
		if err := e.Close(); err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
		t.Logf("round %d: %d acknowledged transactions survived SIGKILL", round, total)
	}
}

// crashRound runs one child until a random moment, kills it, and returns the
// last acknowledged transaction per writer (-1 for none).
func crashRound(t *testing.T, exe, dir, round string) []int {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, "EMBERFS_KV_CRASH_ROUND="+round)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := make([]int, crashWriters)
	for w := range acked {
		acked[w] = -1
	}
	killAfter := 20 + rand.IntN(200) // acknowledgements before the kill timer starts
	lines := bufio.NewScanner(stdout)
	n := 0
	killed := false
	var timer *time.Timer
	for lines.Scan() {
		var w, i int
		if _, err := fmt.Sscanf(lines.Text(), "ack %d %d", &w, &i); err != nil || w < 0 || w >= crashWriters {
			t.Fatalf("round %s: bad line from child: %q", round, lines.Text())
		}
		if i != acked[w]+1 {
			t.Fatalf("round %s: writer %d acknowledged %d after %d", round, w, i, acked[w])
		}
		acked[w] = i
		n++
		if n == killAfter && timer == nil {
			delay := time.Duration(rand.IntN(20_000)) * time.Microsecond
			timer = time.AfterFunc(delay, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
			killed = true
		}
	}
	// Every line printed before the kill has been read (EOF).
	if err := lines.Err(); err != nil && err != io.EOF {
		t.Fatalf("round %s: reading child: %v", round, err)
	}
	err = cmd.Wait()
	status, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !killed || !ok || !status.Signaled() || status.Signal() != syscall.SIGKILL {
		t.Fatalf("round %s: child ended without being killed (%v) after %d acks; stderr:\n%s", round, err, n, stderr.String())
	}
	return acked
}

// verifyCrashRound checks a round's keys. With acked given, every
// acknowledged transaction must be complete, the one after it all or
// nothing, and none beyond; with acked nil (an earlier round, re-checked),
// transactions must be complete up to the first absent one and nothing
// after it. It returns the number of complete transactions.
func verifyCrashRound(t *testing.T, e kv.Engine, round string, acked []int) int {
	t.Helper()
	complete := 0
	err := e.ReadTransact(t.Context(), func(tx kv.ReadTx) error {
		for w := range crashWriters {
			kvs, err := tx.GetRange(fmt.Appendf(nil, "c/%s/%d/", round, w), fmt.Appendf(nil, "c/%s/%d0", round, w), kv.RangeOptions{})
			if err != nil {
				return err
			}
			present := map[string]string{}
			for _, p := range kvs {
				present[string(p.Key)] = string(p.Value)
			}
			// Walk transactions in order: count how many keys of each exist.
			i := 0
			for ; ; i++ {
				have := 0
				for j := range crashKeysPerTxn {
					if v, ok := present[string(crashKey(round, w, i, j))]; ok {
						if v != strconv.Itoa(i) {
							return fmt.Errorf("round %s writer %d txn %d: key %d = %q", round, w, i, j, v)
						}
						have++
					}
				}
				if have == 0 {
					break
				}
				if have != crashKeysPerTxn {
					return fmt.Errorf("round %s writer %d txn %d: %d of %d keys present (torn transaction)", round, w, i, have, crashKeysPerTxn)
				}
			}
			// i is the first absent transaction.
			if i*crashKeysPerTxn != len(kvs) {
				return fmt.Errorf("round %s writer %d: %d keys stored but only %d whole transactions before a gap", round, w, len(kvs), i)
			}
			if acked != nil {
				if i <= acked[w] {
					return fmt.Errorf("round %s writer %d: acknowledged transaction %d lost after SIGKILL (%d transactions present, %d acknowledged)", round, w, i, i, acked[w]+1)
				}
				if i > acked[w]+2 {
					return fmt.Errorf("round %s writer %d: transactions up to %d present but only %d acknowledged and one in doubt", round, w, i-1, acked[w])
				}
			}
			complete += i
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return complete
}
