package meta

import (
	"context"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/routing"
)

// RoutingChainTables answers ChainCount from mgmtd's routing info, which a
// mgmtdclient.Cache keeps current (the watch stream pushes every new version).
type RoutingChainTables struct {
	Cache *mgmtdclient.Cache
	// FirstRoutingWait bounds how long an operation waits for the first
	// routing info after the server started (default 10 s); past it the
	// operation fails with Unavailable rather than hanging.
	FirstRoutingWait time.Duration
}

var _ ChainTables = RoutingChainTables{}

// ChainCount implements ChainTables. A table missing from the cached
// routing is looked up once more after a refresh, since a table created a
// moment ago may not have reached the watch stream yet.
func (c RoutingChainTables) ChainCount(ctx context.Context, tableID uint32) (int, error) {
	r := c.Cache.Current()
	if r == nil {
		wait := c.FirstRoutingWait
		if wait <= 0 {
			wait = 10 * time.Second
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		var err error
		r, err = c.Cache.WaitFor(wctx, func(*routing.Routing) bool { return true })
		cancel()
		if r == nil {
			return 0, errcode.New(errcode.Unavailable, "chain table %d: no routing info from mgmtd yet: %v", tableID, err)
		}
	}
	t, ok := r.Table(tableID)
	if !ok {
		if err := c.Cache.Refresh(ctx); err == nil {
			r = c.Cache.Current()
			t, ok = r.Table(tableID)
		}
	}
	if !ok {
		return 0, errInval("chain table %d does not exist in routing v%d (create it with `emberfs admin create-chain-table`)", tableID, r.Version())
	}
	if len(t.ChainIds) == 0 {
		return 0, errInval("chain table %d has no chains", tableID)
	}
	return len(t.ChainIds), nil
}
