// Package metatests runs the meta server as a real process (the emberfs
// binary, built once) next to mgmtd and a storage process, kills it with
// SIGKILL in the middle of a namespace storm and checks what survived.
package metatests

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/emberfs/emberfs/tests/testproc"
)

const token = "meta-process-test-token"

var emberfsBin string

func TestMain(m *testing.M) { testproc.Main(m, &emberfsBin) }

// startStorage runs one storage process with one target, so that mgmtd
// can form the chain table new files are placed on.
func startStorage(t *testing.T, dir, mgmtd string) {
	t.Helper()
	cfg := testproc.WriteFile(t, filepath.Join(dir, "storage.toml"), testproc.StorageConfig(dir, 50, mgmtd, token))
	testproc.Start(t, emberfsBin, filepath.Join(dir, "storage.log"), "storage", "--config", cfg)
}

// runCLI runs the binary to completion and returns its output and error.
func runCLI(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, emberfsBin, args...).CombinedOutput()
	return string(out), err
}
