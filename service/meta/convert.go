package meta

import (
	"time"

	"github.com/emberfs/emberfs/service/proto/metapb"
)

// UserToPB is a User on the wire (used by the gRPC client in metaclient).
func UserToPB(u User) *metapb.User { return &metapb.User{Uid: u.UID, Gid: u.GID, Groups: u.Groups} }

func userFromPB(u *metapb.User) User {
	if u == nil {
		// A call without credentials acts as "nobody", never as root.
		return User{UID: 65534, GID: 65534}
	}
	return User{UID: u.Uid, GID: u.Gid, Groups: u.Groups}
}

// PathToPB is a PathAt on the wire.
func PathToPB(p PathAt) *metapb.PathAt {
	return &metapb.PathAt{Parent: p.Parent, Path: p.Path, NoFollow: p.NoFollow}
}

func pathFromPB(p *metapb.PathAt) PathAt {
	if p == nil {
		return PathAt{}
	}
	return PathAt{Parent: p.Parent, Path: p.Path, NoFollow: p.NoFollow}
}

// LayoutToPB is a Layout on the wire.
func LayoutToPB(l Layout) *metapb.Layout {
	return &metapb.Layout{ChainTable: l.ChainTable, ChunkSize: l.ChunkSize, StripeSize: l.StripeSize, ChainBegin: l.ChainBegin, Seed: l.Seed}
}

func layoutFromPB(l *metapb.Layout) Layout {
	if l == nil {
		return Layout{}
	}
	return Layout{ChainTable: l.ChainTable, ChunkSize: l.ChunkSize, StripeSize: l.StripeSize, ChainBegin: l.ChainBegin, Seed: l.Seed}
}

func inodeToPB(n *Inode) *metapb.Inode {
	if n == nil {
		return nil
	}
	return &metapb.Inode{Id: n.ID, Type: uint32(n.Type), Mode: n.Mode, Uid: n.UID, Gid: n.GID, Nlink: n.Nlink,
		Size: n.Size, AtimeNs: n.Atime.UnixNano(), MtimeNs: n.Mtime.UnixNano(), CtimeNs: n.Ctime.UnixNano(),
		Atime: TimeToPB(n.Atime), Mtime: TimeToPB(n.Mtime), Ctime: TimeToPB(n.Ctime), Rdev: n.Rdev,
		Parent: n.Parent, Layout: LayoutToPB(n.Layout), Target: n.Target, Detached: n.Detached}
}

// InodeFromPB is an Inode read off the wire.
func InodeFromPB(p *metapb.Inode) Inode {
	if p == nil {
		return Inode{}
	}
	return Inode{ID: p.Id, Type: FileType(p.Type), Mode: p.Mode, UID: p.Uid, GID: p.Gid, Nlink: p.Nlink,
		Size: p.Size, Atime: timeFromPB(p.Atime, p.AtimeNs), Mtime: timeFromPB(p.Mtime, p.MtimeNs), Ctime: timeFromPB(p.Ctime, p.CtimeNs),
		Rdev: p.Rdev, Parent: p.Parent, Layout: layoutFromPB(p.Layout), Target: p.Target, Detached: p.Detached}
}

// TimeToPB is a time on the wire: seconds and nanoseconds, so that times
// past 2262 (where int64 nanoseconds wrap) survive.
func TimeToPB(t time.Time) *metapb.Timespec {
	return &metapb.Timespec{Sec: t.Unix(), Nsec: uint32(t.Nanosecond())}
}

// timeFromPB reads a time sent as seconds + nanoseconds, or, from a peer
// that sends only the deprecated int64 nanoseconds, from those.
func timeFromPB(ts *metapb.Timespec, ns int64) time.Time {
	if ts != nil {
		return time.Unix(ts.Sec, int64(ts.Nsec))
	}
	return time.Unix(0, ns)
}

// optTimeFromPB is an optional time of a request (SetAttr).
func optTimeFromPB(ts *metapb.Timespec, ns *int64) *time.Time {
	switch {
	case ts != nil:
		t := time.Unix(ts.Sec, int64(ts.Nsec))
		return &t
	case ns != nil:
		t := time.Unix(0, *ns)
		return &t
	}
	return nil
}

// LockToPB and LockFromPB convert advisory locks for the wire.
func LockToPB(l FileLock) *metapb.FileLock {
	return &metapb.FileLock{ClientId: l.Client, Owner: l.Owner, Flock: l.Flock, Type: uint32(l.Type), Start: l.Start, End: l.End, Pid: l.Pid}
}

func LockFromPB(p *metapb.FileLock) FileLock {
	if p == nil {
		return FileLock{}
	}
	return FileLock{Client: p.ClientId, Owner: p.Owner, Flock: p.Flock, Type: LockType(p.Type), Start: p.Start, End: p.End, Pid: p.Pid}
}
