package etcdkv_test

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/emberfs/emberfs/internal/etcdcluster"
	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/etcdkv"
	"github.com/emberfs/emberfs/service/kv/kvtest"
)

var prefixes atomic.Int64

// opener returns engines on one shared cluster, each under a prefix of its
// own, so every subtest starts on an empty keyspace.
func opener(c *etcdcluster.Cluster) kvtest.Opener {
	return func(t *testing.T) kv.Engine {
		e, err := etcdkv.Open(etcdkv.Options{
			Endpoints: c.Endpoints(),
			Prefix:    fmt.Sprintf("t%d/", prefixes.Add(1)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
}

// TestConformance runs the suite every engine passes, on a real
// three-member cluster.
func TestConformance(t *testing.T) {
	c := etcdcluster.Start(t, 3)
	kvtest.RunConformance(t, opener(c))
}

// TestRangeConflicts: range reads are protected against phantoms by
// range compares (docs/kv.md).
func TestRangeConflicts(t *testing.T) {
	c := etcdcluster.Start(t, 3)
	kvtest.RunRangeConflictConformance(t, opener(c))
}

// BenchmarkEtcd runs the shared benchmarks on a 3-member loopback cluster.
func BenchmarkEtcd(b *testing.B) {
	c := etcdcluster.Start(b, 3)
	kvtest.RunBenchmarks(b, func(b *testing.B) kv.Engine {
		e, err := etcdkv.Open(etcdkv.Options{Endpoints: c.Endpoints(), Prefix: fmt.Sprintf("b%d/", prefixes.Add(1)), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { e.Close() })
		return e
	})
}
