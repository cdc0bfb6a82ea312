package meta

import (
	"context"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/kv"
)

// CloseOptions identify a write session to end.
type CloseOptions struct {
	Inode   uint64
	Session uint64 // 0: a read-only open, nothing to end
	// UpdateLength finalizes the file length from storage (the client
	// wrote through this session).
	UpdateLength bool
}

// Close ends a write session, finalizing the file's length from storage;
// the last close of a file unlinked while open removes it.
func (s *Server) Close(ctx context.Context, u User, opts CloseOptions) (Inode, error) {
	var out Inode
	err := s.withStorageLength(ctx, u, opts.Inode, opts.UpdateLength, func(t *txn, n *Inode, length storageLength) error {
		if opts.Session != 0 {
			k := sessionKey(n.ID, opts.Session)
			if _, ok, err := t.r.Get(k); err != nil {
				return err
			} else if !ok {
				return errcode.New(errcode.BadFile, "close inode %d: no write session %#x (closed, or pruned after the client's lease expired)", n.ID, opts.Session)
			}
			if err := t.tx.Clear(k); err != nil {
				return err
			}
		}
		if err := t.applyLength(n, length); err != nil {
			return err
		}
		out = *n
		if n.Nlink == 0 {
			return t.removeIfClosed(n)
		}
		return nil
	})
	return out, err
}

// Fsync finalizes the length of file inode from storage without ending
// its session.
func (s *Server) Fsync(ctx context.Context, u User, inode uint64) (Inode, error) {
	var out Inode
	err := s.withStorageLength(ctx, u, inode, true, func(t *txn, n *Inode, length storageLength) error {
		if err := t.applyLength(n, length); err != nil {
			return err
		}
		out = *n
		return nil
	})
	return out, err
}

// storageLength is a file's length as storage reported it, and the trim
// epoch of the inode when it was asked.
type storageLength struct {
	valid  bool // asked (storage configured, a file, the caller wants it)
	length uint64
	epoch  uint64
}

// errEpochMoved makes withStorageLength ask storage again: a truncate
// committed between the question and the transaction.
var errEpochMoved = errcode.New(errcode.Conflict, "file truncated while its length was asked from storage")

// maxLengthRounds bounds how often a close or fsync asks storage again
// because truncates keep landing in between.
const maxLengthRounds = 16

// withStorageLength runs fn in a transaction on inode id with the length
// storage holds (when want). The question goes to storage before the
// transaction (transaction bodies must not do I/O outside the KV: they may
// be re-run), after finishing any pending trim (else storage would still
// report bytes a truncate removed). The transaction checks that the trim
// epoch did not move since; if it did, a truncate committed in between and
// storage is asked again, so the length of a close never undoes a truncate.
func (s *Server) withStorageLength(ctx context.Context, u User, id uint64, want bool, fn func(t *txn, n *Inode, l storageLength) error) error {
	for range maxLengthRounds {
		l, err := s.askLength(ctx, id, want)
		if err != nil {
			return err
		}
		err = s.updateAs(ctx, u, func(t *txn) error {
			n, err := t.inode(id)
			if err != nil {
				return err
			}
			if l.valid && n.trimEpoch != l.epoch {
				return errEpochMoved
			}
			return fn(t, n, l)
		})
		if err != errEpochMoved {
			return err
		}
	}
	return errcode.New(errcode.Conflict, "inode %d: truncated %d times while its length was asked from storage", id, maxLengthRounds)
}

// askLength finishes a pending trim of file id, then asks storage how
// long the file is.
func (s *Server) askLength(ctx context.Context, id uint64, want bool) (storageLength, error) {
	if !want || s.cfg.Chunks == nil {
		return storageLength{}, nil
	}
	for {
		var n *Inode
		var trim *pendingTrim
		err := s.view(ctx, Root, func(t *txn) error {
			var err error
			if n, err = t.inode(id); err != nil || n.Type != TypeFile {
				return err
			}
			trim, err = t.pendingTrimOf(id)
			return err
		})
		if err != nil || n.Type != TypeFile {
			return storageLength{}, err
		}
		if trim != nil {
			if err := s.settleAny(ctx, id); err != nil {
				return storageLength{}, err
			}
			continue // read the epoch again: the record may have been replaced
		}
		length, err := s.cfg.Chunks.QueryLength(ctx, id, n.Layout)
		if err != nil {
			return storageLength{}, errcode.New(errcode.Unavailable, "file length of inode %d from storage: %v", id, err)
		}
		return storageLength{valid: true, length: length, epoch: n.trimEpoch}, nil
	}
}

