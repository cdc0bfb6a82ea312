package meta

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/kv"
	"golang.org/x/sync/errgroup"
)

// CollectGarbage handles up to limit entries of the removal queue: it
// deletes the chunks of removed files through the ChunkStore (several at
// once) and empties detached directories batch by batch. It returns how
// many queue entries it finished. Several servers may collect at once:
// every step is idempotent and each queue entry is cleared transactionally.
func (s *Server) CollectGarbage(ctx context.Context, limit int) (int, error) {
	if limit <= 0 {
		limit = 1024
	}
	var kvs []kv.KeyValue
	begin, end := prefixRange(tagGC)
	err := s.view(ctx, Root, func(t *txn) error {
		var err error
		kvs, err = t.r.GetRange(begin, end, kv.RangeOptions{Limit: limit, Snapshot: true})
		return err
	})
	if err != nil || len(kvs) == 0 {
		return 0, err
	}
	// One failed entry does not stop the others: the group collects the
	// first error while every entry is tried.
	var (
		done  atomic.Int64
		group errgroup.Group
	)
	group.SetLimit(16)
	for _, e := range kvs {
		id := be64(e.Key[len(tagGC):])
		g, err := decodeGCEntry(e.Value)
		if err != nil {
			s.log.Error("corrupt removal queue entry", "inode", id, "err", err)
			continue
		}
		group.Go(func() error {
			var err error
			if g.Type == TypeDir {
				err = s.drainDetached(ctx, id)
			} else {
				err = s.collectFile(ctx, id, g)
			}
			if err == nil {
				done.Add(1)
			}
			return err
		})
	}
	err = group.Wait()
	return int(done.Load()), err
}

func (s *Server) collectFile(ctx context.Context, id uint64, g gcEntry) error {
	if s.cfg.Chunks != nil {
		if err := s.cfg.Chunks.RemoveChunks(ctx, id, g.Layout); err != nil {
			return errcode.New(errcode.Unavailable, "removing chunks of inode %d: %v", id, err)
		}
	}
	return s.update(ctx, func(t *txn) error { return t.tx.Clear(gcKey(id)) })
}

// drainDetached removes the entries of detached directory id in batches:
// subdirectories are detached in turn (queued), files lose a link (and go
// to the queue when it was their last one); the directory goes when empty.
func (s *Server) drainDetached(ctx context.Context, id uint64) error {
	batch := s.cfg.GCBatch
	for {
		finished := false
		err := s.update(ctx, func(t *txn) error {
			finished = false
			if _, ok, err := t.r.Get(gcKey(id)); err != nil || !ok {
				finished = true // another server finished it
				return err
			}
			dir, ok, err := t.inodeOK(id)
			if err != nil {
				return err
			}
			b, e := dirRange(id)
			kvs, err := t.r.GetRange(b, e, kv.RangeOptions{Limit: batch})
			if err != nil {
				return err
			}
			for _, item := range kvs {
				if err := t.tx.Clear(item.Key); err != nil {
					return err
				}
				d, err := decodeDentry(item.Value)
				if err != nil {
					return errcode.New(errcode.Internal, "detached directory %d: %v", id, err)
				}
				c, ok, err := t.inodeOK(d.ID)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				if c.Type == TypeDir {
					if err := t.detach(c); err != nil {
						return err
					}
					continue
				}
				if err := t.dropLink(c); err != nil {
					return err
				}
			}
			if len(kvs) == batch {
				return nil
			}
			finished = true
			if ok {
				if err := t.removeInode(dir); err != nil {
					return err
				}
			}
			return t.tx.Clear(gcKey(id))
		})
		if err != nil || finished {
			return err
		}
	}
}

// Run runs the background work of a server until ctx ends: the removal
// collector and the finishing of pending trims (every GCInterval, and
// promptly after removals) and the pruning
// of sessions of dead clients (every PruneInterval).
func (s *Server) Run(ctx context.Context) {
	gcTick := time.NewTicker(s.cfg.GCInterval)
	defer gcTick.Stop()
	pruneTick := time.NewTicker(s.cfg.PruneInterval)
	defer pruneTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.gcKick:
		case <-gcTick.C:
		case <-pruneTick.C:
			if n, err := s.PruneSessions(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("session pruning failed", "err", err)
			} else if n > 0 {
				s.log.Info("pruned sessions of expired clients", "sessions", n)
			}
			continue
		}
		if _, err := s.FinishPendingTrims(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("finishing pending trims failed", "err", err)
		}
		for ctx.Err() == nil {
			n, err := s.CollectGarbage(ctx, 1024)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("garbage collection failed", "err", err)
				}
				break
			}
			if n == 0 {
				break
			}
		}
	}
}
