// Package kvfault wraps a real kv.Engine and injects the failures a
// distributed engine (FoundationDB) produces but an embedded one never
// does, so that callers' handling of them can be tested deterministically:
//
//   - transient read errors (kv.ErrTransient, as FDB's transaction_too_old
//     or future_version) on chosen reads, which the wrapped engine's
//     Transact / ReadTransact retry when the body passes them on;
//   - commits whose outcome is unknown (kv.ErrOutcomeUnknown), reported
//     after the wrapped engine really committed or really did not.
//
// It also counts transaction bodies running now, so a test can check that
// code does no network calls inside a transaction body.
package kvfault

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/emberfs/emberfs/service/kv"
)

// ErrInjected is the transient read error injected; it wraps kv.ErrTransient.
var ErrInjected = fmt.Errorf("kvfault: injected read failure: %w", kv.ErrTransient)

// Engine is a kv.Engine that forwards to another and injects failures.
type Engine struct {
	inner kv.Engine

	mu        sync.Mutex
	readRules []*readRule
	commits   []CommitFault

	active   atomic.Int64 // transaction bodies running now
	injected atomic.Int64 // faults injected so far
}

var _ kv.Engine = (*Engine)(nil)

type readRule struct {
	match func(key []byte) bool
	left  int
}

// CommitFault says how the next read-write transaction's commit is reported.
type CommitFault int

const (
	// CommitThenUnknown commits and reports kv.ErrOutcomeUnknown (the
	// reply was lost).
	CommitThenUnknown CommitFault = iota + 1
	// AbortThenUnknown does not commit and reports kv.ErrOutcomeUnknown.
	AbortThenUnknown
)

// Wrap returns an Engine over inner. Closing it closes inner.
func Wrap(inner kv.Engine) *Engine { return &Engine{inner: inner} }

// FailReads makes the next n reads (Get, SnapshotGet, GetRange, in read-write
// and read-only transactions) of a key for which match is true fail with
// ErrInjected; a range read matches on its begin key.
func (e *Engine) FailReads(match func(key []byte) bool, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.readRules = append(e.readRules, &readRule{match: match, left: n})
}

// FailReadsOf is FailReads for one exact key.
func (e *Engine) FailReadsOf(key []byte, n int) {
	k := bytes.Clone(key)
	e.FailReads(func(b []byte) bool { return bytes.Equal(b, k) }, n)
}

// FailNextCommit makes the next read-write Transact that reaches its
// commit report kv.ErrOutcomeUnknown, after committing or not as f says.
func (e *Engine) FailNextCommit(f CommitFault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.commits = append(e.commits, f)
}

// Injected is the number of faults injected so far.
func (e *Engine) Injected() int { return int(e.injected.Load()) }

// Active is the number of transaction bodies running at this moment.
func (e *Engine) Active() int { return int(e.active.Load()) }

// Name reports the wrapped engine's name with a "fault+" prefix.
func (e *Engine) Name() string { return "fault+" + e.inner.Name() }

// Close closes the wrapped engine.
func (e *Engine) Close() error { return e.inner.Close() }

func (e *Engine) readFault(key []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, r := range e.readRules {
		if r.match(key) {
			if r.left--; r.left <= 0 {
				e.readRules = append(e.readRules[:i], e.readRules[i+1:]...)
			}
			e.injected.Add(1)
			return fmt.Errorf("read %q: %w", key, ErrInjected)
		}
	}
	return nil
}

func (e *Engine) takeCommitFault() CommitFault {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.commits) == 0 {
		return 0
	}
	f := e.commits[0]
	e.commits = e.commits[1:]
	e.injected.Add(1)
	return f
}

// errAbort makes the wrapped engine drop an attempt on purpose.
var errAbort = fmt.Errorf("kvfault: attempt aborted to simulate a lost commit")

// Transact runs fn through the wrapped engine with faulty reads.
func (e *Engine) Transact(ctx context.Context, fn func(tx kv.Tx) error) error {
	var fault CommitFault
	err := e.inner.Transact(ctx, func(tx kv.Tx) error {
		e.active.Add(1)
		err := fn(&faultTx{Tx: tx, e: e})
		e.active.Add(-1)
		if err != nil {
			return err
		}
		// The fault is taken only by an attempt that goes on to commit, and
		// kept for the whole Transact so a retried attempt cannot lose it.
		if fault == 0 {
			fault = e.takeCommitFault()
		}
		if fault == AbortThenUnknown {
			return errAbort
		}
		return nil
	})
	switch {
	case fault == AbortThenUnknown && err == errAbort:
		return fmt.Errorf("kvfault: commit not applied, reported as %w", kv.ErrOutcomeUnknown)
	case fault == CommitThenUnknown && err == nil:
		return fmt.Errorf("kvfault: commit applied, reported as %w", kv.ErrOutcomeUnknown)
	}
	return err
}

// ReadTransact runs fn through the wrapped engine with faulty reads.
func (e *Engine) ReadTransact(ctx context.Context, fn func(tx kv.ReadTx) error) error {
	return e.inner.ReadTransact(ctx, func(tx kv.ReadTx) error {
		e.active.Add(1)
		defer e.active.Add(-1)
		return fn(&faultReadTx{ReadTx: tx, e: e})
	})
}

type faultTx struct {
	kv.Tx
	e *Engine
}

func (t *faultTx) Get(key []byte) ([]byte, bool, error) {
	if err := t.e.readFault(key); err != nil {
		return nil, false, err
	}
	return t.Tx.Get(key)
}

func (t *faultTx) SnapshotGet(key []byte) ([]byte, bool, error) {
	if err := t.e.readFault(key); err != nil {
		return nil, false, err
	}
	return t.Tx.SnapshotGet(key)
}

func (t *faultTx) GetRange(begin, end []byte, opts kv.RangeOptions) ([]kv.KeyValue, error) {
	if err := t.e.readFault(begin); err != nil {
		return nil, err
	}
	return t.Tx.GetRange(begin, end, opts)
}

type faultReadTx struct {
	kv.ReadTx
	e *Engine
}

func (t *faultReadTx) Get(key []byte) ([]byte, bool, error) {
	if err := t.e.readFault(key); err != nil {
		return nil, false, err
	}
	return t.ReadTx.Get(key)
}

func (t *faultReadTx) SnapshotGet(key []byte) ([]byte, bool, error) {
	if err := t.e.readFault(key); err != nil {
		return nil, false, err
	}
	return t.ReadTx.SnapshotGet(key)
}

func (t *faultReadTx) GetRange(begin, end []byte, opts kv.RangeOptions) ([]kv.KeyValue, error) {
	if err := t.e.readFault(begin); err != nil {
		return nil, err
	}
	return t.ReadTx.GetRange(begin, end, opts)
}
