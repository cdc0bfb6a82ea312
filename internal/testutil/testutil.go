// Package testutil holds the helpers every EmberFS test package shares:
// polling for a condition with a bound that only catches hangs, and a
// logger that is quiet unless EMBERFS_TEST_LOG is set.
package testutil

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
)

// Eventually bounds every wait: generous, because the machines are shared
// and slow under -race. It catches a hang; no test asserts on speed.
const Eventually = 30 * time.Second

// WaitUntil polls cond until it holds, failing the test after Eventually.
func WaitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitFor(t, what, func() (bool, string) { return cond(), "" })
}

// WaitFor polls cond until it holds; on timeout the failure shows the
// last state cond described.
func WaitFor(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(Eventually)
	var last string
	for {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			if last != "" {
				t.Fatalf("timed out waiting for %s; last saw:\n%s", what, last)
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Logger discards logs unless EMBERFS_TEST_LOG is set, then logs at debug
// level to stderr.
func Logger() *slog.Logger {
	if os.Getenv("EMBERFS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
