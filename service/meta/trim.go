package meta

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/kv"
)

// Truncate and storage (docs/meta.md, "Truncate").
//
// Storage holds a file's bytes; meta holds its length. A truncate changes
// both, and the two cannot commit together, so the metadata transaction
// records the trim it owes storage (a TRIM key) next to the new length and
// bumps the inode's trim epoch; the trim runs after the commit and then
// clears the record. Whoever finds a record finishes it first: open for
// writing, close and fsync (before they ask storage for the length), a
// later truncate (which folds it into its own), and the background loop.
// So a crash between the commit and the trim leaves a record, never a file
// whose old bytes come back on the next extend or close.
//
// One runner at a time: a record carries a claim (an owner id and an
// expiry). Only the holder of a live claim runs the record's trim, and
// only the holder clears the record, after its trim returned; everybody
// else who needs the trim done (an open for writing, close, fsync) waits
// for the record to go away or its claim to expire, then claims it. Two
// runners of one trim once raced: a second runner (the background loop)
// still cutting chunks after the first had cleared the record, and after
// a writer had opened and written past the new length, removed
// acknowledged data (found by the chaos harness: a write's chunk gone on
// every replica). A runner's storage calls are bounded by trimRunTimeout,
// well inside trimClaimTTL, so a claim never expires while its holder's
// calls are still out; a runner that fails releases its claim at once.
//
// Close and fsync ask storage for the length outside their transaction;
// the transaction applies it only if the trim epoch is still the one read
// before asking, so a truncate committed in between is never undone.

const (
	// trimClaimTTL is how long a claim holds; a claim older than that
	// belongs to a runner that died, and may be taken over.
	trimClaimTTL = 60 * time.Second
	// trimRunTimeout bounds one runner's storage calls.
	trimRunTimeout = 20 * time.Second
	// trimWaitPoll is how often a waiter looks at a record claimed by
	// someone else.
	trimWaitPoll = 20 * time.Millisecond
)

// pendingTrim is the value of a TRIM key: cut the file's chunks to Length.
type pendingTrim struct {
	Epoch  uint64 // the inode's trimEpoch when recorded
	Length uint64
	Layout Layout
	// Owner and Until: the claim (0 = unclaimed). Owner is random per run.
	Owner uint64
	Until time.Time
	// mine: this call claimed it (not stored).
	mine bool
}

const (
	trimV1Len = 17 + layoutLen // version 1: no claim
	trimV2Len = trimV1Len + 16
)

func (p pendingTrim) encode() []byte {
	b := []byte{2}
	b = binary.BigEndian.AppendUint64(b, p.Epoch)
	b = binary.BigEndian.AppendUint64(b, p.Length)
	b = appendLayout(b, p.Layout)
	b = binary.BigEndian.AppendUint64(b, p.Owner)
	var until int64
	if p.Owner != 0 {
		until = p.Until.UnixNano()
	}
	return binary.BigEndian.AppendUint64(b, uint64(until))
}

func decodePendingTrim(b []byte) (pendingTrim, error) {
	ok := (len(b) == trimV1Len && b[0] == 1) || (len(b) == trimV2Len && b[0] == 2)
	if !ok {
		return pendingTrim{}, fmt.Errorf("corrupt pending trim record (%d bytes)", len(b))
	}
	p := pendingTrim{Epoch: binary.BigEndian.Uint64(b[1:]), Length: binary.BigEndian.Uint64(b[9:]), Layout: decodeLayout(b[17:])}
	if b[0] == 2 {
		p.Owner = binary.BigEndian.Uint64(b[trimV1Len:])
		if p.Owner != 0 {
			p.Until = time.Unix(0, int64(binary.BigEndian.Uint64(b[trimV1Len+8:])))
		}
	}
	return p, nil
}

// claimable: nobody holds a live claim on p at now.
func (p *pendingTrim) claimable(now time.Time) bool {
	return p.Owner == 0 || !now.Before(p.Until)
}

