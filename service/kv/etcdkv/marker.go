package etcdkv

import (
	"context"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Write-conflict markers. AddWriteConflictKey(k) puts an empty value at
// prefix+"\xffw/"+k, and every tracked read of k (or of a range holding k)
// compares that marker's mod revision too. A marker matters only to
// transactions whose read revision is older than the marker's last write,
// and no attempt lives longer than maxAttemptAge; so markers are attached to
// a lease of markerTTL, kept alive while the engine is open, and vanish
// after the engine stops using them instead of piling up one per guard key
// forever.
//
// Safety does not depend on the lease: a marker is written with the lease
// only while the lease's last renewal is recent enough that it outlives
// the write by far more than maxAttemptAge (markerTTL - renewMargin), and
// without a lease (kept forever) otherwise.
const (
	markerTTL   = 60 // seconds
	renewMargin = 25 * time.Second
)

type markerLease struct {
	cli    *clientv3.Client
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	id      clientv3.LeaseID
	renewed time.Time // when a grant or keepalive answer arrived
	wake    chan struct{}
}

func startMarkerLease(cli *clientv3.Client, log *slog.Logger) *markerLease {
	ctx, cancel := context.WithCancel(context.Background())
	l := &markerLease{cli: cli, log: log, ctx: ctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	go l.run()
	return l
}

// usable returns the lease to attach a marker to, if its last renewal is
// recent enough.
func (l *markerLease) usable() (clientv3.LeaseID, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.id == 0 || time.Since(l.renewed) > renewMargin {
		return 0, false
	}
	return l.id, true
}

// lost is called when a commit found the lease gone: take a new one.
func (l *markerLease) lost() {
	l.mu.Lock()
	l.id = 0
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// run grants a lease and keeps it alive, granting a new one whenever the
// keepalive stream ends, until stop.
func (l *markerLease) run() {
	defer close(l.done)
	for l.ctx.Err() == nil {
		grant, err := l.cli.Grant(l.ctx, markerTTL)
		if err != nil {
			if !l.pause(time.Second) {
				return
			}
			continue
		}
		l.set(grant.ID)
		ch, err := l.cli.KeepAlive(l.ctx, grant.ID)
		if err != nil {
			continue
		}
	stream:
		for {
			select {
			case resp, ok := <-ch:
				if !ok {
					break stream // lease expired or client closing: grant again
				}
				if resp.TTL > 0 {
					l.set(resp.ID)
				}
			case <-l.wake:
				break stream
			case <-l.ctx.Done():
				return
			}
		}
		l.mu.Lock()
		l.id = 0
		l.mu.Unlock()
		if !l.pause(100 * time.Millisecond) {
			return
		}
	}
}

func (l *markerLease) set(id clientv3.LeaseID) {
	l.mu.Lock()
	l.id, l.renewed = id, time.Now()
	l.mu.Unlock()
}

func (l *markerLease) pause(d time.Duration) bool {
	select {
	case <-l.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// stop ends the keepalives. The lease is not revoked: another process's
// transaction may still need this engine's newest markers, and the lease
// outlives its last renewal by more than any attempt may run.
func (l *markerLease) stop() {
	l.cancel()
	<-l.done
}
