// Package etcdkv is a kv.Engine on an etcd v3 cluster: serializable,
// optimistic transactions built on etcd's revisions, the way JuiceFS's etcd
// engine builds them. A transaction reads at one revision (the snapshot) and
// buffers its writes; the commit is a single etcd Txn whose compares check
// that nothing it read changed after that revision and whose success branch
// applies the writes. A failed compare is a conflict: the body runs again on
// a fresh revision. docs/kv.md lists exactly which conflicts are detected.
package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/emberfs/emberfs/service/kv"
)

// Server limits EmberFS starts etcd with (scripts/etcd-member.sh). etcd's
// own defaults (128 operations, 1.5 MiB per request) are far below
// kv.MaxTxnBytes, so a cluster for EmberFS must be started with at least
// these; Options can lower them to match a cluster that was not.
const (
	DefaultMaxTxnOps       = 65536
	DefaultMaxRequestBytes = 32 << 20
)

// Options configure an Engine; zero values are the defaults.
type Options struct {
	// Endpoints are the client URLs (host:port or http://host:port) of the
	// cluster's members; the client fails over between them.
	Endpoints []string
	// Prefix is prepended to every key, so that several EmberFS clusters
	// (or tests) can share one etcd cluster. No prefix may be a prefix of
	// another one in use.
	Prefix string
	// MaxRetries bounds how often Transact re-runs a transaction after a
	// conflict or a transient error (default 100).
	MaxRetries int
	// MaxTxnOps and MaxRequestBytes are the server's --max-txn-ops and
	// --max-request-bytes; a commit that would exceed them fails with
	// kv.ErrTxnTooLarge before it is sent.
	MaxTxnOps       int
	MaxRequestBytes int
	// DialTimeout bounds the first connection (default 5 s).
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// Engine is a kv.Engine over one etcd cluster.
type Engine struct {
	cli    *clientv3.Client
	opts   Options
	prefix string
	lease  *markerLease
	closed atomic.Bool
	wg     sync.WaitGroup // transactions in flight, so Close waits for them
}

var _ kv.Engine = (*Engine)(nil)

// Backoff between attempts: jittered, doubling from initialBackoff to
// maxBackoff. A conflict means another transaction just committed on the
// same keys; a short wait lets it clear.
const (
	initialBackoff = time.Millisecond
	maxBackoff     = 64 * time.Millisecond
)

// maxAttemptAge bounds how long one attempt may run between taking its
// read revision and committing. Write-conflict markers live on a lease
// (marker.go) that outlives any write by more than this, so a marker that
// an attempt must see cannot expire before that attempt commits. It also
// keeps an attempt clear of the revision compaction that a long-running
// cluster needs. An older attempt is retried, like FoundationDB's
// transaction_too_old.
const maxAttemptAge = 10 * time.Second

// Open connects to the cluster and checks that it answers.
func Open(opts Options) (*Engine, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcdkv: no endpoints given")
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 100
	}
	if opts.MaxTxnOps <= 0 {
		opts.MaxTxnOps = DefaultMaxTxnOps
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if strings.HasPrefix(opts.Prefix, kv.SystemPrefix) {
		return nil, fmt.Errorf("etcdkv: key prefix %q starts with 0xff", opts.Prefix)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		// Room for the largest transaction and range page, plus gRPC framing.
		MaxCallSendMsgSize: opts.MaxRequestBytes + 1<<20,
		MaxCallRecvMsgSize: 256 << 20,
		// A member that stopped answering is noticed and left.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcdkv: connect to %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	// clientv3.New does not wait for a connection; one linearizable read
	// tells a caller now that the cluster is unreachable or has no quorum.
	ctx, cancel := context.WithTimeout(context.Background(), opts.DialTimeout)
	defer cancel()
	if _, err := cli.Get(ctx, "\xff", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcdkv: cluster %s does not answer: %w", strings.Join(opts.Endpoints, ","), err)
	}
	e := &Engine{cli: cli, opts: opts, prefix: opts.Prefix}
	e.lease = startMarkerLease(cli, opts.Logger)
	opts.Logger.Info("opened etcd", "endpoints", opts.Endpoints, "prefix", opts.Prefix)
	return e, nil
}

// Name reports "etcd".
func (e *Engine) Name() string { return "etcd" }

// Client is the underlying etcd client, for tests and tools.
func (e *Engine) Client() *clientv3.Client { return e.cli }

// Close waits for running transactions, revokes the marker lease and
// disconnects.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	e.wg.Wait()
	e.lease.stop()
	return e.cli.Close()
}

func (e *Engine) begin() error {
	e.wg.Add(1)
	if e.closed.Load() {
		e.wg.Done()
		return kv.ErrClosed
	}
	return nil
}

// Transact runs fn in an optimistic transaction; see kv.Engine.
func (e *Engine) Transact(ctx context.Context, fn func(tx kv.Tx) error) error {
	if err := e.begin(); err != nil {
		return err
	}
	defer e.wg.Done()
	backoff := initialBackoff
	var lastErr error
	for attempt := 0; attempt <= e.opts.MaxRetries; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, &backoff); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		t := newTx(ctx, e, false)
		err := fn(t)
		if err == nil {
			err = t.err
		}
		if err == nil {
			err = e.commit(ctx, t)
		}
		if err == nil || !(errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrTransient)) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lastErr = err
	}
	return fmt.Errorf("%w after %d attempts: %w", kv.ErrTooManyRetries, e.opts.MaxRetries+1, lastErr)
}

