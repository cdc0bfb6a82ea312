// Package kvcachetests runs the KVCache against a cluster of real
// processes (the emberfs binary, built once): the `emberfs kvcache` CLI end
// to end, and a storage replica SIGKILLed while readers run.
package kvcachetests

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/kvcache"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/tests/testproc"
)

const token = "kvcache-process-test-token"

var emberfsBin string

func TestMain(m *testing.M) { testproc.Main(m, &emberfsBin) }

// procCluster is mgmtd, meta and three storage processes (one target
// each, one chain of 3 replicas).
type procCluster struct {
	dir     string
	mgmtd   string
	storage []*testproc.Proc
	cfgs    []string
	starts  int
}

func startCluster(t *testing.T) *procCluster {
	t.Helper()
	pc := &procCluster{dir: t.TempDir()}
	pc.mgmtd = testproc.StartMgmtd(t, emberfsBin, pc.dir, token)
	for id := 1; id <= 3; id++ {
		pc.cfgs = append(pc.cfgs, testproc.WriteFile(t, filepath.Join(pc.dir, fmt.Sprintf("storage%d.toml", id)),
			testproc.StorageConfig(pc.dir, id, pc.mgmtd, token)))
		pc.storage = append(pc.storage, nil)
		pc.startStorage(t, id)
	}
	ctx := testproc.Ctx(t)
	// The chain table needs every target registered: retry until then.
	for {
		out, err := pc.cli(ctx, "admin", "create-chain-table", "--table", "1", "--replicas", "3")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("create-chain-table: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	metaCfg := testproc.WriteFile(t, filepath.Join(pc.dir, "meta.toml"), fmt.Sprintf(`listen = "127.0.0.1:0"
metrics_listen = ""
kv = %q
mgmtd = [%q]
token = %q
`, "badger:"+filepath.Join(pc.dir, "meta-kv"), pc.mgmtd, token))
	testproc.Start(t, emberfsBin, filepath.Join(pc.dir, "meta.log"), "meta", "--config", metaCfg).Wait(t, testproc.ListeningRE)
	return pc
}

func (pc *procCluster) startStorage(t *testing.T, id int) {
	t.Helper()
	pc.starts++
	pc.storage[id-1] = testproc.Start(t, emberfsBin, filepath.Join(pc.dir, fmt.Sprintf("storage%d.%d.log", id, pc.starts)),
		"storage", "--config", pc.cfgs[id-1])
	pc.storage[id-1].Wait(t, testproc.MetricsRE)
}

// cli runs the binary against the cluster and returns its combined output.
func (pc *procCluster) cli(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, emberfsBin, args...)
	cmd.Env = append(cmd.Environ(), "EMBERFS_MGMTD="+pc.mgmtd, "EMBERFS_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (pc *procCluster) client(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(testproc.Ctx(t), client.Config{MgmtdAddrs: []string{pc.mgmtd}, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// mustCLI runs the binary and fails the test if it fails or its output
// does not match every pattern.
func mustCLI(t *testing.T, pc *procCluster, patterns []string, args ...string) string {
	t.Helper()
	out, err := pc.cli(testproc.Ctx(t), args...)
	if err != nil {
		t.Fatalf("emberfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(out) {
			t.Fatalf("emberfs %s: output does not match %q:\n%s", strings.Join(args, " "), p, out)
		}
	}
	return out
}

func TestCLI(t *testing.T) {
	pc := startCluster(t)
	ctx := testproc.Ctx(t)
	mustCLI(t, pc, []string{`created kvcache namespace llama-7b \(id \d+\) on 1 chains of chain table 1`},
		"kvcache", "create", "llama-7b", "--capacity", "1GiB", "--ttl", "1h", "--max-value", "1MiB", "--replicas", "3")
	mustCLI(t, pc, []string{`created kvcache namespace strict`}, "kvcache", "create", "strict", "--capacity", "64MiB", "--no-evict")
	mustCLI(t, pc, []string{`(?m)^NAME\s+ID\s+TABLE`, `(?m)^llama-7b\s+\d+\s+1\s+1\s+3\s+1\.0 GiB\s+1\.0 MiB\s+1h0m0s\s+true$`,
		`(?m)^strict\s+\d+\s+1\s+1\s+3\s+64\.0 MiB\s+4\.0 MiB\s+never\s+false$`}, "kvcache", "ls")
	mustCLI(t, pc, []string{`(?m)^name\s+llama-7b$`, `(?m)^replicas\s+3$`, `(?m)^max value\s+1\.0 MiB$`, `(?m)^ttl\s+1h0m0s$`, `(?m)^evict\s+true$`},
		"kvcache", "info", "llama-7b")

	// Values put through the Go client show in stats.
	c := pc.client(t)
	k, err := kvcache.Open(ctx, c, "llama-7b", kvcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := k.Put(ctx, []byte(fmt.Sprintf("blk-%d", i)), bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, found, err := k.Get(ctx, []byte(fmt.Sprintf("blk-%d", i))); err != nil || !found {
			t.Fatalf("get %d: %v %v", i, found, err)
		}
	}
	if _, found, _ := k.Get(ctx, []byte("absent")); found {
		t.Fatal("absent key found")
	}
	k.Close()
	mustCLI(t, pc, []string{`(?m)^values\s+[5-6]$`, `(?m)^hits\s+3$`, `(?m)^misses\s+1$`, `(?m)^hit rate\s+75\.0%$`}, "kvcache", "stats", "llama-7b")

	// Errors are clear and the exit status says so.
	for _, bad := range []struct {
		args    []string
		message string
	}{
		{[]string{"kvcache", "create", "llama-7b"}, `already exists`},
		{[]string{"kvcache", "create", "bad/name"}, `"bad/name".*not one of`},
		{[]string{"kvcache", "create", "x", "--capacity", "lots"}, `--capacity`},
		{[]string{"kvcache", "create", "x", "--replicas", "2"}, `no chain table has 2 replicas.*table 1: 1 chains of 3 replicas`},
		{[]string{"kvcache", "info", "nope"}, `kvcache namespace "nope" does not exist`},
		{[]string{"kvcache", "stats", "nope"}, `does not exist`},
		{[]string{"kvcache", "drop", "nope"}, `does not exist`},
	} {
		out, err := pc.cli(ctx, bad.args...)
		if err == nil || !regexp.MustCompile(bad.message).MatchString(out) {
			t.Fatalf("emberfs %s: err %v, output %q does not match %q", strings.Join(bad.args, " "), err, out, bad.message)
		}
	}

	mustCLI(t, pc, []string{`dropped kvcache namespace llama-7b`}, "kvcache", "drop", "llama-7b")
	out := mustCLI(t, pc, []string{`(?m)^strict\s`}, "kvcache", "ls")
	if strings.Contains(out, "llama-7b") {
		t.Fatalf("dropped namespace still listed:\n%s", out)
	}
	mustCLI(t, pc, nil, "kvcache", "drop", "strict")
}

// A storage replica is SIGKILLed while readers get in a loop: every get
// returns the right bytes or a miss, never wrong bytes, and gets keep
// succeeding on the surviving replicas; after a restart the replica
// serves again.
func TestSIGKILLStorageReplicaDuringGets(t *testing.T) {
	pc := startCluster(t)
	ctx := testproc.Ctx(t)
	c := pc.client(t)
	if _, err := kvcache.Create(ctx, c, "sigkill", kvcache.DefaultSettings(1<<30)); err != nil {
		t.Fatal(err)
	}
	k, err := kvcache.Open(ctx, c, "sigkill", kvcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	const nkeys = 32
	val := func(i int) []byte {
		b := make([]byte, 64<<10+i)
		for j := range b {
			b[j] = byte(kvformat.KeyHash([]byte{byte(i), byte(j), byte(j >> 8)}))
		}
		return b
	}
	keys := make([][]byte, nkeys)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("prefix-%d", i))
		if err := k.Put(ctx, keys[i], val(i)); err != nil {
			t.Fatal(err)
		}
	}

	var killed atomic.Bool
	var hitsAfter, missesAfter atomic.Int64
	stop := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 128<<10)
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				idx := i % nkeys
				var got []byte
				var found bool
				var err error
				if r%2 == 0 {
					got, found, err = k.Get(ctx, keys[idx])
				} else {
					var n int
					n, found, err = k.GetInto(ctx, keys[idx], buf)
					got = buf[:n]
				}
				if err != nil {
					errs <- fmt.Errorf("get %s (killed %v): %w", keys[idx], killed.Load(), err)
					return
				}
				if found && !bytes.Equal(got, val(idx)) {
					errs <- fmt.Errorf("get %s returned %d wrong bytes", keys[idx], len(got))
					return
				}
				if killed.Load() {
					if found {
						hitsAfter.Add(1)
					} else {
						missesAfter.Add(1)
					}
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // let the readers spread over the replicas
	pc.storage[1].Kill()
	killed.Store(true)
	// Readers go on until they have done plenty of gets without the replica.
	deadline := time.Now().Add(testproc.Eventually)
	for hitsAfter.Load() < 200 && time.Now().Before(deadline) {
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if hitsAfter.Load() < 200 {
		t.Fatalf("only %d hits (%d misses) after the kill", hitsAfter.Load(), missesAfter.Load())
	}
	t.Logf("after the SIGKILL: %d hits, %d misses", hitsAfter.Load(), missesAfter.Load())

	// Puts work with a replica down, and the restarted replica catches up.
	if err := k.Put(ctx, []byte("after-kill"), val(99)); err != nil {
		t.Fatal(err)
	}
	pc.startStorage(t, 2)
	for i := range keys {
		got, found, err := k.Get(ctx, keys[i])
		if err != nil || !found || !bytes.Equal(got, val(i)) {
			t.Fatalf("key %d after the restart: %v %v", i, found, err)
		}
	}
	if got, found, err := k.Get(ctx, []byte("after-kill")); err != nil || !found || !bytes.Equal(got, val(99)) {
		t.Fatalf("value put while the replica was down: %v %v", found, err)
	}
}
