package mgmtdclient

import (
	"context"

	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
)

// The interfaces below split this package's API by caller.

// RoutingSource is what a data-path client (the native client, the meta
// server's chunk store, the storage client, a storage service following
// its chains) needs from routing: the latest version, a refresh on demand
// (after errcode.StaleVersion), and a way to wait for a newer version.
// *Cache implements it.
type RoutingSource interface {
	// Current is the latest routing (nil before the first one arrives).
	Current() *routing.Routing
	// Refresh fetches the routing info from the mgmtd primary now.
	Refresh(ctx context.Context) error
	// RefreshOnStale refreshes if err is a stale-version error and
	// reports whether it did (the caller then retries).
	RefreshOnStale(ctx context.Context, err error) bool
	// WaitFor blocks until the routing satisfies ok or ctx ends.
	WaitFor(ctx context.Context, ok func(*routing.Routing) bool) (*routing.Routing, error)
	// Changed is closed when a newer version is installed.
	Changed() <-chan struct{}
}

// Caller runs control calls against the mgmtd primary (admin tools,
// Agent, Cache). *Conn implements it.
type Caller interface {
	Call(ctx context.Context, fn func(ctx context.Context, cl mgmtdpb.MgmtdClient) error) error
}

// ServiceAgent is the server-side API a role (storage, meta) uses to take
// part in the cluster: register, heartbeat, and know whether its lease
// still lets it serve. *Agent implements it.
type ServiceAgent interface {
	LeaseValid() bool
	NodeID() uint32
	RoutingVersion() uint64
	WaitRegistered(ctx context.Context) error
	Stop()
}

var (
	_ RoutingSource = (*Cache)(nil)
	_ Caller        = (*Conn)(nil)
	_ ServiceAgent  = (*Agent)(nil)
)