// applyLength grows the recorded length to what storage holds. Lengths only
// grow here; truncate is the one way to shrink a file, and it trims the
// chunks too (trim.go), so storage never holds less than a truncate left.
func (t *txn) applyLength(n *Inode, l storageLength) error {
	if !l.valid || n.Type != TypeFile || l.length <= n.Size {
		return nil
	}
	n.Size, n.Mtime, n.Ctime = l.length, t.now, t.now
	return t.putInode(n)
}

// removeIfClosed removes an unlinked inode once no write session is left.
// Reading and writing the session marker makes two last closes conflict, so
// exactly one of them sees no other session and removes the file.
func (t *txn) removeIfClosed(n *Inode) error {
	// Read before write: engines record no read conflict for a key the
	// transaction has already written.
	open, err := t.hasSessions(n.ID)
	if err != nil || open {
		return err
	}
	if err := t.touchMarker(sessionPrefix(n.ID)); err != nil {
		return err
	}
	return t.removeInode(n)
}

// RenewClient extends the lease that keeps client's write sessions alive
// and returns its new expiry. Clients renew well within Config.ClientTTL.
func (s *Server) RenewClient(ctx context.Context, client string) (time.Time, error) {
	if client == "" {
		return time.Time{}, errInval("renew: empty client id")
	}
	var exp time.Time
	err := s.update(ctx, func(t *txn) error {
		exp = t.now.Add(s.cfg.ClientTTL)
		return t.tx.Set(clientKey(client), appendBE64(nil, uint64(exp.UnixNano())))
	})
	return exp, err
}

// PruneSessions ends the write sessions of clients whose lease expired, as
// a close without length update would (an unlinked file goes with its last
// session; its length stays what was last finalized). It returns the
// number of sessions ended.
func (s *Server) PruneSessions(ctx context.Context) (int, error) {
	type sessRef struct{ inode, sess uint64 }
	byClient := map[string][]sessRef{}
	begin, end := prefixRange(tagSession)
	for {
		var kvs []kv.KeyValue
		err := s.view(ctx, Root, func(t *txn) error {
			var err error
			kvs, err = t.r.GetRange(begin, end, kv.RangeOptions{Limit: 1024, Snapshot: true})
			return err
		})
		if err != nil {
			return 0, err
		}
		for _, e := range kvs {
			if len(e.Key) != 20 {
				continue
			}
			sv, err := decodeSession(e.Value)
			if err != nil {
				s.log.Warn("skipping corrupt session record", "key", e.Key, "err", err)
				continue
			}
			byClient[sv.Client] = append(byClient[sv.Client], sessRef{le64(e.Key[4:12]), be64(e.Key[12:20])})
		}
		if len(kvs) < 1024 {
			break
		}
		begin = append(append([]byte(nil), kvs[len(kvs)-1].Key...), 0)
	}
	pruned := 0
	for client, refs := range byClient {
		for _, r := range refs {
			var ended bool
			err := s.update(ctx, func(t *txn) error {
				ended = false
				v, ok, err := t.r.Get(clientKey(client))
				if err != nil {
					return err
				}
				if ok && len(v) == 8 && int64(be64(v)) > t.now.UnixNano() {
					return nil // lease alive (renewed meanwhile)
				}
				k := sessionKey(r.inode, r.sess)
				if _, ok, err := t.r.Get(k); err != nil || !ok {
					return err
				}
				if err := t.tx.Clear(k); err != nil {
					return err
				}
				ended = true
				n, ok, err := t.inodeOK(r.inode)
				if err != nil || !ok || n.Nlink > 0 {
					return err
				}
				return t.removeIfClosed(n)
			})
			if err != nil {
				return pruned, err
			}
			if ended {
				pruned++
				s.log.Info("pruned write session of expired client", "client", client, "inode", r.inode)
			}
		}
	}
	return pruned, nil
}
