package meta

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"syscall"

	"github.com/emberfs/emberfs/internal/errcode"
)

// Advisory file locks (flock(2) and fcntl(2) byte-range locks) live in meta
// so that they hold across clients and mounts. All locks of one inode are
// one record (LOCK + id), so every lock operation on a file is one
// transaction that conflicts with the others on that file and nothing else.
//
// A lock belongs to a client (its meta lease, as for write sessions) and an
// owner inside it (the kernel's lock owner: the process's file table for
// fcntl locks, the open file description for flock and OFD locks). A lock
// whose client's lease has expired is dead: it is ignored and dropped by the
// next operation on the file, so a client that dies releases its locks
// after Config.ClientTTL without anyone cleaning up.

// LockType is the kind of a lock request.
type LockType uint8

const (
	LockRead   LockType = 1 // shared (F_RDLCK, LOCK_SH)
	LockWrite  LockType = 2 // exclusive (F_WRLCK, LOCK_EX)
	LockUnlock LockType = 3 // remove (F_UNLCK, LOCK_UN)
)

func (t LockType) String() string {
	switch t {
	case LockRead:
		return "read"
	case LockWrite:
		return "write"
	case LockUnlock:
		return "unlock"
	}
	return fmt.Sprintf("locktype(%d)", uint8(t))
}

// LockToEOF as End: the lock reaches past the end of the file, however far
// it grows (fcntl l_len 0).
const LockToEOF = math.MaxUint64

// FileLock is one lock, or one lock request.
type FileLock struct {
	Client string // the client holding it; its lease keeps the lock
	Owner  uint64 // the lock owner inside the client
	// Flock marks a flock(2) lock (always the whole file). flock and fcntl
	// locks do not see each other, as on Linux.
	Flock bool
	Type  LockType
	Start uint64
	End   uint64 // inclusive; LockToEOF: to the end of the file
	Pid   uint32 // the holder's process id (reported by F_GETLK)
}

func (l FileLock) sameOwner(o FileLock) bool {
	return l.Client == o.Client && l.Owner == o.Owner && l.Flock == o.Flock
}

func (l FileLock) overlaps(o FileLock) bool { return l.Start <= o.End && o.Start <= l.End }

func (l FileLock) conflicts(o FileLock) bool {
	return l.Flock == o.Flock && !l.sameOwner(o) && l.overlaps(o) && (l.Type == LockWrite || o.Type == LockWrite)
}

// LockRequest sets (or with Test, tests) Lock on Inode.
type LockRequest struct {
	Inode uint64
	Lock  FileLock
	// Test asks only whether Lock could be set (F_GETLK): the result names
	// the first lock in the way, the file is not changed.
	Test bool
}

// LockResult answers a test: Conflict is the first lock in the way, nil if
// the lock could be set.
type LockResult struct {
	Conflict *FileLock
}

// errLockHeld is the answer to a lock that another owner's lock blocks:
// EAGAIN, as fcntl(F_SETLK) and flock(LOCK_NB) return.
func errLockHeld(inode uint64, l, by FileLock) error {
	return errcode.WithErrno(errcode.Busy, syscall.EAGAIN, "lock %s [%d,%d] of inode %d: held by client %s (owner %#x, pid %d, %s [%d,%d])",
		l.Type, l.Start, l.End, inode, by.Client, by.Owner, by.Pid, by.Type, by.Start, by.End)
}

func validateLock(r LockRequest) error {
	l := r.Lock
	switch {
	case l.Client == "":
		return errInval("lock inode %d: no client id", r.Inode)
	case l.Type != LockRead && l.Type != LockWrite && l.Type != LockUnlock:
		return errInval("lock inode %d: invalid lock type %d", r.Inode, l.Type)
	case l.Start > l.End:
		return errInval("lock inode %d: range start %d after end %d", r.Inode, l.Start, l.End)
	case r.Test && l.Type == LockUnlock:
		return errInval("lock inode %d: testing an unlock", r.Inode)
	}
	return nil
}

