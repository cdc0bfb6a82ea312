package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/kvopen"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/storage/storageclient"
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

// fsckNamespace makes a Badger namespace with /keep (a live file) and
// /gone (removed, its chunk cleanup still queued: meta.Run is not running)
// and returns the KV spec and both inode ids.
func fsckNamespace(t *testing.T) (spec string, keep, gone uint64) {
	t.Helper()
	spec = "badger:" + t.TempDir()
	ctx := context.Background()
	eng, err := kvopen.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	s, err := meta.New(ctx, eng, meta.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"/keep", "/gone"} {
		r, err := s.Create(ctx, meta.Root, meta.P(name), meta.CreateOptions{Mode: 0o644})
		if err != nil {
			t.Fatal(err)
		}
		if name == "/keep" {
			keep = r.Inode.ID
		} else {
			gone = r.Inode.ID
		}
	}
	if err := s.Unlink(ctx, meta.Root, meta.P("/gone")); err != nil {
		t.Fatal(err)
	}
	return spec, keep, gone
}

// `emberfs admin fsck --kv SPEC --mgmtd ADDR --token T` over a real
// storage cluster (in-process mgmtd and two storage services, one chain of
// two replicas): chunks of a live file and of a removed file still queued
// for cleanup are fine; chunks of an inode the namespace never had are
// reported on both replicas and fail the check.
func TestAdminFsckChunksWithoutFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec, keep, gone := fsckNamespace(t)
	o := localcluster.StorageOnly(t.TempDir(), 2)
	o.NoSync, o.Logger = true, testutil.Logger()
	c, err := localcluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	chains, err := c.CreateChains(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.StorageClient(storageclient.Config{})
	defer cl.Close()
	write := func(inode uint64) {
		t.Helper()
		id := storageclient.ChunkID{Inode: inode, Index: 0}
		if _, err := cl.Write(ctx, chains[0], id, 64<<10, 0, []byte("data")); err != nil {
			t.Fatalf("write %s: %v", id, err)
		}
	}
	write(keep)
	write(gone)
	fsck := func() (string, error) {
		return runCLI(t, "admin", "fsck", "--kv", spec, "--mgmtd", c.Mgmtd.Addr(), "--token", c.Token())
	}

	out, err := fsck()
	if err != nil || !strings.Contains(out, "storage: 2 targets listed, 0 inodes with chunks not in the snapshot") ||
		!strings.Contains(out, "\nclean\n") || strings.Contains(out, "chunks without files") {
		t.Fatalf("fsck with chunks of live and queued files only: %v\n%s", err, out)
	}

	const orphan = 1 << 60
	write(orphan)
	out, err = fsck()
	if err == nil || !strings.Contains(err.Error(), "1 problem(s)") {
		t.Fatalf("fsck with an orphan chunk: %v, want 1 problem\n%s", err, out)
	}
	want := fmt.Sprintf("chunks without files: inode %d on targets 100, 200\n", uint64(orphan))
	if !strings.Contains(out, want) || strings.Count(out, "chunks without files") != 1 || strings.Contains(out, "clean") {
		t.Fatalf("fsck output lacks exactly %q:\n%s", want, out)
	}

	// Without --mgmtd storage is not consulted.
	out, err = runCLI(t, "admin", "fsck", "--kv", spec, "--mgmtd", "")
	if err != nil || strings.Contains(out, "storage:") {
		t.Fatalf("fsck without --mgmtd: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "admin", "fsck", "--kv", spec, "--mgmtd", c.Mgmtd.Addr(), "--token", ""); err == nil ||
		!strings.Contains(err.Error(), "--token") {
		t.Fatalf("fsck --mgmtd without a token: %v", err)
	}
}

// namespaceHas (the re-check before an inode is reported) finds a live
// inode and a removal still queued, and nothing else: it pins the meta
// key schema it reads.
func TestFsckNamespaceHas(t *testing.T) {
	spec, keep, gone := fsckNamespace(t)
	eng, err := kvopen.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ids := []uint64{keep, gone, 1 << 60}
	for i := uint64(0); i < 2*meta.InodesExistBatch; i++ {
		ids = append(ids, 1<<50+i) // more than one batch
	}
	got, err := namespaceHas(eng)(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[keep] || !got[gone] {
		t.Fatalf("namespaceHas = %v, want {%d, %d}", got, keep, gone)
	}
}
