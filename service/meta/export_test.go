package meta

import (
	"testing"

	"github.com/emberfs/emberfs/service/kv"
)

// Test helpers for the external test package (meta_test), which holds the
// tests that need the gRPC client: metaclient imports this package, so
// only an external test package may import it.

type MemChunks = memChunks

var (
	Alice         = alice
	NewMemChunks  = newMemChunks
	OpenEngine    = openEngine
	NoErr         = noErr
	WantErrno     = wantErrno
	DrainGC       = drainGC
	FsckClean     = fsckClean
	BuildFixture  = buildFixture
	RunErrnoTable = runErrnoTable
)

// NewTestServer is a server over a fresh engine and in-memory chunks.
func NewTestServer(t testing.TB) *Server { return newEnv(t).s }

// NewTestServerOn is a server over eng and chunks (several servers may
// share them).
func NewTestServerOn(t testing.TB, eng kv.Engine, chunks *MemChunks) *Server {
	return newEnvOn(t, eng, chunks).s
}

// AddBenchTarget adds an FS to run the benchmarks against.
func AddBenchTarget(name string, mk func(b *testing.B, s *Server) FS) {
	benchTargets = append(benchTargets, benchTarget{name: name, mk: mk})
}
