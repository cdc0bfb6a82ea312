package etcdkv_test

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
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

// TestEtcdOpLimits: a commit over the operation limit fails with
// kv.ErrTxnTooLarge naming etcd's flag, whether the engine refuses it
// before sending (its configured limit) or the server does (an engine told
// a limit above the server's --max-txn-ops 65536); nothing is written.
func TestEtcdOpLimits(t *testing.T) {
	c := etcdcluster.Start(t, 3)
	for _, tc := range []struct {
		name      string
		engineMax int
		keys      int
		mention   string
	}{
		{"engine", 10, 11, "--max-txn-ops"},
		{"server", 1 << 20, etcdkv.DefaultMaxTxnOps + 1, "too many operations"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := etcdkv.Open(etcdkv.Options{Endpoints: c.Endpoints(), Prefix: fmt.Sprintf("lim%d/", prefixes.Add(1)), MaxTxnOps: tc.engineMax, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			err = e.Transact(t.Context(), func(tx kv.Tx) error {
				for i := range tc.keys {
					if err := tx.Set(fmt.Appendf(nil, "k%06d", i), nil); err != nil {
						return err
					}
				}
				return nil
			})
			if !errors.Is(err, kv.ErrTxnTooLarge) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("commit of %d keys with limit %d: %v, want ErrTxnTooLarge mentioning %q", tc.keys, tc.engineMax, err, tc.mention)
			}
			err = e.ReadTransact(t.Context(), func(tx kv.ReadTx) error {
				kvs, err := tx.GetRange(nil, []byte("\xff"), kv.RangeOptions{Limit: 1})
				if err == nil && len(kvs) != 0 {
					err = fmt.Errorf("refused transaction left %q behind", kvs[0].Key)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
