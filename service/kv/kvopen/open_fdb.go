//go:build fdb

package kvopen

import (
	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/fdbkv"
)

func init() {
	openFDB = func(clusterFile string, opts Options) (kv.Engine, error) {
		return fdbkv.Open(fdbkv.Options{ClusterFile: clusterFile, MaxRetries: opts.MaxRetries, Logger: opts.Logger})
	}
}
