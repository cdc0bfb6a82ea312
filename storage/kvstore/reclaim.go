package kvstore

import (
	"sort"

	"github.com/emberfs/emberfs/storage/chunkengine"
	"github.com/emberfs/emberfs/storage/kvformat"
)

// Item is what reclamation needs to know of one stored value.
type Item struct {
	ID      chunkengine.ChunkID
	NS      uint32
	Version uint64 // committed version: remove only this one
	Size    int64  // record bytes
	Expires int64  // unix ns; 0 = never
	Access  int64  // unix ns of the last read (or the put)
	Bad     bool   // the record's header does not decode
}

// Policy is a namespace's reclamation settings on one chain.
type Policy struct {
	Share int64 // bytes the chain may hold (capacity / chains); <= 0: unbounded
	Evict bool  // evict least recently read values when over Share
}

// Reason says why a value is reclaimed.
type Reason uint8

const (
	Expired Reason = iota + 1 // past its TTL
	Evicted                   // least recently read in a namespace over its share
	Corrupt                   // its header does not decode: it can never be read
)

// Victim is a value to remove.
type Victim struct {
	Item
	Reason Reason
}

// evictNum/evictDen is the fraction of the share eviction brings a namespace
// down to: a little headroom so the next puts do not trigger it again.
const (
	evictNum, evictDen = 9, 10
)

// Plan decides what to reclaim given the values on a chain, the
// namespaces' policies and the time now (unix ns): every expired or
// corrupt value, then, in each namespace that evicts and holds more than
// its share, the least recently read values (ties by chunk id, so the
// choice is deterministic) until it holds at most 90% of the share.
// Namespaces without a policy (no descriptor seen) are never evicted;
// their values still expire. Plan is a pure function.
func Plan(items []Item, policies map[uint32]Policy, now int64) []Victim {
	var out []Victim
	live := map[uint32][]Item{}
	bytes := map[uint32]int64{}
	for _, it := range items {
		switch {
		case it.Bad:
			out = append(out, Victim{it, Corrupt})
		case it.Expires != 0 && now >= it.Expires:
			out = append(out, Victim{it, Expired})
		default:
			live[it.NS] = append(live[it.NS], it)
			bytes[it.NS] += it.Size
		}
	}
	nss := make([]uint32, 0, len(live))
	for ns := range live {
		nss = append(nss, ns)
	}
	sort.Slice(nss, func(i, j int) bool { return nss[i] < nss[j] })
	for _, ns := range nss {
		p, ok := policies[ns]
		if !ok || !p.Evict || p.Share <= 0 || bytes[ns] <= p.Share {
			continue
		}
		its := live[ns]
		sort.Slice(its, func(i, j int) bool {
			if its[i].Access != its[j].Access {
				return its[i].Access < its[j].Access
			}
			return its[i].ID.Less(its[j].ID)
		})
		goal := p.Share / evictDen * evictNum
		for _, it := range its {
			if bytes[ns] <= goal {
				break
			}
			out = append(out, Victim{it, Evicted})
			bytes[ns] -= it.Size
		}
	}
	return out
}

// Snapshot returns the indexed values and the policies of the namespaces
// whose descriptors this target holds.
func (s *Store) Snapshot() ([]Item, map[uint32]Policy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items := make([]Item, 0, len(s.entries))
	for id, e := range s.entries {
		items = append(items, Item{ID: id, NS: e.ns, Version: e.version, Size: e.size, Expires: e.expires, Access: e.access, Bad: e.bad})
	}
	pol := map[uint32]Policy{}
	for ns, st := range s.ns {
		if st.desc != nil {
			pol[ns] = Policy{Share: st.desc.ChainShare(), Evict: st.desc.Evict}
		}
	}
	return items, pol
}

// PlanReclaim plans reclamation of this target's values at the store's
// clock's now.
func (s *Store) PlanReclaim() []Victim {
	items, pol := s.Snapshot()
	return Plan(items, pol, s.now().UnixNano())
}

// Reclaimed counts a victim the caller removed (expirations and
// evictions; removing an unreadable record is housekeeping).
func (s *Store) Reclaimed(v Victim) {
	s.count(v.NS, func(st *kvformat.Stats) {
		switch v.Reason {
		case Expired:
			st.Expirations++
		case Evicted:
			st.Evictions++
		}
	})
}
