//go:build !fdb

package kvopen_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/service/kv/kvopen"
)

// Without -tags fdb, an fdb spec fails with an error that says how to get
// the engine, instead of a silent fallback to another engine.
func TestFDBWithoutBuildTag(t *testing.T) {
	for _, spec := range []string{"fdb", "fdb:/etc/foundationdb/fdb.cluster"} {
		e, err := kvopen.Open(spec)
		if err == nil {
			e.Close()
			t.Fatalf("Open(%q) succeeded in a binary built without -tags fdb", spec)
		}
		if !errors.Is(err, kvopen.ErrFDBNotBuilt) || !strings.Contains(err.Error(), "-tags fdb") {
			t.Fatalf("Open(%q) = %v, want ErrFDBNotBuilt naming -tags fdb", spec, err)
		}
	}
}
