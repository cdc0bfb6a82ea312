package service

import (
	"math"

	"github.com/emberfs/emberfs/storage/chunkengine"
)

// Test hooks: they drive the service's own state machine into states that
// real failures reach only by racing (reliability_test.go).

// HoldUnrecoveredForTest marks target id not recovered and keeps it so:
// routing at or after the registration version is what marks a target
// recovered, so the registration version is moved out of reach, as for a
// process whose registration mgmtd has not confirmed yet.
func (s *Service) HoldUnrecoveredForTest(id uint64) {
	s.regMu.Lock()
	s.regVersion = math.MaxUint64
	s.regMu.Unlock()
	s.targets[id].clearRecovered()
}

// StopRoutingWatchForTest stops following mgmtd's routing watch (as when
// that stream is cut while heartbeats still get through): the service's
// routing stays where it is until something refreshes it.
func (s *Service) StopRoutingWatchForTest() { s.cache.Close() }

// RoutingVersionsForTest: the routing version this service holds and the
// one mgmtd reported in its last heartbeat answer.
func (s *Service) RoutingVersionsForTest() (held, mgmtd uint64) {
	return s.cache.Version(), s.agent.RoutingVersion()
}

// PeakBatchOpenRegionsForTest is the most data files batch reads held open
// at once since the service started.
func (s *Service) PeakBatchOpenRegionsForTest() int64 { return s.peakRegions.Load() }

// StopHeartbeatsForTest stops the service's heartbeats while it keeps
// serving: its lease runs out at mgmtd, which times the node out and
// reroutes, as for a process paused past the failure timeout or cut off
// from mgmtd alone. Only a restart (StopNode, StartNode) heartbeats again.
func (s *Service) StopHeartbeatsForTest() { s.agent.Stop() }

// SetAdmittedHookForTest makes every update, once admitted under its
// chain version (before it touches the chunk), call hook first: a test
// holds one there while the chain moves on.
func (s *Service) SetAdmittedHookForTest(hook func(target uint64, chunk chunkengine.ChunkID)) {
	s.admittedHook.Store(&hook)
}
