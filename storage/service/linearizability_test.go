package service_test

import (
	"cmp"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/storageclient"
)

var (
	porcupineSeeds    = flag.Int("porcupine.seeds", 2, "randomized histories checked by TestLinearizableUnderRestarts")
	porcupineDuration = flag.Duration("porcupine.duration", 2500*time.Millisecond, "length of each randomized history")
	porcupineDump     = flag.String("porcupine.dump", "", "on a failure, write the history as text (PREFIX-seedN.txt) and porcupine's visualization (PREFIX-seedN.html)")
)

// regInput is one operation on a chunk used as a register (its first
// 8 bytes).
type regInput struct {
	key   int
	write bool
	value uint64
	// Diagnostics only (the model ignores them): the chunk version the
	// write committed or the read returned, and the replica that answered.
	version uint64
	target  uint64
}

var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[int][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(regInput).key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return uint64(0) },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.write {
			return true, in.value
		}
		return output.(uint64) == state.(uint64), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.write {
			return fmt.Sprintf("write(%d, %x) v%d", in.key, in.value, in.version)
		}
		return fmt.Sprintf("read(%d) -> %x v%d from %d", in.key, output, in.version, in.target)
	},
}

// TestLinearizableUnderRestarts records random reads and writes of 8-byte
// registers at non-zero offsets in a few chunks (two registers per chunk,
// so writes of one land beside the other's bytes) of a 3-replica chain
// while a nemesis, each round, either stops and restarts one node (head,
// middle or tail), stops two nodes at once and restarts both, or stops one
// node's heartbeats while it keeps running (its lease runs out at mgmtd,
// which reroutes around a service that still holds connections and
// in-flight requests) and restarts it later; then it checks the history
// with porcupine. A write that failed may or may not have happened (its
// return is left open); failed reads are dropped.
func TestLinearizableUnderRestarts(t *testing.T) {
	for seed := 1; seed <= *porcupineSeeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { linearizabilityRun(t, uint64(seed)) })
	}
}

func linearizabilityRun(t *testing.T, seed uint64) {
	c, chains, _ := startCluster(t, 3, 3)
	chain := chains[0]
	cl := c.StorageClient(storageclient.Config{RetryTimeout: 5 * time.Second, SpreadReads: true})
	defer cl.Close()
	const keys, workers = 6, 4
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var mu sync.Mutex
	var history []porcupine.Operation
	var stop atomic.Bool
	var okWrites, okReads, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			buf := make([]byte, 8)
			for n := uint64(1); !stop.Load(); n++ {
				key := rng.IntN(keys)
				id, off := registerAt(key)
				in := regInput{key: key, write: rng.IntN(2) == 0, value: uint64(w+1)<<32 | n}
				op := porcupine.Operation{ClientId: w, Input: in, Call: now()}
				if in.write {
					binary.LittleEndian.PutUint64(buf, in.value)
					st, err := cl.Write(context.Background(), chain, id, chunkSize, off, buf)
					op.Return = now()
					in.version = st.Version
					if err != nil {
						op.Return = math.MaxInt64 // outcome unknown
						failed.Add(1)
					} else {
						okWrites.Add(1)
					}
				} else {
					clear(buf)
					res, err := cl.Read(context.Background(), chain, id, off, buf, storageclient.ReadOptions{})
					op.Return = now()
					switch {
					case errcode.Is(err, errcode.NotFound):
						op.Output = uint64(0)
					case err != nil:
						failed.Add(1)
						continue
					case res.N != 8 && res.N != 0:
						// Registers are written whole: a chunk ends before
						// a register or after it, never inside.
						t.Errorf("read of %s at %d returned %d bytes", id, off, res.N)
						return
					default:
						// N == 0: the chunk ends before this register (the
						// other one was written): it reads as zeros.
						op.Output = binary.LittleEndian.Uint64(buf)
						in.version, in.target = res.Version, res.Target
					}
					okReads.Add(1)
				}
				op.Input = in
				mu.Lock()
				history = append(history, op)
				mu.Unlock()
			}
		}()
	}
	// Nemesis: one fault per round, healed, then wait for all three
	// replicas to serve again.
	rng := rand.New(rand.NewPCG(seed, 99))
	faults := map[string]int{}
	for time.Since(start) < *porcupineDuration || len(faults) < 3 {
		time.Sleep(time.Duration(50+rng.IntN(150)) * time.Millisecond)
		n := 1 + rng.IntN(3)
		switch kind := []string{"restart", "two-down", "lease-expiry"}[rng.IntN(3)]; kind {
		case "restart":
			c.StopStorage(n)
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			restartNodes(t, c, n)
			faults[kind]++
		case "two-down":
			// Two of three replicas gone: the survivor is head and tail.
			m := 1 + (n+rng.IntN(2))%3
			c.StopStorage(n)
			c.StopStorage(m)
			time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
			restartNodes(t, c, n, m)
			faults[kind]++
		case "lease-expiry":
			// The node keeps running and serving its connections while
			// mgmtd times it out (failure timeout 600 ms) and reroutes:
			// what a long GC pause or a partition from mgmtd looks like.
			c.StorageService(n).StopHeartbeatsForTest()
			time.Sleep(time.Duration(900+rng.IntN(600)) * time.Millisecond)
			c.StopStorage(n)
			restartNodes(t, c, n)
			faults[kind]++
		}
		waitServing(t, c, chain, 3)
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("seed %d: faults %v, %d writes and %d reads acknowledged, %d failed", seed, faults, okWrites.Load(), okReads.Load(), failed.Load())
	if okWrites.Load() == 0 || okReads.Load() == 0 {
		t.Fatal("history has no successful writes or reads")
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel, history, 60*time.Second)
	if res == porcupine.Illegal {
		dumpHistory(t, seed, history, info)
		t.Fatalf("history of %d operations is not linearizable", len(history))
	}
	if res == porcupine.Unknown {
		t.Logf("porcupine timed out on %d operations (no verdict)", len(history))
	}
}

