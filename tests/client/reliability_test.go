package client_test

// Regression tests of the client holes of issue 13 (docs/reliability.md,
// "Holes closed"): each failed before its fix.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/localcluster/clustertest"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/metad"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// collectAll runs meta's garbage collector until its removal queue is
// empty, so every removed file's chunks are gone from storage.
func collectAll(t *testing.T, ctx context.Context, c *localcluster.Cluster) {
	t.Helper()
	for {
		n, err := c.Meta.Server().CollectGarbage(ctx, 0)
		if err != nil {
			t.Fatalf("collect garbage: %v", err)
		}
		if n == 0 {
			return
		}
	}
}

// waitServing waits until every chain serves on all its targets, in the
// cluster's and in cl's routing.
func waitServing(t *testing.T, ctx context.Context, c *localcluster.Cluster, cl *client.Client) {
	t.Helper()
	if err := c.WaitHealthy(ctx, 0); err != nil {
		t.Fatal(err)
	}
	_ = cl.Routing().Refresh(ctx)
	if _, err := cl.Routing().WaitFor(ctx, func(r *routing.Routing) bool {
		tbl, ok := r.Table(localcluster.ChainTable)
		if !ok {
			return false
		}
		for _, id := range tbl.ChainIds {
			ch, _ := r.Chain(id)
			if len(r.ServingTargets(id)) < len(ch.GetTargets()) {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("client routing never showed every chain serving: %v", err)
	}
}

// chunkLength is how many bytes of inode n storage still holds.
func chunkLength(t *testing.T, ctx context.Context, cl *client.Client, n meta.Inode) uint64 {
	t.Helper()
	l, err := cl.ChunkStore().QueryLength(ctx, n.ID, n.Layout)
	if err != nil {
		t.Fatalf("query length of inode %d: %v", n.ID, err)
	}
	return l
}

// Hole 8: a file another client unlinks while this one has it open for
// reading keeps its data until this close, even through garbage
// collection; after the close the data is collected.
func TestUnlinkedWhileOpenForReadKeepsData(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	a := newClient(t, c, client.Config{})
	b := newClient(t, c, client.Config{CacheBytes: -1, ReadAhead: -1})
	data := pattern(3*testChunk+77, 4)
	if err := a.WriteFile(ctx, meta.Root, meta.P("/kept"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := b.Open(ctx, meta.Root, meta.P("/kept"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Remove(ctx, meta.Root, meta.P("/kept")); err != nil {
		t.Fatal(err)
	}
	collectAll(t, ctx, c)
	got := make([]byte, len(data))
	if n, err := f.ReadAt(got, 0); n != len(data) || (err != nil && err != io.EOF) {
		t.Fatalf("read of the unlinked open file: %d bytes, %v", n, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the unlinked open file read other bytes than were written (data collected under an open reader)")
	}
	ino := f.Inode()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	collectAll(t, ctx, c)
	if l := chunkLength(t, ctx, b, ino); l != 0 {
		t.Fatalf("after the last close and collection storage still holds %d bytes of the file", l)
	}
}

// Hole 8: when a reader's data is gone after all (its client lease expired,
// so meta ended its session and collected the unlinked file), reads fail
// with ESTALE instead of returning zeros.
func TestReadOfCollectedFileIsStale(t *testing.T) {
	ctx := ctxT(t)
	c := clustertest.Start(t, localcluster.Options{Storage: 3, Replicas: 3, TargetsPerNode: 3, ChunkSize: testChunk,
		// A short lease, and a reader that never renews it (as if cut off
		// from meta): its session is pruned once the test asks. (A live
		// client renews every third of the lease, so its sessions stay.)
		MetaConfig: func(m *metad.Config) { m.ClientTTL.Duration = 200 * time.Millisecond }})
	a := newClient(t, c, client.Config{})
	b := newClient(t, c, client.Config{CacheBytes: -1, ReadAhead: -1, LeaseRenewal: -1})
	data := pattern(2*testChunk+5, 6)
	if err := a.WriteFile(ctx, meta.Root, meta.P("/gone"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := b.Open(ctx, meta.Root, meta.P("/gone"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := a.Remove(ctx, meta.Root, meta.P("/gone")); err != nil {
		t.Fatal(err)
	}
	// Prune expired sessions until meta has dropped the inode.
	for {
		if _, err := c.Meta.Server().PruneSessions(ctx); err != nil {
			t.Fatal(err)
		}
		_, err := b.Meta().Stat(ctx, meta.Root, meta.PathAt{Parent: f.Inode().ID})
		if errcode.Is(err, errcode.NotFound) || errcode.Is(err, errcode.Stale) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("the reader's session was never pruned")
		case <-time.After(50 * time.Millisecond):
		}
	}
	collectAll(t, ctx, c)
	if l := chunkLength(t, ctx, b, f.Inode()); l != 0 {
		t.Fatalf("storage still holds %d bytes after collection", l)
	}
	got := make([]byte, len(data))
	n, err := f.ReadAt(got, 0)
	if errcode.ErrnoOf(err) != syscall.ESTALE {
		t.Fatalf("read of a collected file: %d bytes, err %v (errno %d); want ESTALE", n, err, errcode.ErrnoOf(err))
	}
}

// Hole 9: after another client rewrote a file shorter, a reopen on this
// client (which still has the file open) reports the new size and bytes,
// not the old size padded with zeros.
func TestReopenSeesShorterRewrite(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	a := newClient(t, c, client.Config{})
	b := newClient(t, c, client.Config{})
	long := pattern(3*testChunk+10, 1)
	if err := a.WriteFile(ctx, meta.Root, meta.P("/shrink"), long, 0o644); err != nil {
		t.Fatal(err)
	}
	old, err := b.Open(ctx, meta.Root, meta.P("/shrink"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if old.Size() != int64(len(long)) {
		t.Fatalf("first open size %d, want %d", old.Size(), len(long))
	}
	short := pattern(testChunk+3, 2)
	if err := a.WriteFile(ctx, meta.Root, meta.P("/shrink"), short, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := b.Open(ctx, meta.Root, meta.P("/shrink"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Size() != int64(len(short)) {
		t.Fatalf("reopen after a shorter rewrite: size %d, want %d", f.Size(), len(short))
	}
	got := make([]byte, len(long))
	n, err := f.ReadAt(got, 0)
	if n != len(short) || err != io.EOF || !bytes.Equal(got[:n], short) {
		t.Fatalf("reopen read %d bytes (%v), equal to the rewrite: %v; want %d bytes and EOF", n, err, bytes.Equal(got[:min(n, len(short))], short[:min(n, len(short))]), len(short))
	}
	st, err := b.Stat(ctx, meta.Root, meta.P("/shrink"))
	if err != nil || st.Size != uint64(len(short)) {
		t.Fatalf("stat on the reading client: size %d, %v; want %d", st.Size, err, len(short))
	}
}

// Hole 10: a buffered write that storage never takes is acknowledged data
// lost. Every later call on the handle fails with EIO (never EAGAIN, which
// callers retry), a retried write after storage is back does not make the
// loss disappear, and Close fails.
func TestLostBufferedWriteFailsEveryLaterCall(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	w := newClient(t, c, client.Config{WriteBuffer: testChunk, Storage: storageclient.Config{RetryTimeout: 300 * time.Millisecond}})
	f, err := w.Open(ctx, meta.Root, meta.P("/lost"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(testChunk, 3)
	if _, err := f.WriteAt(data, 0); err != nil { // buffered, then sent (chunk-sized buffer)
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 3; n++ {
		c.StopStorage(n)
	}
	var errs []error
	note := func(what string, err error) {
		if err != nil {
			t.Logf("%s: %v", what, err)
			errs = append(errs, err)
			if errno := errcode.ErrnoOf(err); errno != syscall.EIO {
				t.Errorf("%s: errno %d (%v), want EIO", what, errno, errno)
			}
		}
	}
	// A half-chunk write is acknowledged from the buffer; the flush sends
	// it into the outage.
	_, err = f.WriteAt(data[:testChunk/2], testChunk)
	note("buffered write", err)
	if err != nil {
		t.Fatal("a buffered write failed before anything was sent")
	}
	note("flush into the outage", f.Flush())
	if len(errs) == 0 {
		t.Fatal("flush of a buffered write with every storage service down succeeded")
	}
	for n := 1; n <= 3; n++ {
		if err := c.StartStorage(n); err != nil {
			t.Fatal(err)
		}
	}
	waitServing(t, ctx, c, w)
	// What an application (or io.BufferedWriter on EAGAIN) does: write again.
	_, err = f.WriteAt(data[:testChunk/2], 2*testChunk)
	note("write after the loss", err)
	if err == nil {
		t.Error("a write after lost buffered data succeeded")
	}
	err = f.Sync()
	note("fsync after the loss", err)
	if err == nil {
		t.Error("fsync after lost buffered data succeeded")
	}
	err = f.Close()
	note("close after the loss", err)
	if err == nil {
		t.Error("close after lost buffered data succeeded: the file has a hole the writer never heard of")
	}
	var e *errcode.Error
	if !errors.As(err, &e) {
		t.Fatalf("close error %v is not an errcode error", err)
	}
}

// A write sent straight from the caller's memory (not acknowledged before)
// fails only itself, with EIO, and leaves the handle usable.
func TestFailedDirectWriteFailsOnlyItself(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t)
	w := newClient(t, c, client.Config{WriteBuffer: -1, Storage: storageclient.Config{RetryTimeout: 300 * time.Millisecond}})
	f, err := w.Open(ctx, meta.Root, meta.P("/direct"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 3; n++ {
		c.StopStorage(n)
	}
	data := pattern(testChunk, 5)
	_, err = f.WriteAt(data, 0)
	if errcode.ErrnoOf(err) != syscall.EIO {
		t.Fatalf("unbuffered write with storage down: %v (errno %d), want EIO", err, errcode.ErrnoOf(err))
	}
	for n := 1; n <= 3; n++ {
		if err := c.StartStorage(n); err != nil {
			t.Fatal(err)
		}
	}
	waitServing(t, ctx, c, w)
	// The short retry window may still meet restarting services: retry
	// (as the caller of a failed pwrite may) until the write lands.
	for {
		_, err := f.WriteAt(data, 0)
		if err == nil {
			break
		}
		if errcode.ErrnoOf(err) != syscall.EIO || ctx.Err() != nil {
			t.Fatalf("retried unbuffered write: %v", err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := w.ReadFile(ctx, meta.Root, meta.P("/direct"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
}
