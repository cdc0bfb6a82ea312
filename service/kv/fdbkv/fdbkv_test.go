//go:build fdb

package fdbkv_test

import (
	"context"
	"os"
	"testing"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/fdbkv"
	"github.com/emberfs/emberfs/service/kv/kvtest"
)

// clusterFileEnv names the cluster file of a SCRATCH FoundationDB cluster:
// every subtest clears the whole user keyspace ["", \xff) of it.
const clusterFileEnv = "EMBERFS_FDB_CLUSTER_FILE"

// openScratch opens the cluster and empties it. Without the variable the
// test fails: a build with -tags fdb that silently ran nothing would claim
// an FDB engine that nobody has tested.
func openScratch(t *testing.T) kv.Engine {
	t.Helper()
	clusterFile := os.Getenv(clusterFileEnv)
	if clusterFile == "" {
		t.Fatalf("%s is not set. The fdb-tagged tests need a running FoundationDB 7.3 cluster that they may wipe: "+
			"start one (e.g. fdbserver with a one-process fdb.cluster), then run "+
			"`%s=/path/to/fdb.cluster go test -tags fdb ./service/kv/fdbkv/`. "+
			"Building with -tags fdb also needs libfdb_c and its headers (the foundationdb-clients package). See docs/kv.md.",
			clusterFileEnv, clusterFileEnv)
	}
	e, err := fdbkv.Open(fdbkv.Options{ClusterFile: clusterFile, MaxRetries: 20})
	if err != nil {
		t.Fatalf("open FoundationDB with cluster file %q: %v", clusterFile, err)
	}
	err = e.Transact(context.Background(), func(tx kv.Tx) error {
		return tx.ClearRange(nil, []byte(kv.SystemPrefix))
	})
	if err != nil {
		e.Close()
		t.Fatalf("clear the scratch cluster: %v", err)
	}
	if e.Name() != "fdb" {
		t.Fatalf("Name() = %q, want fdb", e.Name())
	}
	return e
}

func TestConformanceFDB(t *testing.T) {
	kvtest.RunConformance(t, openScratch)
}

// FoundationDB tracks whole read ranges, so it also passes the phantom test
// that the Badger engine documents it does not.
func TestRangeConflictsFDB(t *testing.T) {
	kvtest.RunRangeConflictConformance(t, openScratch)
}

func BenchmarkFDB(b *testing.B) {
	clusterFile := os.Getenv(clusterFileEnv)
	if clusterFile == "" {
		b.Fatalf("%s is not set; see TestConformanceFDB", clusterFileEnv)
	}
	kvtest.RunBenchmarks(b, func(b *testing.B) kv.Engine {
		e, err := fdbkv.Open(fdbkv.Options{ClusterFile: clusterFile})
		if err != nil {
			b.Fatal(err)
		}
		err = e.Transact(context.Background(), func(tx kv.Tx) error { return tx.ClearRange(nil, []byte(kv.SystemPrefix)) })
		if err != nil {
			b.Fatal(err)
		}
		return e
	})
}
