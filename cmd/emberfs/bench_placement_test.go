package main

import (
	"bytes"
	"strings"
	"testing"
)

// The placement benchmark on one small shape: one row, whose recovery
// cell after one failure shows the greedy 3.30 improved to the ideal 1.10
// (the numbers docs/mgmtd.md publishes).
func TestBenchPlacementPrintsTable(t *testing.T) {
	cmd := newBenchPlacementCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"--nodes", "12", "--targets", "10", "--replicas", "3"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("bench placement: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "| nodes x targets | replicas |") {
		t.Fatalf("want a header, a rule and one row, got:\n%s", out.String())
	}
	if !strings.HasPrefix(lines[2], "| 12 x 10 | 3 | 40 | 3.30 -> **1.10** (ideal 1.10) |") {
		t.Fatalf("row %q, want 12 x 10, 3 replicas, 40 chains, recovery 3.30 -> 1.10", lines[2])
	}
}

func TestBenchPlacementRejectsBadInput(t *testing.T) {
	for _, args := range [][]string{{"--nodes", "2"}, {"--targets", "x"}, {"--replicas", "0"}, {"--nodes", "7", "--targets", "1", "--replicas", "3"}} {
		cmd := newBenchPlacementCmd()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(args)
		if err := cmd.Execute(); err == nil {
			t.Fatalf("bench placement %v succeeded, want an error", args)
		}
	}
}
