// Package posix is the POSIX conformance suite of the FUSE mount: scripts of
// system calls (cases/*.posix) run by real processes under several uids and
// gids, once on an EmberFS mount and once on a local ext4 directory, and
// the two normalized transcripts must agree except for the intended
// differences listed in differences_test.go (and docs/fuse.md).
//
// The script language is described in script_test.go; the operations in
// ops_test.go. Adding a case is adding a file under cases/.
package posix

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/localcluster"
	"github.com/emberfs/emberfs/internal/localcluster/clustertest"
	"github.com/emberfs/emberfs/internal/testutil"
)

const mountPrefix = "emberfs-posix-"

var (
	// helperBin is a world-executable copy of this test binary; run with
	// helperEnv set it executes script operations (ops_test.go) under the
	// credentials it was started with.
	helperBin string
	// testCluster is the package's in-process cluster, started by TestMain.
	testCluster *localcluster.Cluster
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper(os.Args[1:]))
	}
	testutil.DetachDeadMounts(mountPrefix)
	bin, removeBin, err := testutil.CopyTestBinary("emberfs-posixhelper-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helperBin = bin
	stop, err := startCluster()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		removeBin()
		os.Exit(1)
	}
	code := m.Run()
	stop()
	removeBin()
	os.Exit(code)
}

func startCluster() (stop func(), err error) {
	// One storage service is enough: the suite is about metadata semantics.
	testCluster, stop, err = clustertest.StartMain(localcluster.Options{Storage: 1, Replicas: 1})
	return stop, err
}

func newClient(ctx context.Context, id string) (*client.Client, error) {
	return clustertest.NewClient(ctx, testCluster, client.Config{ClientID: id, Logger: testutil.Logger()})
}
