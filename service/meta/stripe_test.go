package meta

import (
	"slices"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
)

func TestStripeChainsIsAPermutationOfTheRange(t *testing.T) {
	table := []uint32{11, 12, 13, 14, 15, 16, 17}
	for _, tc := range []struct {
		begin, stripe uint32
		want          []uint32 // the range, in table order
	}{
		{0, 1, []uint32{11}},
		{2, 3, []uint32{13, 14, 15}},
		{5, 4, []uint32{16, 17, 11, 12}},              // wraps around the table
		{9, 2, []uint32{13, 14}},                      // begin taken modulo the chain count
		{0, 10, []uint32{11, 12, 13, 14, 15, 16, 17}}, // stripe capped at the table
	} {
		for seed := range uint64(50) {
			l := Layout{ChainTable: 1, ChunkSize: 1 << 20, StripeSize: tc.stripe, ChainBegin: tc.begin, Seed: seed * 0x12345}
			got, err := StripeChains(table, l)
			if err != nil {
				t.Fatal(err)
			}
			sorted := slices.Clone(got)
			slices.Sort(sorted)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(sorted, want) {
				t.Fatalf("begin %d stripe %d seed %d: chains %v, want a permutation of %v", tc.begin, tc.stripe, seed, got, tc.want)
			}
			for i := range uint32(3 * len(got)) {
				if ChunkChain(got, i) != got[int(i)%len(got)] {
					t.Fatalf("chunk %d on chain %d, want %d", i, ChunkChain(got, i), got[int(i)%len(got)])
				}
			}
		}
	}
}

// The mapping is persistent: these values must never change, or files
// written before the change become unreadable.
func TestStripeChainsGolden(t *testing.T) {
	table := []uint32{1, 2, 3, 4, 5, 6, 7, 8}
	got, err := StripeChains(table, Layout{ChainTable: 1, ChunkSize: 4 << 20, StripeSize: 8, ChainBegin: 3, Seed: 0xdeadbeefcafe})
	if err != nil {
		t.Fatal(err)
	}
	want := goldenChains
	if !slices.Equal(got, want) {
		t.Fatalf("stripe chains %v, want %v", got, want)
	}
}

func TestStripeChainsSeedsSpreadChunkZero(t *testing.T) {
	table := []uint32{1, 2, 3, 4}
	seen := map[uint32]int{}
	for seed := range uint64(400) {
		got, err := StripeChains(table, Layout{ChainTable: 1, ChunkSize: 1 << 20, StripeSize: 4, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		seen[ChunkChain(got, 0)]++
	}
	for _, ch := range table {
		if seen[ch] < 50 { // expected 100 each
			t.Fatalf("chunk 0 placement over 400 seeds: %v; chain %d almost never chosen", seen, ch)
		}
	}
}

func TestStripeChainsErrors(t *testing.T) {
	if _, err := StripeChains(nil, Layout{ChainTable: 7, ChunkSize: 1}); !errcode.Is(err, errcode.Unavailable) {
		t.Fatalf("empty table: %v", err)
	}
	if _, err := StripeChains([]uint32{1}, Layout{ChainTable: 7}); !errcode.Is(err, errcode.InvalidArgument) {
		t.Fatalf("chunk size 0: %v", err)
	}
}

var goldenChains = []uint32{5, 8, 7, 1, 6, 4, 2, 3}
