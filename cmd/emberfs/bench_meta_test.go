package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// The benchmark command with tiny sizes: the table has a row per mode and
// client count, each with a positive rate in every column.
func TestBenchMetaPrintsEveryRow(t *testing.T) {
	cmd := newBenchMetaCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"--duration", "30ms", "--dir-entries", "40"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("bench meta: %v\n%s", err, errOut.String())
	}
	table := out.String()
	if !strings.Contains(table, "| mode | clients | create | stat | readdir 40 (listings/s) | rename | unlink |") {
		t.Fatalf("no table header in:\n%s", table)
	}
	rate := `[0-9]+(\.[0-9]+)?`
	for _, mode := range []string{"inproc", "grpc"} {
		for _, n := range []string{"1", "16", "64"} {
			re := regexp.MustCompile(`(?m)^\| ` + mode + ` \| ` + n + ` \|( ` + rate + ` \|){5}$`)
			m := re.FindString(table)
			if m == "" {
				t.Fatalf("no complete row for %s with %s clients in:\n%s", mode, n, table)
			}
			if strings.Contains(m, "| 0 |") || strings.Contains(m, "| 0.00 |") {
				t.Fatalf("zero rate in row %q", m)
			}
		}
	}
	if !strings.Contains(errOut.String(), "ops/s") {
		t.Fatalf("no progress lines on stderr:\n%s", errOut.String())
	}
}

func TestBenchMetaRejectsBadInput(t *testing.T) {
	for _, args := range [][]string{{"--clients", "0"}, {"--modes", "rdma"}, {"--kv", "nosuch:x"}} {
		cmd := newBenchMetaCmd()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(append(args, "--duration", "10ms", "--dir-entries", "5"))
		if err := cmd.Execute(); err == nil {
			t.Fatalf("bench meta %v succeeded, want an error", args)
		}
	}
}