// Lock sets, removes or tests an advisory lock. A lock another live owner
// holds in the way fails with EAGAIN (errcode.Busy); waiting (F_SETLKW) is
// the caller's loop. Setting a lock replaces the owner's own locks in its
// range, splitting them as fcntl does; an unlock of the whole range drops
// every lock of the owner (close, or a dead handle).
func (s *Server) Lock(ctx context.Context, u User, r LockRequest) (LockResult, error) {
	if err := validateLock(r); err != nil {
		return LockResult{}, err
	}
	if r.Lock.Flock {
		r.Lock.Start, r.Lock.End = 0, LockToEOF
	}
	var out LockResult
	run := s.updateAs
	if r.Test {
		run = s.view
	}
	err := run(ctx, u, func(t *txn) error {
		out = LockResult{}
		if _, err := t.inode(r.Inode); err != nil {
			return err
		}
		locks, dropped, err := t.liveLocks(r.Inode)
		if err != nil {
			return err
		}
		if r.Lock.Type != LockUnlock {
			for i := range locks {
				if locks[i].conflicts(r.Lock) {
					if r.Test {
						c := locks[i]
						out.Conflict = &c
						return nil
					}
					if dropped {
						// Keep the cleanup even though the request fails.
						if err := t.putLocks(r.Inode, locks); err != nil {
							return err
						}
					}
					return errLockHeld(r.Inode, r.Lock, locks[i])
				}
			}
		}
		if r.Test {
			return nil
		}
		next := applyLock(locks, r.Lock)
		if r.Lock.Type != LockUnlock {
			if err := t.keepLease(r.Lock.Client); err != nil {
				return err
			}
		} else if !dropped && len(next) == len(locks) && sameLocks(next, locks) {
			return nil // nothing held: no write (every close of a locked file unlocks)
		}
		return t.putLocks(r.Inode, next)
	})
	return out, err
}

func sameLocks(a, b []FileLock) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// applyLock returns locks with l applied for l's owner: the owner's locks
// in l's range are cut out, l (unless an unlock) put in, and the owner's
// locks of one type that touch are merged.
func applyLock(locks []FileLock, l FileLock) []FileLock {
	var out []FileLock
	for _, x := range locks {
		if !x.sameOwner(l) || !x.overlaps(l) {
			out = append(out, x)
			continue
		}
		if x.Start < l.Start {
			left := x
			left.End = l.Start - 1
			out = append(out, left)
		}
		if x.End > l.End {
			right := x
			right.Start = l.End + 1
			out = append(out, right)
		}
	}
	if l.Type == LockUnlock {
		return out
	}
	// Merge with the owner's same-type locks that overlap or touch.
	merged := l
	var rest []FileLock
	for _, x := range out {
		if x.sameOwner(l) && x.Type == l.Type && (x.overlaps(merged) || touching(x, merged)) {
			merged.Start = min(merged.Start, x.Start)
			merged.End = max(merged.End, x.End)
			continue
		}
		rest = append(rest, x)
	}
	rest = append(rest, merged)
	sort.Slice(rest, func(i, j int) bool { return rest[i].Start < rest[j].Start })
	return rest
}

// touching reports whether a and b are adjacent (one ends where the other
// begins).
func touching(a, b FileLock) bool {
	return (a.End != LockToEOF && a.End+1 == b.Start) || (b.End != LockToEOF && b.End+1 == a.Start)
}

// liveLocks reads the locks of inode id, leaving out those whose client's
// lease has expired (dropped reports whether any were).
func (t *txn) liveLocks(id uint64) (locks []FileLock, dropped bool, err error) {
	v, ok, err := t.r.Get(lockKey(id))
	if err != nil || !ok {
		return nil, false, err
	}
	all, err := decodeLocks(v)
	if err != nil {
		return nil, false, errcode.New(errcode.Internal, "locks of inode %d: %v", id, err)
	}
	alive := map[string]bool{}
	for _, l := range all {
		live, seen := alive[l.Client]
		if !seen {
			exp, err := t.leaseExpiry(l.Client)
			if err != nil {
				return nil, false, err
			}
			live = exp > t.now.UnixNano()
			alive[l.Client] = live
		}
		if live {
			locks = append(locks, l)
		} else {
			dropped = true
		}
	}
	return locks, dropped, nil
}

