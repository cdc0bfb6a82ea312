package service

import (
	"slices"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/wire"
)

// The CRAQ write path's decisions, apart from its I/O: each function here
// takes what the caller read (the chunk's state on this target, the
// chain's write targets, the request) and says what to do; write.go and
// sync.go do it. They read no clock, disk or network, so table tests
// cover every case (writeplan_test.go).

// chunkView is what the write path knows of one chunk on this target.
type chunkView struct {
	Exists        bool // the engine has a committed or pending version
	Version       uint64
	ChainVer      uint32 // chain version the committed version was written under
	Pending       uint64 // 0: none
	PendingRemove bool
	Corrupt       bool
}

func viewOf(m chunkengine.ChunkMeta, ok bool) chunkView {
	if !ok {
		return chunkView{}
	}
	return chunkView{Exists: true, Version: m.Version, ChainVer: m.ChainVer, Pending: m.PendingVersion,
		PendingRemove: m.PendingRemove, Corrupt: m.Corrupt}
}

// chainPos is this target's place in a chain's write path.
type chainPos struct {
	In   bool   // a write target at all
	Head bool   // first write target
	Tail bool   // last write target: commits at once
	Succ uint64 // next write target (when not Tail)
	Pred uint64 // previous write target (when not Head)
}

func positionIn(writeTargets []uint64, self uint64) chainPos {
	i := slices.Index(writeTargets, self)
	if i < 0 {
		return chainPos{}
	}
	p := chainPos{In: true, Head: i == 0, Tail: i == len(writeTargets)-1}
	if !p.Tail {
		p.Succ = writeTargets[i+1]
	}
	if !p.Head {
		p.Pred = writeTargets[i-1]
	}
	return p
}

// admitHeadWrite decides whether a head takes a client's update at all.
// A target this process has not recovered (it restarted, or was cut off)
// may lack acknowledged versions: assigning committed+1 from such a copy
// would reuse version numbers the chain already gave to other content.
func admitHeadWrite(pos chainPos, recovered bool, target uint64, chain uint32, chainVer uint64) error {
	if !pos.In || !pos.Head {
		return errcode.New(errcode.StaleVersion, "target %d is not the head of chain %d at version %d", target, chain, chainVer)
	}
	if !recovered {
		return errcode.New(errcode.Unavailable, "target %d is the head of chain %d but not recovered on this storage node yet; retry", target, chain)
	}
	return nil
}

// admitChainUpdate decides whether a Forward (or a Sync replace) may be
// applied here: only from the predecessor the routing names, and only
// to a target past the head.
func admitForward(pos chainPos, from, target uint64, chain uint32, chainVer uint64) error {
	if !pos.In || pos.Head {
		return errcode.New(errcode.StaleVersion, "target %d takes no forwards in chain %d at version %d", target, chain, chainVer)
	}
	if from != pos.Pred {
		return errcode.New(errcode.PermissionDenied, "forward to target %d from target %d, which is not its predecessor %d in chain %d version %d", target, from, pos.Pred, chain, chainVer)
	}
	return nil
}

// headStep is what a head does with a client's update.
type headStep int

const (
	headNothing headStep = iota // answer with the chunk's current state
	headRedrive                 // an orphaned pending version: complete it first, then plan again
	headReplace                 // a client replace: whole content at committed+1, FULL
	headApply                   // tail (single write target): prepare and commit at once
	headPrepare                 // prepare committed+1 and forward
)

func (h headStep) String() string {
	return [...]string{"nothing", "redrive", "replace", "apply", "prepare"}[h]
}

// planHead: under the chunk lock, a pending version has no driver (the
// driver holds the lock until it commits or gives up). It may already be
// committed downstream, so it is re-driven, never aborted.
func planHead(c chunkView, kind uint8, ifVersion uint64, tail bool) headStep {
	switch {
	case c.Exists && c.Pending != 0:
		return headRedrive
	case ifVersion != 0 && (!c.Exists || c.Version != ifVersion):
		return headNothing // changed since the caller looked: leave it
	case kind == wire.KindRemove && (!c.Exists || c.Version == 0):
		return headNothing // nothing to remove on a consistent chain
	case kind == wire.KindReplace:
		return headReplace
	case tail:
		return headApply
	}
	return headPrepare
}

// replicaStep is what a middle or tail does with a forward.
type replicaStep int

const (
	replicaAck       replicaStep = iota // already applied: acknowledge
	replicaApplyFull                    // whole-state update: apply whatever we hold
	replicaApply                        // tail: prepare and commit
	replicaPrepare                      // prepare the given version and forward
)

func (r replicaStep) String() string {
	return [...]string{"ack", "apply-full", "apply", "prepare"}[r]
}

func planReplica(c chunkView, kind, flags uint8, version uint64, tail bool) replicaStep {
	if flags&wire.FlagFull != 0 {
		if kind == wire.KindReplace && c.Exists && c.Version >= version && c.Pending == 0 && !c.Corrupt {
			return replicaAck // a late duplicate of a forward already applied
		}
		return replicaApplyFull
	}
	if tail {
		return replicaApply
	}
	return replicaPrepare
}

// forwardReaction is what the forward driver does after a failed attempt.
type forwardReaction int

const (
	retryLater forwardReaction = iota // back off or wait for a routing change
	refreshNow                        // our routing is behind: refresh, retry
	sendFull                          // successor missed updates or is corrupt: send the whole chunk
	giveUp                            // the update itself is bad; retrying cannot help
)

