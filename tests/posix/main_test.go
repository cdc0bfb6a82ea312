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
	"io"
	"os"
	"path/filepath"
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
	dir, err := os.MkdirTemp("", "emberfs-posixhelper-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helperBin = filepath.Join(dir, "helper")
	if err := copyFile(os.Args[0], helperBin, 0o755); err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "copying the helper binary:", err)
		os.Exit(1)
	}
	stop, err := startCluster()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	os.RemoveAll(dir)
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

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