// leaseExpiry is client's lease expiry (unix ns; 0: none).
func (t *txn) leaseExpiry(client string) (int64, error) {
	v, ok, err := t.r.Get(clientKey(client))
	if err != nil || !ok || len(v) != 8 {
		return 0, err
	}
	return int64(be64(v)), nil
}

// keepLease makes sure the locking client has a lease that outlives this
// transaction by at least half the TTL: a client's renewal loop may not
// have run yet, and a lock without a live lease would count as dead.
// Writing only when needed keeps lock operations of one client on
// different files from conflicting on its lease key.
func (t *txn) keepLease(client string) error {
	exp, err := t.leaseExpiry(client)
	if err != nil {
		return err
	}
	if exp > t.now.Add(t.s.cfg.ClientTTL/2).UnixNano() {
		return nil
	}
	return t.tx.Set(clientKey(client), appendBE64(nil, uint64(t.now.Add(t.s.cfg.ClientTTL).UnixNano())))
}

func (t *txn) putLocks(id uint64, locks []FileLock) error {
	if len(locks) == 0 {
		return t.tx.Clear(lockKey(id))
	}
	return t.tx.Set(lockKey(id), encodeLocks(locks))
}

// Lock record: version byte 1, then per lock: client length (BE16),
// client, owner (BE64), flags (bit 0: flock), type, start, end (BE64),
// pid (BE32).
func encodeLocks(locks []FileLock) []byte {
	b := []byte{1}
	for _, l := range locks {
		b = binary.BigEndian.AppendUint16(b, uint16(len(l.Client)))
		b = append(b, l.Client...)
		b = binary.BigEndian.AppendUint64(b, l.Owner)
		var fl byte
		if l.Flock {
			fl = 1
		}
		b = append(b, fl, byte(l.Type))
		b = binary.BigEndian.AppendUint64(b, l.Start)
		b = binary.BigEndian.AppendUint64(b, l.End)
		b = binary.BigEndian.AppendUint32(b, l.Pid)
	}
	return b
}

func decodeLocks(b []byte) ([]FileLock, error) {
	if len(b) == 0 || b[0] != 1 {
		return nil, fmt.Errorf("corrupt lock record (version)")
	}
	b = b[1:]
	var out []FileLock
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, fmt.Errorf("corrupt lock record (truncated)")
		}
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if len(b) < n+8+2+16+4 {
			return nil, fmt.Errorf("corrupt lock record (truncated)")
		}
		l := FileLock{Client: string(b[:n])}
		b = b[n:]
		l.Owner = binary.BigEndian.Uint64(b)
		l.Flock = b[8]&1 != 0
		l.Type = LockType(b[9])
		l.Start = binary.BigEndian.Uint64(b[10:])
		l.End = binary.BigEndian.Uint64(b[18:])
		l.Pid = binary.BigEndian.Uint32(b[26:])
		b = b[30:]
		out = append(out, l)
	}
	return out, nil
}

// ReserveAppend gives an O_APPEND write of length bytes its offset: the
// end of the file as meta knows it (grown first to what storage holds),
// and moves the end past the reservation in the same transaction, so
// appends from any number of clients land one after another instead of
// over each other. session must be an open session of the inode (the
// caller's open was checked then). The bytes reserved read as zeros until
// the writer's data lands; a writer that dies before writing leaves them
// zero.
func (s *Server) ReserveAppend(ctx context.Context, u User, inode, session, length uint64) (uint64, error) {
	var off uint64
	err := s.withStorageLength(ctx, u, inode, true, func(t *txn, n *Inode, l storageLength) error {
		if n.Type != TypeFile {
			return errInval("append to inode %d: not a regular file (%s)", inode, n.Type)
		}
		if _, ok, err := t.r.Get(sessionKey(inode, session)); err != nil {
			return err
		} else if !ok {
			return errcode.New(errcode.BadFile, "append to inode %d: no open session %#x", inode, session)
		}
		if l.valid && l.length > n.Size {
			n.Size = l.length
		}
		off = n.Size
		n.Size += length
		n.Mtime, n.Ctime = t.now, t.now
		return t.putInode(n)
	})
	return off, err
}