// ReadTransact runs fn on one revision; only transient read errors retry.
func (e *Engine) ReadTransact(ctx context.Context, fn func(tx kv.ReadTx) error) error {
	if err := e.begin(); err != nil {
		return err
	}
	defer e.wg.Done()
	backoff := initialBackoff
	var lastErr error
	for attempt := 0; attempt <= e.opts.MaxRetries; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, &backoff); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		t := newTx(ctx, e, true)
		err := fn(t)
		if err == nil {
			err = t.err
		}
		if err == nil || !errors.Is(err, kv.ErrTransient) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lastErr = err
	}
	return fmt.Errorf("%w after %d attempts: %w", kv.ErrTooManyRetries, e.opts.MaxRetries+1, lastErr)
}

func sleep(ctx context.Context, backoff *time.Duration) error {
	d := *backoff/2 + rand.N(*backoff/2+1)
	*backoff = min(2**backoff, maxBackoff)
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// readError classifies an error from a read. Every read failure of a
// healthy request (a member down, no leader, a compacted revision, a
// timeout) is worth a fresh attempt, so it wraps kv.ErrTransient; the
// caller's own cancellation is returned as the context's error.
func (e *Engine) readError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("%w: etcdkv: %s: read revision compacted (transaction too old): %w", kv.ErrTransient, what, err)
	}
	return fmt.Errorf("%w: etcdkv: %s: %w", kv.ErrTransient, what, err)
}

// commitError classifies an error from the commit Txn. Errors that etcd
// returns before a proposal is made (limits, a bad request, no leader, an
// unknown lease) mean nothing was applied; any other failure, a timeout
// or a lost connection above all, may come after the Txn was applied, so
// it is kv.ErrOutcomeUnknown and the body is not run again.
func (e *Engine) commitError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%w: etcdkv: the server refused the commit: %w (raise etcd's --max-txn-ops or write less per transaction)", kv.ErrTxnTooLarge, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%w: etcdkv: the server refused the commit: %w (raise etcd's --max-request-bytes or write less per transaction)", kv.ErrTxnTooLarge, err)
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		e.lease.lost()
		return fmt.Errorf("%w: etcdkv: commit: marker lease expired: %w", kv.ErrTransient, err)
	case errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrNoSpace):
		return fmt.Errorf("%w: etcdkv: commit not applied: %w", kv.ErrTransient, err)
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.ResourceExhausted {
		// The client's own gRPC limit: the request was never sent.
		return fmt.Errorf("%w: etcdkv: commit request too large: %w", kv.ErrTxnTooLarge, err)
	}
	if ctx.Err() != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w (context: %w)", err, ctx.Err())
	}
	e.opts.Logger.Warn("etcd commit outcome unknown", "err", err)
	return fmt.Errorf("%w: etcdkv: commit: %w", kv.ErrOutcomeUnknown, err)
}
