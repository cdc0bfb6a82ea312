// Package tests holds multi-process cluster and fault tests: they build
// the emberfs binary once and run real mgmtd and storage processes on
// loopback, killing them with SIGKILL.
package tests

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/emberfs/emberfs/tests/testproc"
)

const token = "process-test-token"

var emberfsBin string

func TestMain(m *testing.M) { testproc.Main(m, &emberfsBin) }

// storageNode is one storage process's configuration; it can be started
// again on the same directory after a kill.
type storageNode struct {
	id      int
	cfgPath string
	logDir  string
	p       *testproc.Proc
	metrics string
	starts  int
}

func newStorageNode(t *testing.T, dir string, id int, mgmtd string) *storageNode {
	t.Helper()
	n := &storageNode{id: id, logDir: dir}
	n.cfgPath = testproc.WriteFile(t, filepath.Join(dir, fmt.Sprintf("storage%d.toml", id)), testproc.StorageConfig(dir, id, mgmtd, token))
	return n
}

func (n *storageNode) start(t *testing.T) {
	t.Helper()
	n.starts++
	n.p = testproc.Start(t, emberfsBin, filepath.Join(n.logDir, fmt.Sprintf("storage%d.%d.log", n.id, n.starts)), "storage", "--config", n.cfgPath)
	n.metrics = n.p.Wait(t, testproc.MetricsRE)
}
