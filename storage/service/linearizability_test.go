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

// TestLinearizableUnderRestarts records random reads and writes on a few
// chunks of a 3-replica chain while a nemesis stops and restarts storage
// nodes (head, middle or tail), and checks the history with porcupine. A
// write that failed may or may not have happened (its return is left
// open); failed reads are dropped.
func TestLinearizableUnderRestarts(t *testing.T) {
	for seed := 1; seed <= *porcupineSeeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { linearizabilityRun(t, uint64(seed)) })
	}
}

func linearizabilityRun(t *testing.T, seed uint64) {
	c, chains, _ := startCluster(t, 3, 3)
	chain := chains[0]
	cl := c.Client(storageclient.Config{RetryTimeout: 5 * time.Second})
	defer cl.Close()
	const keys, workers = 3, 4
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
				id := chunkengine.ChunkID{Inode: 900, Index: uint32(key)}
				in := regInput{key: key, write: rng.IntN(2) == 0, value: uint64(w+1)<<32 | n}
				op := porcupine.Operation{ClientId: w, Input: in, Call: now()}
				if in.write {
					binary.LittleEndian.PutUint64(buf, in.value)
					st, err := cl.Write(context.Background(), chain, id, chunkSize, 0, buf)
					op.Return = now()
					in.version = st.Version
					if err != nil {
						op.Return = math.MaxInt64 // outcome unknown
						failed.Add(1)
					} else {
						okWrites.Add(1)
					}
				} else {
					res, err := cl.Read(context.Background(), chain, id, 0, buf, storageclient.ReadOptions{})
					op.Return = now()
					switch {
					case errcode.Is(err, errcode.NotFound):
						op.Output = uint64(0)
					case err != nil:
						failed.Add(1)
						continue
					case res.N != 8:
						t.Errorf("read of %s returned %d bytes", id, res.N)
						return
					default:
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
	// Nemesis: stop a random node, restart it, wait for it to serve again.
	rng := rand.New(rand.NewPCG(seed, 99))
	restarts := 0
	for time.Since(start) < *porcupineDuration {
		time.Sleep(time.Duration(50+rng.IntN(150)) * time.Millisecond)
		n := 1 + rng.IntN(3)
		c.StopNode(n)
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		if err := c.StartNode(n); err != nil {
			t.Fatal(err)
		}
		waitServing(t, c, chain, 3)
		restarts++
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("seed %d: %d restarts, %d writes and %d reads acknowledged, %d failed", seed, restarts, okWrites.Load(), okReads.Load(), failed.Load())
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
