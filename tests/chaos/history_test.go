package chaos

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// regKey names one register: a block of a logical file.
type regKey struct {
	fid   uint64
	block int
}

// regOp is a read or a write of one register. A write's value is the seq
// of the write that produced the block (0: zeros, from a truncate); a
// read's output is the seq found in the block.
type regOp struct {
	key   regKey
	write bool
	value uint64
	what  string // diagnostics: the workload op and client
}

// registerModel: each block is a register (initially 0: a new file reads
// zeros); porcupine checks per block that every read returned the value of
// a write that could have been the last one before it.
var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[regKey][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(regOp).key
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(byKey))
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return uint64(0) },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regOp)
		if in.write {
			return true, in.value
		}
		return output.(uint64) == state.(uint64), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regOp)
		if in.write {
			return fmt.Sprintf("%s: write file %d block %d = %x", in.what, in.key.fid, in.key.block, in.value)
		}
		return fmt.Sprintf("%s: read file %d block %d -> %x", in.what, in.key.fid, in.key.block, output)
	},
}

// unknown marks a return time of an operation whose outcome is unknown
// (it failed: it may or may not have taken effect, at any later time).
const unknown = math.MaxInt64

// history records every register operation and every violation found on
// the spot (bytes no write produced, wrong namespace answers).
type history struct {
	start      time.Time
	mu         sync.Mutex
	ops        []porcupine.Operation
	violations []string
	written    map[regKey]map[uint64]bool
	notes      map[uint64][]string // per file: replica probes
}

func newHistory() *history {
	return &history{start: time.Now(), written: map[regKey]map[uint64]bool{}, notes: map[uint64][]string{}}
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(client int, in regOp, out uint64, call, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if in.write {
		if h.written[in.key] == nil {
			h.written[in.key] = map[uint64]bool{}
		}
		h.written[in.key][in.value] = true
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

func (h *history) note(fid uint64, s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.notes[fid] = append(h.notes[fid], fmt.Sprintf("%.3fs: %s", time.Since(h.start).Seconds(), s))
}

func (h *history) violate(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.violations = append(h.violations, fmt.Sprintf("%.3fs: ", time.Since(h.start).Seconds())+fmt.Sprintf(format, args...))
}

// check returns every violation: those recorded on the spot, reads of
// values no write of that block ever carried, and blocks whose history is
// not linearizable (a stale read or a lost acknowledged write), with the
// history of each such block.
func (h *history) check(timeout time.Duration) (violations []string, checked int, undecided int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	violations = slices.Clone(h.violations)
	byKey := map[regKey][]porcupine.Operation{}
	for _, op := range h.ops {
		in := op.Input.(regOp)
		byKey[in.key] = append(byKey[in.key], op)
		if !in.write {
			if v := op.Output.(uint64); v != 0 && !h.written[in.key][v] {
				violations = append(violations, fmt.Sprintf("%s: read file %d block %d -> %x, which no write of that block carried", in.what, in.key.fid, in.key.block, v))
			}
		}
	}
	keys := make([]regKey, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b regKey) int { return cmp.Or(cmp.Compare(a.fid, b.fid), cmp.Compare(a.block, b.block)) })
	badFiles := map[uint64]bool{}
	for _, k := range keys {
		ops := byKey[k]
		res, _ := porcupine.CheckOperationsVerbose(registerModel, ops, timeout)
		checked++
		switch res {
		case porcupine.Illegal:
			violations = append(violations, fmt.Sprintf("file %d block %d: history not linearizable:\n%s", k.fid, k.block, h.describe(ops)))
			badFiles[k.fid] = true
		case porcupine.Unknown:
			undecided++
		}
	}
	// The whole story of each file with a violation: every operation that
	// changed it, once (a write op appears once per block it wrote).
	for _, fid := range slices.Sorted(maps.Keys(badFiles)) {
		type change struct {
			call, ret int64
			what      string
		}
		seen := map[string]bool{}
		var cs []change
		for _, op := range h.ops {
			in := op.Input.(regOp)
			if in.key.fid != fid || !in.write || seen[in.what] {
				continue
			}
			seen[in.what] = true
			cs = append(cs, change{op.Call, op.Return, in.what})
		}
		slices.SortFunc(cs, func(a, b change) int { return cmp.Compare(a.call, b.call) })
		var b strings.Builder
		for _, c := range cs {
			ret := "?"
			if c.ret != unknown {
				ret = fmt.Sprintf("%.3fs", time.Duration(c.ret).Seconds())
			}
			fmt.Fprintf(&b, "    [%.3fs, %s] %s\n", time.Duration(c.call).Seconds(), ret, c.what)
		}
		for _, n := range h.notes[fid] {
			fmt.Fprintf(&b, "    note %s\n", n)
		}
		violations = append(violations, fmt.Sprintf("file %d: every change (? = failed, outcome unknown):\n%s", fid, b.String()))
	}
	return violations, checked, undecided
}

// describe lists a block's operations by call time, for a report.
func (h *history) describe(ops []porcupine.Operation) string {
	ops = slices.Clone(ops)
	slices.SortFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	var b strings.Builder
	for i, op := range ops {
		if i == 60 {
			fmt.Fprintf(&b, "    ... %d more\n", len(ops)-i)
			break
		}
		ret := "?"
		if op.Return != unknown {
			ret = fmt.Sprintf("%.3fs", time.Duration(op.Return).Seconds())
		}
		fmt.Fprintf(&b, "    [%.3fs, %s] %s\n", time.Duration(op.Call).Seconds(), ret, registerModel.DescribeOperation(op.Input, op.Output))
	}
	return b.String()
}
