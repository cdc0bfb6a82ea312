// Package testutil holds the helpers every EmberFS test package shares:
// polling for a condition with a bound that only catches hangs, and a
// logger that is quiet unless EMBERFS_TEST_LOG is set.
package testutil

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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

// FlipByte flips the bits of one byte of the file at path, in place: the
// corruption every "a damaged copy on disk is caught" test needs.
func FlipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read byte %d of %s: %v", off, path, err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("write byte %d of %s: %v", off, path, err)
	}
}

// ModuleRoot finds the EmberFS checkout from the working directory (go test
// runs in the package's directory), for tests that run the repo's scripts.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/emberfs/emberfs\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no EmberFS go.mod above the working directory")
		}
		dir = parent
	}
}
