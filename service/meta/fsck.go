package meta

import (
	"context"
	"fmt"
	"sort"

	"github.com/emberfs/emberfs/service/kv"
)

// FsckOptions configures Fsck.
type FsckOptions struct {
	// OrphanChunks, when set, is given the ids of every file whose chunks
	// may exist (live files and removed files still queued for chunk
	// removal) and returns the inode ids that have chunks in storage but
	// are not in that set. Storage provides it; without it the
	// chunks-without-files check is skipped.
	OrphanChunks func(ctx context.Context, live map[uint64]bool) ([]uint64, error)
	// MaxProblems caps the problems listed (default 1000).
	MaxProblems int
}

// FsckReport is the result of Fsck.
type FsckReport struct {
	Inodes, Dentries, Sessions, Xattrs, QueuedRemovals int
	// PendingTrims counts truncates whose trim on storage is not finished
	// yet: not a problem (the next open, close or the background loop
	// finishes them), but worth seeing.
	PendingTrims     int
	OrphanChunkFiles []uint64
	Problems         []string
	Truncated        bool // more problems than MaxProblems
}

// Clean reports whether no problem was found.
func (r *FsckReport) Clean() bool { return len(r.Problems) == 0 && len(r.OrphanChunkFiles) == 0 }

func (r *FsckReport) add(limit int, format string, args ...any) {
	if len(r.Problems) >= limit {
		r.Truncated = true
		return
	}
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Fsck checks the namespace invariants on one consistent snapshot: every
// entry points at an inode of the type it records; every directory has
// exactly one entry, in the directory its inode names as parent; link counts
// match entries; following parents from any directory reaches the root (no
// cycles, nothing cut off); no inode is unreachable unless it is an
// unlinked file still open for writing or part of a tree queued for removal;
// sessions, xattrs and pending trims belong to existing inodes.
func (s *Server) Fsck(ctx context.Context, opts FsckOptions) (*FsckReport, error) {
	limit := opts.MaxProblems
	if limit <= 0 {
		limit = 1000
	}
	rep := &FsckReport{}
	inodes := map[uint64]*Inode{}
	links := map[uint64]uint32{}
	dirEntryOf := map[uint64]uint64{} // directory id -> parent holding its entry
	sessions := map[uint64]int{}
	queued := map[uint64]gcEntry{}
	var trims []uint64
	err := s.view(ctx, Root, func(t *txn) error {
		scan := func(tag []byte, fn func(kv.KeyValue)) error {
			b, e := prefixRange(tag)
			for {
				kvs, err := t.r.GetRange(b, e, kv.RangeOptions{Limit: 4096, Snapshot: true})
				if err != nil {
					return err
				}
				for _, item := range kvs {
					fn(item)
				}
				if len(kvs) < 4096 {
					return nil
				}
				b = append(append([]byte(nil), kvs[len(kvs)-1].Key...), 0)
			}
		}
		if err := scan(tagInode, func(e kv.KeyValue) {
			if len(e.Key) != 12 {
				rep.add(limit, "malformed inode key %q", e.Key)
				return
			}
			id := le64(e.Key[4:])
			n, err := decodeInode(id, e.Value)
			if err != nil {
				rep.add(limit, "%v", err)
				return
			}
			inodes[id] = n
		}); err != nil {
			return err
		}
		if err := scan(tagGC, func(e kv.KeyValue) {
			g, err := decodeGCEntry(e.Value)
			if err != nil || len(e.Key) != 12 {
				rep.add(limit, "corrupt removal queue entry %q", e.Key)
				return
			}
			queued[be64(e.Key[4:])] = g
		}); err != nil {
			return err
		}
		if err := scan(tagSession, func(e kv.KeyValue) {
			if len(e.Key) != 20 {
				rep.add(limit, "malformed session key %q", e.Key)
				return
			}
			sessions[le64(e.Key[4:12])]++
		}); err != nil {
			return err
		}
		if err := scan(tagTrim, func(e kv.KeyValue) {
			if len(e.Key) != len(tagTrim)+8 {
				rep.add(limit, "malformed pending trim key %q", e.Key)
				return
			}
			if _, err := decodePendingTrim(e.Value); err != nil {
				rep.add(limit, "inode %d: %v", be64(e.Key[len(tagTrim):]), err)
				return
			}
			rep.PendingTrims++
			trims = append(trims, be64(e.Key[len(tagTrim):]))
		}); err != nil {
			return err
		}
		if err := scan(tagXattr, func(e kv.KeyValue) {
			rep.Xattrs++
			if len(e.Key) < 12 {
				rep.add(limit, "malformed xattr key %q", e.Key)
				return
			}
			if id := le64(e.Key[4:12]); inodes[id] == nil {
				rep.add(limit, "xattr %q of missing inode %d", e.Key[12:], id)
			}
		}); err != nil {
			return err
		}
		if err := scan(tagLock, func(e kv.KeyValue) {
			if len(e.Key) != len(tagLock)+8 {
				rep.add(limit, "malformed lock key %q", e.Key)
				return
			}
			id := le64(e.Key[len(tagLock):])
			if _, err := decodeLocks(e.Value); err != nil {
				rep.add(limit, "locks of inode %d: %v", id, err)
			}
			if inodes[id] == nil {
				rep.add(limit, "locks of missing inode %d", id)
			}
		}); err != nil {
			return err
		}
		if err := scan(tagDirTime, func(e kv.KeyValue) {
			if len(e.Key) != len(tagDirTime)+16 || len(e.Value) != timeLen {
				rep.add(limit, "malformed directory change record %q (%d bytes)", e.Key, len(e.Value))
				return
			}
			id := be64(e.Key[len(tagDirTime):])
			if n := inodes[id]; n == nil || n.Type != TypeDir {
				rep.add(limit, "change record of missing directory or non-directory %d", id)
			}
		}); err != nil {
			return err
		}
		return scan(tagDentry, func(e kv.KeyValue) {
			rep.Dentries++
			if len(e.Key) <= 12 {
				rep.add(limit, "malformed dentry key %q", e.Key)
				return
			}
			parent, name := be64(e.Key[4:12]), string(e.Key[12:])
			d, err := decodeDentry(e.Value)
			if err != nil {
				rep.add(limit, "entry %q in directory %d: %v", name, parent, err)
				return
			}
			if p := inodes[parent]; p == nil {
				rep.add(limit, "entry %q in missing directory %d", name, parent)
			} else if p.Type != TypeDir {
				rep.add(limit, "entry %q in inode %d, which is a %s", name, parent, p.Type)
			}
			if err := checkName(name); err != nil {
				rep.add(limit, "entry %q in directory %d: bad name: %v", name, parent, err)
			}
			n := inodes[d.ID]
			if n == nil {
				rep.add(limit, "entry %q in directory %d points at missing inode %d", name, parent, d.ID)
				return
			}
			if n.Type != d.Type {
				rep.add(limit, "entry %q in directory %d records type %s, inode %d is a %s", name, parent, d.Type, d.ID, n.Type)
			}
			links[d.ID]++
			if n.Type == TypeDir {
				if prev, dup := dirEntryOf[d.ID]; dup {
					rep.add(limit, "directory %d has entries in both %d and %d", d.ID, prev, parent)
				}
				dirEntryOf[d.ID] = parent
			}
		})
	})
	if err != nil {
		return nil, err
	}
	rep.Inodes, rep.QueuedRemovals = len(inodes), len(queued)
	for _, id := range trims {
		// removeInode clears a file's pending trim with the file.
		if n := inodes[id]; n == nil || n.Type != TypeFile {
			rep.add(limit, "pending trim of missing inode or non-file %d", id)
		}
	}
	for id, c := range sessions {
		rep.Sessions += c
		if inodes[id] == nil {
			rep.add(limit, "%d write session(s) of missing inode %d", c, id)
		}
	}
	ids := make([]uint64, 0, len(inodes))
	for id := range inodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	if r := inodes[RootID]; r == nil || r.Type != TypeDir {
		rep.add(limit, "root directory missing")
	}
	subdirs := map[uint64]uint32{}
	for _, parent := range dirEntryOf {
		subdirs[parent]++
	}
	for _, id := range ids {
		n := inodes[id]
		// Link counts of directories that keep them: 2 + subdirectories.
		if n.Type == TypeDir && n.subdirsCounted && !n.Detached && n.Nlink != 2+subdirs[id] {
			rep.add(limit, "directory %d has nlink %d but %d subdirectories", id, n.Nlink, subdirs[id])
		}
		if id == RootID {
			if links[id] != 0 {
				rep.add(limit, "root directory has %d entries naming it", links[id])
			}
			continue
		}
		switch n.Type {
		case TypeDir:
			_, q := queued[id]
			switch {
			case n.Detached:
				if !q {
					rep.add(limit, "detached directory %d is not queued for removal", id)
				}
				if links[id] != 0 {
					rep.add(limit, "detached directory %d still has an entry", id)
				}
			case links[id] != 1:
				rep.add(limit, "directory %d has %d entries (want 1)", id, links[id])
			case dirEntryOf[id] != n.Parent:
				rep.add(limit, "directory %d records parent %d but its entry is in %d", id, n.Parent, dirEntryOf[id])
			default:
				if err := checkChain(inodes, n); err != "" {
					rep.add(limit, "directory %d: %s", id, err)
				}
			}
		case TypeFile, TypeSymlink, TypeFIFO, TypeSocket, TypeCharDev, TypeBlockDev:
			if n.Nlink != links[id] {
				rep.add(limit, "%s %d has nlink %d but %d entries", n.Type, id, n.Nlink, links[id])
			}
			if links[id] == 0 && sessions[id] == 0 {
				rep.add(limit, "orphan %s %d: no entries and not open", n.Type, id)
			}
			if _, q := queued[id]; q {
				rep.add(limit, "%s %d is live but queued for removal", n.Type, id)
			}
		default:
			rep.add(limit, "inode %d has unknown type %d", id, n.Type)
		}
	}
	if opts.OrphanChunks != nil {
		live := map[uint64]bool{}
		for id, n := range inodes {
			if n.Type == TypeFile {
				live[id] = true
			}
		}
		for id, g := range queued {
			if g.Type == TypeFile {
				live[id] = true
			}
		}
		orphans, err := opts.OrphanChunks(ctx, live)
		if err != nil {
			return nil, fmt.Errorf("fsck: listing chunks in storage: %w", err)
		}
		rep.OrphanChunkFiles = orphans
	}
	return rep, nil
}

// checkChain follows parents from directory n; it must reach the root, or
// a detached directory (a tree queued for removal), without a cycle.
func checkChain(inodes map[uint64]*Inode, n *Inode) string {
	seen := map[uint64]bool{}
	cur := n
	for cur.ID != RootID {
		if cur.Detached {
			return ""
		}
		if seen[cur.ID] {
			return fmt.Sprintf("parent chain has a cycle through %d", cur.ID)
		}
		seen[cur.ID] = true
		up := inodes[cur.Parent]
		if up == nil {
			return fmt.Sprintf("parent chain reaches missing directory %d", cur.Parent)
		}
		cur = up
	}
	return ""
}

// FsckEngine runs Fsck directly on an engine, without starting a server:
// unlike New it writes nothing (not even the root directory of an empty
// engine, which it reports as missing), so it is safe on a namespace that
// may be damaged.
func FsckEngine(ctx context.Context, engine kv.Engine, opts FsckOptions) (*FsckReport, error) {
	cfg := Config{}
	cfg.setDefaults()
	s := &Server{kv: engine, cfg: cfg, log: cfg.Logger.With("component", "meta")}
	return s.Fsck(ctx, opts)
}

// InodesExistBatch is how many inodes InodesExist reads per transaction,
// well inside FoundationDB's 5 s transaction limit.
const InodesExistBatch = 1000

// InodesExist reports which of ids exist in the namespace stored in engine,
// counting inodes still queued for chunk cleanup as existing (their chunks
// are expected in storage). fsck's chunks-without-files check re-reads its
// candidates with it, so files created after its snapshot are not reported.
func InodesExist(ctx context.Context, engine kv.Engine, ids []uint64) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	for len(ids) > 0 {
		part := ids[:min(len(ids), InodesExistBatch)]
		ids = ids[len(part):]
		found := map[uint64]bool{}
		err := engine.ReadTransact(ctx, func(tx kv.ReadTx) error {
			clear(found)
			for _, id := range part {
				for _, key := range [][]byte{inodeKey(id), gcKey(id)} {
					_, ok, err := tx.Get(key)
					if err != nil {
						return err
					}
					if ok {
						found[id] = true
						break
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for id := range found {
			out[id] = true
		}
	}
	return out, nil
}