// registerAt places register key: two per chunk, at non-zero offsets
// (one in each half of the chunk).
func registerAt(key int) (chunkengine.ChunkID, uint32) {
	return chunkengine.ChunkID{Inode: 900, Index: uint32(key / 2)}, uint32(key%2)*(chunkSize/2) + 24
}

func restartNodes(t *testing.T, c *localcluster.Cluster, nodes ...int) {
	t.Helper()
	for _, n := range nodes {
		if err := c.StartStorage(n); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRegisterModelRejectsStaleRead makes sure the checker can fail: a
// read returning an overwritten value after the overwrite completed.
func TestRegisterModelRejectsStaleRead(t *testing.T) {
	h := []porcupine.Operation{
		{ClientId: 0, Input: regInput{key: 1, write: true, value: 1}, Call: 0, Return: 10},
		{ClientId: 0, Input: regInput{key: 1, write: true, value: 2}, Call: 20, Return: 30},
		{ClientId: 1, Input: regInput{key: 1}, Output: uint64(1), Call: 40, Return: 50},
	}
	if porcupine.CheckOperations(registerModel, h) {
		t.Fatal("stale read accepted")
	}
}

// dumpHistory writes a failed history for diagnosis when -porcupine.dump
// is set: one line per operation, by key and call time, and porcupine's
// HTML visualization.
func dumpHistory(t *testing.T, seed uint64, history []porcupine.Operation, info porcupine.LinearizationInfo) {
	if *porcupineDump == "" {
		return
	}
	h := slices.Clone(history)
	slices.SortFunc(h, func(a, b porcupine.Operation) int {
		if ka, kb := a.Input.(regInput).key, b.Input.(regInput).key; ka != kb {
			return ka - kb
		}
		return cmp.Compare(a.Call, b.Call)
	})
	var sb strings.Builder
	for _, op := range h {
		ret := "?"
		if op.Return != math.MaxInt64 {
			ret = strconv.FormatInt(op.Return/1000, 10)
		}
		fmt.Fprintf(&sb, "c%d [%d, %s]us %s\n", op.ClientId, op.Call/1000, ret, registerModel.DescribeOperation(op.Input, op.Output))
	}
	base := fmt.Sprintf("%s-seed%d", *porcupineDump, seed)
	if err := os.WriteFile(base+".txt", []byte(sb.String()), 0o644); err != nil {
		t.Log(err)
	}
	if err := porcupine.VisualizePath(registerModel, info, base+".html"); err != nil {
		t.Log(err)
	}
	t.Logf("history written to %s.txt and %s.html", base, base)
}
