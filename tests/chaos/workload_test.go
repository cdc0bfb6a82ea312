package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/meta"
)

// namesPerWorker is how many names each worker's directory cycles through.
const namesPerWorker = 5

// file is the model of one logical file (one create): its id in block
// headers, the inode meta gave it, and every block a write may have
// touched (truncates zero those past the new end).
type file struct {
	fid     uint64
	inode   uint64
	touched int // blocks [0, touched) may hold data
}

// worker owns the names /w<id>/n<k>: only it creates, writes, truncates,
// renames and deletes them, so its model of them changes only by its own
// operations, in order. It also reads any worker's files. Its model holds
// what the cluster acknowledged; an operation that failed is resolved by
// looking (stat) before the worker goes on.
type worker struct {
	id    int
	fs    fsys
	h     *history
	rng   *rand.Rand
	names map[string]*file // present names
	next  uint64           // fids: id<<40 | next
	all   []*worker
	stats *stats
	acked int // operations acknowledged (reads included)
	// diag is a native client for probes of replicas (any worker's,
	// FUSE ones too).
	diag *client.Client
}

type stats struct {
	ops, failed, reads, emptyReads               atomic.Int64
	creates, writes, truncates, renames, deletes atomic.Int64
	retriedAnswers, shortReads                   atomic.Int64
	bytesWritten, bytesRead                      atomic.Int64
}

func (s *stats) String() string {
	return fmt.Sprintf("%d ops acknowledged (%d creates, %d writes, %d truncates, %d renames, %d deletes, %d reads [%d of files not yet written, %d ended before the length seen at open]), %d failed (outcome resolved or left open), %d answers of retried namespace ops, %.1f MiB written, %.1f MiB read",
		s.ops.Load(), s.creates.Load(), s.writes.Load(), s.truncates.Load(), s.renames.Load(), s.deletes.Load(), s.reads.Load(), s.emptyReads.Load(), s.shortReads.Load(),
		s.failed.Load(), s.retriedAnswers.Load(), float64(s.bytesWritten.Load())/(1<<20), float64(s.bytesRead.Load())/(1<<20))
}

func newClient(ctx context.Context, mgmtd []string, id string) (*client.Client, error) {
	return client.New(ctx, client.Config{MgmtdAddrs: mgmtd, Token: token, ClientID: id, Logger: testutil.Logger()})
}

func (w *worker) path(k int) string { return fmt.Sprintf("/w%d/n%d", w.id, k) }

func at(p string) meta.PathAt { return meta.PathAt{Path: p} }

func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 90*time.Second)
}

// step runs one random operation.
func (w *worker) step() {
	if w.rng.IntN(10) < 3 {
		o := w.all[w.rng.IntN(len(w.all))]
		w.read(o.path(w.rng.IntN(namesPerWorker)), "read")
		return
	}
	k := w.rng.IntN(namesPerWorker)
	p := w.path(k)
	f := w.names[p]
	if f == nil {
		w.create(p)
		return
	}
	switch r := w.rng.IntN(10); {
	case r < 5:
		w.write(p, f)
	case r < 7:
		w.truncate(p, f)
	case r < 9:
		q := w.path((k + 1 + w.rng.IntN(namesPerWorker-1)) % namesPerWorker)
		w.rename(p, q)
	default:
		w.remove(p)
	}
}

// writeBlocks writes blocks [b0, b1) of f through an open handle and
// records one register write per block.
func (w *worker) writeBlocks(fh handle, f *file, b0, b1 int, what string) (seqs []uint64, err error) {
	buf := make([]byte, (b1-b0)*blockSize)
	for b := b0; b < b1; b++ {
		w.next++
		seq := uint64(w.id+1)<<40 | w.next
		fillBlock(buf[(b-b0)*blockSize:(b-b0+1)*blockSize], f.fid, b, seq)
		seqs = append(seqs, seq)
	}
	f.touched = max(f.touched, b1)
	if _, err = fh.WriteAt(buf, int64(b0)*blockSize); err == nil && w.fs.syncBeforeClose() {
		err = fh.Sync()
	}
	return seqs, err
}

func (w *worker) recordWrites(f *file, b0 int, seqs []uint64, what string, call, ret int64) {
	for i, s := range seqs {
		w.h.add(w.id, regOp{key: regKey{f.fid, b0 + i}, write: true, value: s, what: what}, 0, call, ret)
	}
}

