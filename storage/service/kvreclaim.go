package service

import (
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/wire"
)

// kvReclaimLoop runs the KVCache reclaimer of every target that heads its
// chain, every KVReclaimInterval: kvstore plans what to remove (expired
// values, least recently read ones in namespaces over their share) and
// the removals go through the chain like client removes, so replicas stay
// identical.
func (s *Service) kvReclaimLoop() {
	tick := time.NewTicker(s.cfg.KVReclaimInterval.Duration)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		for _, t := range s.order {
			s.kvReclaim(t)
		}
	}
}

// kvReclaim reclaims on t if it is a recovered chain head with a valid
// lease; it stops at the first removal that fails (the next tick retries).
func (s *Service) kvReclaim(t *target) {
	if s.leaseOK() != nil || !t.isRecovered() {
		return
	}
	r := s.cache.Current()
	if r == nil {
		return
	}
	tt, ok := r.Target(t.id)
	if !ok || tt.ChainId == 0 {
		return
	}
	if head, ok := r.Head(tt.ChainId); !ok || head != t.id {
		return
	}
	victims := t.kv.PlanReclaim()
	for _, v := range victims {
		if s.ctx.Err() != nil {
			return
		}
		u := &update{UpdateReq: wire.UpdateReq{Target: t.id, Chain: tt.ChainId, ChainVer: r.ChainVersion(tt.ChainId), Chunk: v.ID, Kind: wire.KindRemove},
			ifVersion: v.Version}
		if _, err := s.runUpdate(s.ctx, t, u, true); err != nil {
			if !errcode.Is(err, errcode.StaleVersion) {
				s.log.Warn("kv reclaim: remove failed", "target", t.id, "chunk", v.ID, "err", err)
			}
			return
		}
		if _, ok := t.eng.Stat(v.ID); !ok { // removed (not skipped: a newer put keeps it)
			t.kv.Reclaimed(v)
		}
	}
	if len(victims) > 0 {
		s.log.Debug("kv reclaim", "target", t.id, "chain", tt.ChainId, "removed", len(victims))
	}
}
