package meta

import (
	"context"
	"encoding/binary"
	"fmt"

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
// Close and fsync ask storage for the length outside their transaction;
// the transaction applies it only if the trim epoch is still the one read
// before asking, so a truncate committed in between is never undone.

// pendingTrim is the value of a TRIM key: cut the file's chunks to Length.
type pendingTrim struct {
	Epoch  uint64 // the inode's trimEpoch when recorded
	Length uint64
	Layout Layout
}

func (p pendingTrim) encode() []byte {
	b := []byte{1}
	b = binary.BigEndian.AppendUint64(b, p.Epoch)
	b = binary.BigEndian.AppendUint64(b, p.Length)
	return appendLayout(b, p.Layout)
}

func decodePendingTrim(b []byte) (pendingTrim, error) {
	if len(b) != 17+layoutLen || b[0] != 1 {
		return pendingTrim{}, fmt.Errorf("corrupt pending trim record (%d bytes)", len(b))
	}
	return pendingTrim{Epoch: binary.BigEndian.Uint64(b[1:]), Length: binary.BigEndian.Uint64(b[9:]), Layout: decodeLayout(b[17:])}, nil
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
// times change, the trim epoch moves, and a trim to size is recorded. A
// trim still pending folds in: cutting to the smaller of the two lengths
// is what both truncates together leave (bytes past the first one read as
// zeros up to the second). The caller writes n and, after the commit,
// calls finishTrim with the record returned.
func (t *txn) setLength(n *Inode, size uint64) (*pendingTrim, error) {
	p := pendingTrim{Length: size, Layout: n.Layout}
	if t.s.cfg.Chunks != nil {
		old, err := t.pendingTrimOf(n.ID)
		if err != nil {
			return nil, err
		}
		if old != nil {
			p.Length = min(old.Length, size)
		}
	}
	n.trimEpoch++
	p.Epoch = n.trimEpoch
	n.Size, n.Mtime, n.Ctime = size, t.now, t.now
	if t.s.cfg.Chunks == nil {
		return nil, nil // no storage to trim
	}
	if err := t.tx.Set(trimKey(n.ID), p.encode()); err != nil {
		return nil, err
	}
	return &p, nil
}

// finishTrim cuts inode id's chunks as p says and clears the record unless
// a later truncate replaced it meanwhile (that one finishes its own).
// TruncateChunks is idempotent, so finishing a record twice is harmless.
func (s *Server) finishTrim(ctx context.Context, id uint64, p *pendingTrim) error {
	if p == nil || s.cfg.Chunks == nil {
		return nil
	}
	if err := s.cfg.Chunks.TruncateChunks(ctx, id, p.Layout, p.Length); err != nil {
		return errcode.New(errcode.Unavailable,
			"trim inode %d to %d bytes on storage: %v (the new length is committed; the trim stays pending and is finished before the file is opened for writing, closed, fsynced or truncated again)",
			id, p.Length, err)
	}
	return s.update(ctx, func(t *txn) error {
		cur, err := t.pendingTrimOf(id)
		if err != nil || cur == nil || cur.Epoch != p.Epoch {
			return err
		}
		return t.tx.Clear(trimKey(id))
	})
}

// finishPendingTrim finishes inode id's pending trim, if any.
func (s *Server) finishPendingTrim(ctx context.Context, id uint64) error {
	if s.cfg.Chunks == nil {
		return nil
	}
	var p *pendingTrim
	if err := s.view(ctx, Root, func(t *txn) error {
		var err error
		p, err = t.pendingTrimOf(id)
		return err
	}); err != nil {
		return err
	}
	return s.finishTrim(ctx, id, p)
}

// FinishPendingTrims finishes every trim left pending (by a server that died
// between a truncate's commit and its trim, or whose trim failed). Run calls
// it with the collector; it returns how many it finished.
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
		p, err := decodePendingTrim(e.Value)
		var skip bool
		if err == nil {
			skip, err = s.trimIsForeground(ctx, id, p)
		}
		if err == nil && skip {
			continue
		}
		if err == nil {
			err = s.finishTrim(ctx, id, &p)
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

// trimIsForeground reports whether the background must leave inode id's
// trim record p alone. The record read above may be one a foreground call
// (the truncate itself, an open, close or fsync) is finishing right now:
// running the trim again after that call has returned would cut bytes
// written since (a write after a truncate, then this late trim, lost
// acknowledged data in tests/client). So the background re-reads the
// record and takes it only if it is unchanged and nobody has the file open:
// while it is open, its own handles finish it (open for writing, close,
// fsync, truncate). A file opened between this check and the trim can
// still race it; the window is one storage call, not a collector period.
func (s *Server) trimIsForeground(ctx context.Context, id uint64, p pendingTrim) (bool, error) {
	skip := false
	err := s.view(ctx, Root, func(t *txn) error {
		cur, err := t.pendingTrimOf(id)
		if err != nil {
			return err
		}
		if cur == nil || cur.Epoch != p.Epoch {
			skip = true
			return nil
		}
		sp := sessionPrefix(id)
		open, err := t.r.GetRange(sp, kv.PrefixEnd(sp), kv.RangeOptions{Limit: 1})
		skip = len(open) > 0
		return err
	})
	return skip, err
}