func (w *worker) create(p string) {
	ctx, cancel := opCtx()
	defer cancel()
	w.next++
	f := &file{fid: uint64(w.id+1)<<40 | w.next}
	n := 1 + w.rng.IntN(maxBlocks)
	what := fmt.Sprintf("w%d (%s) create %s (file %d, %d blocks)", w.id, w.fs.kind(), p, f.fid, n)
	call := w.h.now()
	fh, ino, err := w.fs.create(ctx, p)
	var seqs []uint64
	if err == nil {
		f.inode = ino
		seqs, err = w.writeBlocks(fh, f, 0, n, what)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		w.recordWrites(f, 0, seqs, what, call, unknown)
		w.stats.failed.Add(1)
		if isExist(err) {
			w.stats.retriedAnswers.Add(1)
		}
		// The name was absent (only this worker makes it): whatever the
		// failed create left there goes, so the model knows the name again.
		w.removeUntilGone(p)
		return
	}
	w.recordWrites(f, 0, seqs, what, call, w.h.now())
	w.names[p] = f
	w.acked++
	w.stats.ops.Add(1)
	w.stats.creates.Add(1)
	w.stats.bytesWritten.Add(int64(n * blockSize))
}

func (w *worker) write(p string, f *file) {
	ctx, cancel := opCtx()
	defer cancel()
	b0 := w.rng.IntN(maxBlocks)
	b1 := min(maxBlocks, b0+1+w.rng.IntN(24))
	what := fmt.Sprintf("w%d (%s) write %s (file %d) blocks [%d,%d)", w.id, w.fs.kind(), p, f.fid, b0, b1)
	call := w.h.now()
	fh, ino, _, err := w.fs.open(ctx, p, true)
	var seqs []uint64
	if err == nil {
		if ino != f.inode {
			w.h.violate("%s: opened inode %d, the model has %d there", what, ino, f.inode)
		}
		seqs, err = w.writeBlocks(fh, f, b0, b1, what)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
	} else if isNotFound(err) {
		w.h.violate("%s: open: %v (the model has file %d there)", what, err, f.fid)
	}
	if err != nil {
		w.recordWrites(f, b0, seqs, what, call, unknown)
		w.stats.failed.Add(1)
		return
	}
	w.recordWrites(f, b0, seqs, what, call, w.h.now())
	w.acked++
	w.stats.ops.Add(1)
	w.stats.writes.Add(1)
	w.stats.bytesWritten.Add(int64((b1 - b0) * blockSize))
}

// truncate cuts (or extends) the file to a whole number of blocks, at
// least one (block 0 names the file): blocks past the new end read zeros.
func (w *worker) truncate(p string, f *file) {
	ctx, cancel := opCtx()
	defer cancel()
	n := 1 + w.rng.IntN(maxBlocks)
	what := fmt.Sprintf("w%d (%s) truncate %s (file %d) to %d blocks", w.id, w.fs.kind(), p, f.fid, n)
	call := w.h.now()
	err := w.fs.truncate(ctx, p, int64(n)*blockSize)
	ret := w.h.now()
	if err != nil {
		ret = unknown
		w.stats.failed.Add(1)
		if isNotFound(err) {
			w.h.violate("%s: %v (the model has file %d there)", what, err, f.fid)
		}
	} else {
		w.acked++
		w.stats.ops.Add(1)
		w.stats.truncates.Add(1)
	}
	for b := n; b < f.touched; b++ {
		w.h.add(w.id, regOp{key: regKey{f.fid, b}, write: true, value: 0, what: what}, 0, call, ret)
	}
}

func (w *worker) rename(src, dst string) {
	ctx, cancel := opCtx()
	defer cancel()
	f, g := w.names[src], w.names[dst]
	err := w.fs.rename(ctx, src, dst)
	if err == nil {
		delete(w.names, src)
		w.names[dst] = f
		w.acked++
		w.stats.ops.Add(1)
		w.stats.renames.Add(1)
		return
	}
	w.stats.failed.Add(1)
	if isNotFound(err) {
		w.stats.retriedAnswers.Add(1)
	}
	// Before: src has f, dst has g (or nothing). After: src empty, dst f.
	before := map[string]*file{src: f, dst: g}
	after := map[string]*file{src: nil, dst: f}
	got := w.resolve(fmt.Sprintf("rename %s -> %s", src, dst), src, dst)
	switch {
	case got == nil:
		// Cluster unreachable for the whole resolve window: a failure the
		// test reports (resolve recorded it).
	case sameFiles(got, before):
	case sameFiles(got, after):
		delete(w.names, src)
		w.names[dst] = f
	default:
		w.h.violate("w%d rename %s -> %s failed (%v) and left %v, neither before %v nor after %v", w.id, src, dst, err, inodes(got), inodes(before), inodes(after))
	}
}

func (w *worker) remove(p string) {
	ctx, cancel := opCtx()
	defer cancel()
	f := w.names[p]
	err := w.fs.remove(ctx, p)
	if err == nil {
		delete(w.names, p)
		w.acked++
		w.stats.ops.Add(1)
		w.stats.deletes.Add(1)
		return
	}
	w.stats.failed.Add(1)
	got := w.resolve("remove "+p, p)
	switch {
	case got == nil:
	case got[p] == nil:
		delete(w.names, p)
	case got[p].inode == f.inode:
	default:
		w.h.violate("w%d remove %s failed (%v) and left inode %d there; the model had %d", w.id, p, err, got[p].inode, f.inode)
	}
}

