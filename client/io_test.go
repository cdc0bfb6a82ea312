package client

import (
	"slices"
	"testing"
)

func TestSplitRange(t *testing.T) {
	ps := splitRange(10, 25, 8) // [10,35) over 8-byte chunks
	want := []piece{{1, 2, 0, 6}, {2, 0, 6, 8}, {3, 0, 14, 8}, {4, 0, 22, 3}}
	if !slices.Equal(ps, want) {
		t.Fatalf("pieces %v, want %v", ps, want)
	}
	if ps := splitRange(16, 8, 8); !slices.Equal(ps, []piece{{2, 0, 0, 8}}) {
		t.Fatalf("aligned: %v", ps)
	}
}