// claim makes p this call's, from now.
func (p *pendingTrim) claim(now time.Time) {
	p.Owner, p.Until, p.mine = rand.Uint64()|1, now.Add(trimClaimTTL), true
}

// pendingTrimOf reads inode id's pending trim, if any.
func (t *txn) pendingTrimOf(id uint64) (*pendingTrim, error) {
	v, ok, err := t.r.Get(trimKey(id))
	if err != nil || !ok {
		return nil, err
	}
	p, err := decodePendingTrim(v)
	if err != nil {
		return nil, errcode.New(errcode.Internal, "inode %d: %v", id, err)
	}
	return &p, nil
}

// setLength gives file n the length size as truncate does: the length and
// times change, the trim epoch moves, and a trim to size is recorded,
// claimed by the caller. A trim still pending folds in when size is not
// past its length: cutting to the smaller length is what both truncates
// together leave. A size past it is refused (trimPendingError): the new
// length would let readers see bytes that trim has still to cut (the
// chaos harness read them back after a failed truncate to 1 block and a
// truncate to 17), so the caller finishes that trim first. If a runner is still
// cutting to the old length, the new record keeps its claim: the runner,
// seeing the record replaced when it is done, hands the claim back without
// clearing, and the caller (waiting in settleTrim) then runs the new trim.
// Otherwise that runner could still be cutting after the new trim cleared
// the record and a writer had written. The caller writes n and, after the
// commit, calls settleTrim with the record returned.
func (t *txn) setLength(n *Inode, size uint64) (*pendingTrim, error) {
	p := pendingTrim{Length: size, Layout: n.Layout}
	if t.s.cfg.Chunks != nil {
		old, err := t.pendingTrimOf(n.ID)
		if err != nil {
			return nil, err
		}
		if old != nil {
			if size > old.Length {
				// Readers would see up to size while storage may still hold
				// the bytes past old.Length that the pending trim cuts.
				return nil, trimPendingError{inode: n.ID}
			}
			p.Length = min(old.Length, size)
			if !old.claimable(t.now) {
				p.Owner, p.Until = old.Owner, old.Until
			}
		}
	}
	n.trimEpoch++
	p.Epoch = n.trimEpoch
	n.Size, n.Mtime, n.Ctime = size, t.now, t.now
	if t.s.cfg.Chunks == nil {
		return nil, nil // no storage to trim
	}
	if p.Owner == 0 {
		p.claim(t.now)
	}
	if err := t.tx.Set(trimKey(n.ID), p.encode()); err != nil {
		return nil, err
	}
	return &p, nil
}

// trimPendingError: a truncate would set a length past a pending trim's;
// the caller finishes that trim (settleAny) and runs its transaction again.
type trimPendingError struct{ inode uint64 }

func (e trimPendingError) Error() string {
	return fmt.Sprintf("inode %d: an earlier truncate's trim is still pending", e.inode)
}

// settleTrim returns once inode id has no trim pending: p is what the
// caller's committed transaction found or recorded (nil: nothing). A
// record the caller claimed is run at once; one claimed by another runner
// is waited for (settleAny).
func (s *Server) settleTrim(ctx context.Context, id uint64, p *pendingTrim) error {
	if p == nil || s.cfg.Chunks == nil {
		return nil
	}
	if p.mine {
		if err := s.runTrim(ctx, id, p); err != nil {
			return err
		}
	}
	return s.settleAny(ctx, id)
}

// settleAny finishes or waits out whatever trim inode id has pending.
func (s *Server) settleAny(ctx context.Context, id uint64) error {
	if s.cfg.Chunks == nil {
		return nil
	}
	for {
		p, err := s.claimTrim(ctx, id, false)
		if err != nil || p == nil {
			return err
		}
		if p.mine {
			if err := s.runTrim(ctx, id, p); err != nil {
				return err
			}
			continue // read again: a later truncate may have replaced it
		}
		select {
		case <-ctx.Done():
			return errcode.New(errcode.CodeOf(ctx.Err()), "inode %d: waiting for a trim another call is running: %v", id, ctx.Err())
		case <-time.After(trimWaitPoll):
		}
	}
}

