package meta

import (
	"context"
	"sync"
	"testing"

	"github.com/emberfs/emberfs/service/kv"
)

// interleaver wraps an engine so that a test can run other operations
// between a transaction body and its commit: the classic window in which a
// conflict is detected. It counts how many times bodies ran.
type interleaver struct {
	kv.Engine
	mu     sync.Mutex
	runs   int
	before func() // runs once, after the next body and before its commit
}

func (e *interleaver) Transact(ctx context.Context, fn func(tx kv.Tx) error) error {
	return e.Engine.Transact(ctx, func(tx kv.Tx) error {
		err := fn(tx)
		e.mu.Lock()
		e.runs++
		hook := e.before
		e.before = nil
		e.mu.Unlock()
		if hook != nil {
			hook()
		}
		return err
	})
}

func (e *interleaver) bodyRuns() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs
}

// TestInsertsAndOpensDoNotConflict: a create in a directory commits while
// another create in the same directory sits between its body and its
// commit; the waiting one must commit without running again (no conflict on
// the directory's insert marker), and the same for two write opens of one
// file (the session marker). An rmdir in that window must still conflict:
// that is what the marker is for.
func TestInsertsAndOpensDoNotConflict(t *testing.T) {
	eng := &interleaver{Engine: openEngine(t)}
	s := newEnvOn(t, eng, newMemChunks()).s
	ctx := context.Background()
	u := User{}
	_, err := s.Mkdir(ctx, u, PathAt{Path: "/d"}, 0o755, false)
	noErr(t, err)

	check := func(what string, first, second func() error) {
		t.Helper()
		eng.mu.Lock()
		eng.before = func() { noErr(t, second()) }
		eng.mu.Unlock()
		start := eng.bodyRuns()
		noErr(t, first())
		// first's body, second's body (inside first's hook), and nothing more.
		if runs := eng.bodyRuns() - start; runs != 2 {
			t.Errorf("%s: %d transaction bodies ran, want 2 (the first one conflicted and ran again)", what, runs)
		}
	}
	create := func(path string) func() error {
		return func() error {
			_, err := s.Create(ctx, u, PathAt{Path: path}, CreateOptions{Mode: 0o644, Exclusive: true})
			return err
		}
	}
	check("two creates in one directory", create("/d/a"), create("/d/b"))

	open := func() error {
		_, err := s.Open(ctx, u, PathAt{Path: "/d/a"}, OpenOptions{Write: true, ClientID: "c1"})
		return err
	}
	check("two write opens of one file", open, open)

	// The marker still guards emptiness: rmdir of /e, with a create in /e
	// committing in its window, must run again and then see /e not empty.
	_, err = s.Mkdir(ctx, u, PathAt{Path: "/e"}, 0o755, false)
	noErr(t, err)
	eng.mu.Lock()
	eng.before = func() { noErr(t, create("/e/x")()) }
	eng.mu.Unlock()
	wantErrno(t, s.Rmdir(ctx, u, PathAt{Path: "/e"}), 39 /* ENOTEMPTY */, "rmdir racing a create")
}
