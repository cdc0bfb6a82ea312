package meta

import (
	"encoding/binary"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/kv"
)

// Directory mtime/ctime without serialising a directory's creates.
//
// POSIX says adding or removing an entry changes the directory's mtime and
// ctime. Writing them into the directory's inode would make every two
// creates in one directory conflict (each reads the inode for its
// permission check, and would write it), which is why 3FS skips them.
// Instead, an operation that adds or removes entries of a directory writes
// its time, blind (no read), to a *change record* of that directory:
//
//	DTIM + dir(BE64) + writer(BE64) -> seconds(BE64) + nanoseconds(BE32)
//
// where writer is a random id of the meta server (Server.writer). Blind
// writes never conflict, so creates stay as concurrent as before; a server
// overwrites its own record, so a directory has at most one record per
// meta server that changed it. Whoever reports a directory's attributes
// (stat, lookup, readdir with stats, setattr) merges them: mtime and ctime
// are the largest of the inode's and the records' (max-merge, so the order
// in which records commit does not matter across servers).
//
// SetAttr of a directory folds the records into the inode and clears them
// before applying its change, so an explicit older mtime (touch -d, tar
// restoring a directory's time) wins over earlier entry changes. It reads
// the records, so it conflicts with concurrent entry changes, which is
// rare and correct. Removing a directory clears its records.
//
// Within one server, two concurrent changes may commit in the other order
// than their timestamps, leaving the earlier of two times taken
// microseconds apart; times never go back further than that.

var tagDirTime = []byte("DTIM")

func dirTimePrefix(dir uint64) []byte {
	k := make([]byte, 0, 12)
	k = append(k, tagDirTime...)
	return binary.BigEndian.AppendUint64(k, dir)
}

func dirTimeKey(dir, writer uint64) []byte {
	return binary.BigEndian.AppendUint64(dirTimePrefix(dir), writer)
}

// dirChanged records that an entry of directory dir was added or removed
// now (a blind write: see above).
func (t *txn) dirChanged(dir uint64) error {
	return t.tx.Set(dirTimeKey(dir, t.s.writer), appendTime(nil, t.now))
}

// withDirTimes merges directory n's change records into its mtime and
// ctime (a no-op for other types). Snapshot reads: a reader must not
// conflict with the creates that write them.
func (t *txn) withDirTimes(n *Inode) error {
	if n == nil || n.Type != TypeDir {
		return nil
	}
	_, err := t.mergeDirTimes(n, true)
	return err
}

func (t *txn) mergeDirTimes(n *Inode, snapshot bool) (int, error) {
	p := dirTimePrefix(n.ID)
	kvs, err := t.r.GetRange(p, kv.PrefixEnd(p), kv.RangeOptions{Snapshot: snapshot})
	if err != nil {
		return 0, err
	}
	for _, e := range kvs {
		if len(e.Value) != timeLen {
			return 0, errcode.New(errcode.Internal, "directory %d: corrupt change record (%d bytes)", n.ID, len(e.Value))
		}
		tm := time.Unix(int64(binary.BigEndian.Uint64(e.Value)), int64(binary.BigEndian.Uint32(e.Value[8:])))
		if tm.After(n.Mtime) {
			n.Mtime = tm
		}
		if tm.After(n.Ctime) {
			n.Ctime = tm
		}
	}
	return len(kvs), nil
}

// foldDirTimes moves directory n's change records into n (the caller
// writes n) and clears them, so that what the caller sets next is not
// overridden by an earlier change.
func (t *txn) foldDirTimes(n *Inode) error {
	if n.Type != TypeDir {
		return nil
	}
	found, err := t.mergeDirTimes(n, false)
	if err != nil || found == 0 {
		return err
	}
	return t.clearDirTimes(n.ID)
}

func (t *txn) clearDirTimes(dir uint64) error {
	p := dirTimePrefix(dir)
	return t.tx.ClearRange(p, kv.PrefixEnd(p))
}

// adjustSubdirs changes directory dir's link count by delta subdirectories
// (2 + subdirectories, as on ext4). It writes the inode, so it conflicts
// with operations that read it (creates in dir): only mkdir, rmdir and
// moves of directories pay this, not file creates. A directory made before
// counts were kept (it reports 2) is counted first, by listing it: callers
// adjust before they change dir's entries in the transaction.
func (t *txn) adjustSubdirs(dir *Inode, delta int) error {
	if !dir.subdirsCounted {
		n, err := t.countSubdirs(dir.ID)
		if err != nil {
			return err
		}
		dir.Nlink, dir.subdirsCounted = uint32(2+n), true
	}
	nl := int64(dir.Nlink) + int64(delta)
	if nl < 2 {
		nl = 2
	}
	dir.Nlink = uint32(nl)
	return t.putInode(dir)
}

// countSubdirs counts the subdirectories of directory id from its entries
// (once per directory made before counts were kept). Snapshot reads: a
// concurrent change of the count writes dir's inode, which the caller
// read, so it conflicts anyway.
func (t *txn) countSubdirs(id uint64) (int, error) {
	b, e := dirRange(id)
	n := 0
	for {
		kvs, err := t.r.GetRange(b, e, kv.RangeOptions{Limit: 1024, Snapshot: true})
		if err != nil {
			return 0, err
		}
		for _, item := range kvs {
			d, err := decodeDentry(item.Value)
			if err != nil {
				return 0, errcode.New(errcode.Internal, "directory %d: %v", id, err)
			}
			if d.Type == TypeDir {
				n++
			}
		}
		if len(kvs) < 1024 {
			return n, nil
		}
		b = append(append([]byte(nil), kvs[len(kvs)-1].Key...), 0)
	}
}

// removeEntry deletes name from dir and records the change of dir.
func (t *txn) removeEntry(dir uint64, name string) error {
	if err := t.tx.Clear(dentryKey(dir, name)); err != nil {
		return err
	}
	return t.dirChanged(dir)
}