// removeUntilGone removes p until meta says it is not there.
func (w *worker) removeUntilGone(p string) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		ctx, cancel := opCtx()
		err := w.fs.remove(ctx, p)
		cancel()
		if err == nil || isNotFound(err) {
			delete(w.names, p)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.h.violate("w%d: could not remove %s (left by a failed create) within 2 minutes", w.id, p)
	w.names[p] = &file{} // unknown: never used again (inode 0 matches nothing)
}

// resolve stats the names until meta answers for all of them; the result
// maps each to a file of the model with that inode (or nil when absent);
// an inode the model does not know becomes a file with fid 0.
func (w *worker) resolve(what string, names ...string) map[string]*file {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		got := map[string]*file{}
		ok := true
		for _, p := range names {
			ctx, cancel := opCtx()
			ino, err := w.fs.stat(ctx, p)
			cancel()
			switch {
			case isNotFound(err):
				got[p] = nil
			case err != nil:
				ok = false
			default:
				got[p] = &file{inode: ino}
				for _, f := range w.names {
					if f != nil && f.inode == ino {
						got[p] = f
					}
				}
			}
		}
		if ok {
			return got
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.h.violate("w%d: %s failed and meta did not answer a stat within 2 minutes", w.id, what)
	return nil
}

func sameFiles(a, b map[string]*file) bool {
	for k := range b {
		x, y := a[k], b[k]
		if (x == nil) != (y == nil) || (x != nil && x.inode != y.inode) {
			return false
		}
	}
	return true
}

func inodes(m map[string]*file) string {
	var out []string
	for k, f := range m {
		if f == nil {
			out = append(out, k+"=absent")
		} else {
			out = append(out, fmt.Sprintf("%s=inode %d", k, f.inode))
		}
	}
	slices.Sort(out)
	return fmt.Sprint(out)
}

// read opens p read-only, reads it whole and records, per block up to
// maxBlocks, the write seq found (0 past the end). Failed reads are not
// recorded; bytes that no write produced are violations.
func (w *worker) read(p, kind string) (fid uint64, ok bool) {
	ctx, cancel := opCtx()
	defer cancel()
	call := w.h.now()
	fh, ino, size, err := w.fs.open(ctx, p, false)
	if err != nil {
		return 0, false
	}
	defer fh.Close()
	buf := make([]byte, size)
	n, err := fh.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, false
	}
	ret := w.h.now()
	w.stats.bytesRead.Add(int64(n))
	what := fmt.Sprintf("w%d (%s) %s %s (inode %d, %d bytes)", w.id, w.fs.kind(), kind, p, ino, size)
	if int64(n) < size {
		// End of file before the length the open saw: through FUSE the
		// length comes from fstat and the read is a later call, so a
		// truncate by the owner in between shortens it. The read saw
		// length n: blocks past it count as zeros, which porcupine
		// accepts only if a truncate could have made them so.
		w.stats.shortReads.Add(1)
		size = int64(n)
	}
	if size%blockSize != 0 || size > maxBlocks*blockSize {
		w.h.violate("%s: length is not a whole number of blocks up to %d", what, maxBlocks)
		return 0, false
	}
	if size == 0 {
		w.stats.emptyReads.Add(1)
		return 0, true // created, not yet written: no file id to check against
	}
	fid = blockFileID(buf[:blockSize])
	if fid == 0 {
		seq, derr := decodeBlock(buf[:blockSize], 0, 0)
		if derr == nil && seq == 0 {
			// Block 0 is zeros: the create's write has not landed (its
			// outcome is open) yet the length covers it.
			w.stats.emptyReads.Add(1)
			return 0, true
		}
		w.h.violate("%s: block 0 is no block header: %v", what, derr)
		return 0, false
	}
	w.probeZeroChunks(buf, ino, fid, what)
	for b := 0; b < maxBlocks; b++ {
		var seq uint64
		if int64(b+1)*blockSize <= size {
			var derr error
			if seq, derr = decodeBlock(buf[b*blockSize:(b+1)*blockSize], fid, b); derr != nil {
				w.h.violate("%s: block %d: %v", what, b, derr)
				continue
			}
		}
		w.h.add(w.id, regOp{key: regKey{fid, b}, value: 0, what: what}, seq, call, ret)
	}
	w.acked++
	w.stats.reads.Add(1)
	return fid, true
}

// probeZeroChunks probes the replicas of every whole chunk of buf that is
// all zeros (see probeChunk) and notes the answers under the file.
func (w *worker) probeZeroChunks(buf []byte, ino, fid uint64, what string) {
	if w.diag == nil {
		return
	}
	for off := 0; off+chunkSize <= len(buf); off += chunkSize {
		if bytes.Count(buf[off:off+chunkSize], []byte{0}) != chunkSize {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		note := probeChunk(ctx, w.diag, ino, uint32(off/chunkSize))
		cancel()
		w.h.note(fid, fmt.Sprintf("%s found chunk %d all zeros; %s", what, off/chunkSize, note))
	}
}
