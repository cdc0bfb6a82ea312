package fusetest

import (
	"context"
	"sync"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/localcluster/clustertest"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/metad"
)

// The mounts run over the real native client and a real in-process cluster
// (mgmtd, meta over Badger, 3 storage services, replication 3), shared by
// every test of the package: each test mounts it afresh with its own client
// and works in its own directory, so tests cannot see each other's files.

// testCluster is the package's cluster, started by TestMain.
var testCluster *localcluster.Cluster

// clientTTL is the test cluster's client lease.
const clientTTL = 10 * time.Second

func startCluster() (stop func(), err error) {
	// Chunk engines without fsync (StartMain): nothing here crashes the
	// machine. ClientTTL 10 s (default 60): a killed mount's file locks are
	// free that long after its death (TestLockReleasedWhenMountDies); live
	// clients renew every third of it.
	testCluster, stop, err = clustertest.StartMain(localcluster.Options{Storage: 3, Replicas: 3,
		MetaConfig: func(m *metad.Config) { m.ClientTTL.Duration = clientTTL }})
	return stop, err
}

// recordingBackend is the native client's backend with the largest single
// write request it passed on recorded (to check the 1 MiB FUSE requests),
// the number of client files it opened, their flags, and the reads that
// reached the client.
type recordingBackend struct {
	fuse.Backend
	mu        sync.Mutex
	maxWrite  int
	opens     int
	openFlags []int // flags of every open, in order
	reads     int   // ReadAt calls that reached the client
}

func (b *recordingBackend) readCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reads
}

func (b *recordingBackend) lastOpenFlags() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openFlags[len(b.openFlags)-1]
}

func (b *recordingBackend) Open(ctx context.Context, u meta.User, p meta.PathAt, flags int, mode uint32) (fuse.File, error) {
	b.mu.Lock()
	b.opens++
	b.openFlags = append(b.openFlags, flags)
	b.mu.Unlock()
	f, err := b.Backend.Open(ctx, u, p, flags, mode)
	if err != nil {
		return nil, err
	}
	return recordingFile{File: f, b: b}, nil
}

func (b *recordingBackend) openCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opens
}

func (b *recordingBackend) largestWrite() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.maxWrite
}

type recordingFile struct {
	fuse.File
	b *recordingBackend
}

func (f recordingFile) WriteAt(p []byte, off int64) (int, error) {
	f.b.mu.Lock()
	f.b.maxWrite = max(f.b.maxWrite, len(p))
	f.b.mu.Unlock()
	return f.File.WriteAt(p, off)
}

func (f recordingFile) ReadAt(p []byte, off int64) (int, error) {
	f.b.mu.Lock()
	f.b.reads++
	f.b.mu.Unlock()
	return f.File.ReadAt(p, off)
}

func newClient(ctx context.Context, id string) (*client.Client, error) {
	return clustertest.NewClient(ctx, testCluster, client.Config{ClientID: id, Logger: testutil.Logger()})
}