func (f forwardReaction) String() string {
	return [...]string{"retry-later", "refresh", "send-full", "give-up"}[f]
}

func reactToForwardError(code errcode.Code, alreadyFull bool) forwardReaction {
	switch code {
	case errcode.StaleVersion, errcode.NotFound:
		return refreshNow
	case errcode.Conflict, errcode.ChecksumMismatch, errcode.Busy:
		if !alreadyFull {
			return sendFull
		}
	case errcode.InvalidArgument, errcode.OutOfRange, errcode.PermissionDenied:
		return giveUp
	}
	return retryLater
}

// forwardNeedsFull: a syncing successor may lack earlier versions, so it
// gets the chunk's whole new state.
func forwardNeedsFull(alreadyFull bool, succState mgmtdpb.PublicState) bool {
	return !alreadyFull && succState == mgmtdpb.PublicState_PUBLIC_SYNCING
}

// syncReceipt is what a target knows when a Sync frame arrives.
type syncReceipt struct {
	Repair   bool
	Self     uint64
	From     uint64
	Pos      chainPos
	State    mgmtdpb.PublicState // our state in our routing at the frame's chain version
	Serving  []uint64            // serving targets of the chain (repair sources)
	Local    chunkView
	ChainVer uint64 // the chain version the sync started under (stamped by the sender)
	Kind     uint8
	Version  uint64
}

// syncVerdict says whether to apply a Sync frame, or to acknowledge it
// without change (ack true), or refuse it (err).
type syncVerdict struct {
	Apply bool
	Err   error
}

// admitSync: a sync replace overwrites whatever a target holds, so it is
// taken only from the right peer in the right state:
//   - a recovery sync only while we are syncing, only from our predecessor,
//     and never over content committed under a newer chain version than
//     the one the sync started under (a source demoted mid-sync must not
//     roll a chunk back);
//   - a repair only from another serving replica of the chain, only onto a
//     copy still marked corrupt and with no pending version.
func admitSync(r syncReceipt) syncVerdict {
	if r.Repair {
		if r.From == r.Self || !slices.Contains(r.Serving, r.From) {
			return syncVerdict{Err: errcode.New(errcode.PermissionDenied, "repair of target %d from target %d, which is not a serving replica of its chain", r.Self, r.From)}
		}
		if !r.Local.Exists || !r.Local.Corrupt {
			return syncVerdict{} // repaired meanwhile (e.g. by a write): acknowledge
		}
		if r.Local.Pending != 0 {
			return syncVerdict{Err: errcode.New(errcode.Busy, "target %d holds pending version %d of the chunk; repair later", r.Self, r.Local.Pending)}
		}
		return syncVerdict{Apply: true}
	}
	if r.State != mgmtdpb.PublicState_PUBLIC_SYNCING {
		return syncVerdict{Err: errcode.New(errcode.StaleVersion, "sync to target %d, which is %s at chain version %d", r.Self, r.State, r.ChainVer)}
	}
	if !r.Pos.In || r.Pos.Head || r.From != r.Pos.Pred {
		return syncVerdict{Err: errcode.New(errcode.PermissionDenied, "sync to target %d from target %d, which is not its predecessor at chain version %d", r.Self, r.From, r.ChainVer)}
	}
	if r.Local.Exists && !r.Local.Corrupt && uint64(r.Local.ChainVer) > r.ChainVer {
		return syncVerdict{Err: errcode.New(errcode.StaleVersion, "sync to target %d started under chain version %d, older than the copy committed here under %d", r.Self, r.ChainVer, r.Local.ChainVer)}
	}
	return syncVerdict{Apply: true}
}

// syncStep is what a sync source does with one chunk.
type syncStep int

const (
	syncSkip    syncStep = iota // the successor's copy equals ours
	syncReplace                 // send our committed content
	syncRemove                  // only the successor has it: remove there
)

// syncRemote is the successor's copy as its dump reported it.
type syncRemote struct {
	Present                     bool
	Version                     uint64
	Length, Checksum, ChunkSize uint32
	Corrupt                     bool
	Pending                     uint64
}

func planSyncChunk(mine chunkengine.ChunkMeta, mineOK bool, theirs syncRemote) syncStep {
	if !mineOK || mine.Version == 0 {
		if !theirs.Present {
			return syncSkip
		}
		return syncRemove
	}
	if theirs.Present && theirs.Version == mine.Version && theirs.Length == mine.Length && theirs.Checksum == mine.Checksum &&
		!theirs.Corrupt && theirs.Pending == 0 && theirs.ChunkSize == mine.ChunkSize {
		return syncSkip
	}
	return syncReplace
}

// vouchesUpToDate decides whether a target may call itself up to date (to
// mgmtd, and for serving): it was recovered at chain version recoveredAt
// and its routing now shows it in state st at chain version chainVer. A
// serving target is up to date whatever version it was recovered at (it
// stays on the write path; serving at a later version re-marks it). A
// syncing one is up to date only at the very version its sync-done named:
// the routing watch can skip versions, so a process may not have seen
// that its target went offline (writes went around it) and came back
// syncing, and a sync-done from before then vouches for nothing now.
func vouchesUpToDate(recovered bool, recoveredAt uint64, st mgmtdpb.PublicState, chainVer uint64) bool {
	if !recovered {
		return false
	}
	if st == mgmtdpb.PublicState_PUBLIC_SYNCING {
		return recoveredAt == chainVer
	}
	return true
}
