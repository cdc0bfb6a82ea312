package main

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/kvopen"
	"github.com/emberfs/emberfs/service/meta"
)

// `emberfs admin fsck --kv` on a Badger directory: clean after ordinary
// operations (exit status 0, "clean"); after an inode is deleted behind
// the server's back, it names the dangling entry and fails.
func TestAdminFsck(t *testing.T) {
	spec := "badger:" + t.TempDir()
	ctx := context.Background()
	eng, err := kvopen.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	s, err := meta.New(ctx, eng, meta.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p := func(s string) meta.PathAt { return meta.PathAt{Path: s} }
	if _, err := s.Mkdir(ctx, meta.Root, p("/a/b"), 0o755, true); err != nil {
		t.Fatal(err)
	}
	victim, err := s.Create(ctx, meta.Root, p("/a/b/f"), meta.CreateOptions{Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Link(ctx, meta.Root, p("/a/b/f"), p("/a/g")); err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}

	out, err := runCLI(t, "admin", "fsck", "--kv", spec)
	if err != nil {
		t.Fatalf("fsck of a sound namespace: %v\n%s", err, out)
	}
	if !strings.Contains(out, "4 inodes, 4 entries") || !strings.Contains(out, "clean") {
		t.Fatalf("fsck output:\n%s", out)
	}

	eng, err = kvopen.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	key := binary.LittleEndian.AppendUint64([]byte("INOD"), victim.Inode.ID)
	if err := eng.Transact(ctx, func(tx kv.Tx) error { return tx.Clear(key) }); err != nil {
		t.Fatal(err)
	}
	eng.Close()
	out, err = runCLI(t, "admin", "fsck", "--kv", spec)
	if err == nil || !strings.Contains(err.Error(), "2 problem(s)") {
		t.Fatalf("fsck of a damaged namespace: %v, want 2 problems\n%s", err, out)
	}
	for _, want := range []string{`entry "f" in directory`, `entry "g" in directory`, "points at missing inode"} {
		if !strings.Contains(out, want) {
			t.Fatalf("fsck output lacks %q:\n%s", want, out)
		}
	}

	if _, err := runCLI(t, "admin", "fsck"); err == nil || !strings.Contains(err.Error(), "--kv") {
		t.Fatalf("fsck without --kv: %v", err)
	}
}
