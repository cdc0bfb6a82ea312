// Package statemachine holds mgmtd's target state machine as pure
// functions: Next is the 3FS transition table (local state x current public
// state x predecessor -> next public state), UpdateChain applies it to a
// whole chain, orders the chain and says whether it changed. Nothing here
// does I/O, so every rule is tested directly.
package statemachine

import (
	"fmt"
	"sort"

	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// Short names for the states, used throughout mgmtd.
const (
	Serving = mgmtdpb.PublicState_PUBLIC_SERVING
	Syncing = mgmtdpb.PublicState_PUBLIC_SYNCING
	Waiting = mgmtdpb.PublicState_PUBLIC_WAITING
	LastSrv = mgmtdpb.PublicState_PUBLIC_LASTSRV
	Offline = mgmtdpb.PublicState_PUBLIC_OFFLINE

	UpToDate     = mgmtdpb.LocalState_LOCAL_UPTODATE
	Online       = mgmtdpb.LocalState_LOCAL_ONLINE
	LocalOffline = mgmtdpb.LocalState_LOCAL_OFFLINE
)

// Pred describes a target's predecessor for the transition table.
type Pred int

const (
	// NoPred: nothing ahead of the target keeps the chain's data. For a
	// serving target that fails this means it is the last one that served.
	NoPred Pred = iota
	// PredServing: the target sits directly behind a serving target, so it
	// may be synced from it.
	PredServing
	// PredNotServing: the target has a predecessor that is not serving (or
	// a serving predecessor is already syncing another target).
	PredNotServing
)

func (p Pred) String() string {
	switch p {
	case NoPred:
		return "no predecessor"
	case PredServing:
		return "serving"
	case PredNotServing:
		return "not serving"
	}
	return fmt.Sprintf("pred(%d)", int(p))
}

// Next is the transition table of 3FS's design notes, row by row. A local
// state other than up-to-date or online (including unspecified) counts as
// offline: a target nobody vouches for is down.
func Next(local mgmtdpb.LocalState, cur mgmtdpb.PublicState, pred Pred) mgmtdpb.PublicState {
	switch local {
	case UpToDate:
		switch cur {
		case Serving, Syncing, LastSrv:
			return Serving
		case Waiting, Offline:
			// A target that was out must be synced before it serves, even if
			// its service believes it is complete.
			return Waiting
		}
	case Online:
		switch cur {
		case Serving, LastSrv:
			return Serving
		case Syncing, Waiting:
			if pred == PredServing {
				return Syncing
			}
			return Waiting
		case Offline:
			return Waiting
		}
	default: // offline
		switch cur {
		case Serving:
			if pred == NoPred {
				return LastSrv
			}
			return Offline
		case LastSrv:
			return LastSrv
		case Syncing, Waiting, Offline:
			return Offline
		}
	}
	// Unspecified current state: treat as a target that was down.
	if local == UpToDate || local == Online {
		return Waiting
	}
	return Offline
}

// Target is one chain member as UpdateChain sees it.
type Target struct {
	ID     uint64
	Public mgmtdpb.PublicState
	Local  mgmtdpb.LocalState
}

// rank orders a chain: serving first (head), then lastsrv, syncing,
// waiting and offline at the end, as 3FS orders its chains.
func rank(s mgmtdpb.PublicState) int {
	switch s {
	case Serving:
		return 0
	case LastSrv:
		return 1
	case Syncing:
		return 2
	case Waiting:
		return 3
	default:
		return 4
	}
}

func alive(l mgmtdpb.LocalState) bool { return l == UpToDate || l == Online }

// UpdateChain computes a chain's next public states and order from its
// current ones and the local states, and reports whether anything changed
// (the caller then bumps the chain version). Targets are processed in the
// chain's current order so that relative order is kept within each state.
//
// Chain-level rules on top of the table (3FS does the same):
//   - a failed serving target gets NoPred only if no other target keeps
//     serving and none has already become lastsrv, so at most one lastsrv;
//   - a lastsrv target is demoted to offline once another target serves;
//   - only the first syncing/waiting/offline candidate directly behind the
//     serving group gets PredServing: one target syncs at a time.
func UpdateChain(cur []Target) (next []Target, changed bool) {
	order := make([]Target, len(cur))
	copy(order, cur)
	sort.SliceStable(order, func(i, j int) bool { return rank(order[i].Public) < rank(order[j].Public) })

	anyServing := false
	for _, t := range order {
		if t.Public == Serving && alive(t.Local) {
			anyServing = true
		}
	}
	lastSrvTaken := false
	syncSlotTaken := false
	next = make([]Target, 0, len(order))
	for _, t := range order {
		n := t
		switch t.Public {
		case Serving:
			pred := NoPred
			if anyServing || lastSrvTaken {
				pred = PredNotServing
			}
			n.Public = Next(t.Local, t.Public, pred)
			if n.Public == LastSrv {
				lastSrvTaken = true
			}
		case LastSrv:
			if anyServing {
				n.Public = Offline
				break
			}
			n.Public = Next(t.Local, t.Public, NoPred)
			if n.Public == Serving {
				anyServing = true
				// Any target already made lastsrv in this pass is behind a
				// serving target now.
				for i := range next {
					if next[i].Public == LastSrv {
						next[i].Public = Offline
					}
				}
			}
		default:
			pred := PredNotServing
			if anyServing && !syncSlotTaken {
				pred = PredServing
			}
			n.Public = Next(t.Local, t.Public, pred)
			if n.Public == Syncing {
				syncSlotTaken = true
			}
		}
		next = append(next, n)
	}
	sort.SliceStable(next, func(i, j int) bool { return rank(next[i].Public) < rank(next[j].Public) })
	for i := range next {
		if next[i].ID != cur[i].ID || next[i].Public != cur[i].Public {
			changed = true
		}
	}
	return next, changed
}

// ServingOrder returns the ids of the serving targets in chain order.
func ServingOrder(chain []Target) []uint64 {
	var ids []uint64
	for _, t := range chain {
		if t.Public == Serving {
			ids = append(ids, t.ID)
		}
	}
	return ids
}