// claimTrim claims inode id's pending trim if nobody holds a live claim
// on it. It returns nil when there is none, the record with mine set when
// it claimed it, and the record as found otherwise. background: also
// leave alone a file somebody has open (its handles finish the trim, and
// a writer's bytes past the new length must not be cut under it).
func (s *Server) claimTrim(ctx context.Context, id uint64, background bool) (*pendingTrim, error) {
	var out *pendingTrim
	err := s.update(ctx, func(t *txn) error {
		out = nil
		p, err := t.pendingTrimOf(id)
		if err != nil || p == nil {
			return err
		}
		out = p
		if !p.claimable(t.now) {
			return nil
		}
		if background {
			sp := sessionPrefix(id)
			open, err := t.r.GetRange(sp, kv.PrefixEnd(sp), kv.RangeOptions{Limit: 1})
			if err != nil || len(open) > 0 {
				return err
			}
		}
		p.claim(t.now)
		return t.tx.Set(trimKey(id), p.encode())
	})
	return out, err
}

// runTrim cuts inode id's chunks as p (claimed by this call) says, then
// clears the record if it is still p's; on failure it releases the claim
// so that the next caller can retry at once. TruncateChunks is
// idempotent, so a trim that failed half-way is simply run again.
func (s *Server) runTrim(ctx context.Context, id uint64, p *pendingTrim) error {
	rctx, cancel := context.WithTimeout(ctx, trimRunTimeout)
	err := s.cfg.Chunks.TruncateChunks(rctx, id, p.Layout, p.Length)
	cancel()
	if err != nil {
		_ = s.update(context.WithoutCancel(ctx), func(t *txn) error {
			cur, err := t.pendingTrimOf(id)
			if err != nil || cur == nil || cur.Owner != p.Owner {
				return err
			}
			cur.Owner = 0
			return t.tx.Set(trimKey(id), cur.encode())
		})
		return errcode.New(errcode.Unavailable,
			"trim inode %d to %d bytes on storage: %v (the new length is committed; the trim stays pending and is finished before the file is opened for writing, closed, fsynced or truncated again)",
			id, p.Length, err)
	}
	return s.update(ctx, func(t *txn) error {
		cur, err := t.pendingTrimOf(id)
		if err != nil || cur == nil || cur.Owner != p.Owner {
			return err // our claim expired and another runner took it
		}
		if cur.Epoch != p.Epoch {
			// A later truncate replaced it while we ran, keeping our
			// claim until now: hand it over, its caller runs it.
			cur.Owner = 0
			return t.tx.Set(trimKey(id), cur.encode())
		}
		return t.tx.Clear(trimKey(id))
	})
}

// FinishPendingTrims finishes every trim left pending (by a server that died
// between a truncate's commit and its trim, or whose trim failed) that
// nobody else is running and no open handle will finish. Run calls it with
// the collector; it returns how many it finished.
func (s *Server) FinishPendingTrims(ctx context.Context) (int, error) {
	if s.cfg.Chunks == nil {
		return 0, nil
	}
	var kvs []kv.KeyValue
	begin, end := prefixRange(tagTrim)
	if err := s.view(ctx, Root, func(t *txn) error {
		var err error
		kvs, err = t.r.GetRange(begin, end, kv.RangeOptions{Limit: 1024, Snapshot: true})
		return err
	}); err != nil {
		return 0, err
	}
	done := 0
	var firstErr error
	for _, e := range kvs {
		if len(e.Key) != len(tagTrim)+8 {
			continue
		}
		id := be64(e.Key[len(tagTrim):])
		p, err := s.claimTrim(ctx, id, true)
		if err == nil && (p == nil || !p.mine) {
			continue // gone, running elsewhere, or open
		}
		if err == nil {
			err = s.runTrim(ctx, id, p)
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		done++
	}
	return done, firstErr
}
