package badgerkv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/emberfs/emberfs/service/kv"
)

// TestCommitWaitsForAnFsyncAfterItsWrite checks the group-commit promise on
// a real durable engine: when Transact returns, an fsync round that began
// after the commit's write was visible has finished. The real fsync is
// wrapped so that each round first records which keys are visible when it
// begins; keys it saw become "durable" when it ends. Every acknowledged key
// must be durable at the moment Transact returns. (Acknowledging without
// waiting for a round, or waiting for a round already running, fails this.)
func TestCommitWaitsForAnFsyncAfterItsWrite(t *testing.T) {
	e, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var mu sync.Mutex
	durable := map[string]bool{}
	rounds := 0
	realSync := e.gsync.sync
	e.gsync.sync = func() error {
		var seen []string
		err := e.ReadTransact(context.Background(), func(tx kv.ReadTx) error {
			kvs, err := tx.GetRange([]byte("k"), []byte("l"), kv.RangeOptions{})
			for _, kv := range kvs {
				seen = append(seen, string(kv.Key))
			}
			return err
		})
		if err != nil {
			return err
		}
		if err := realSync(); err != nil {
			return err
		}
		mu.Lock()
		for _, k := range seen {
			durable[k] = true
		}
		rounds++
		mu.Unlock()
		return nil
	}
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				k := fmt.Sprintf("k%02d-%03d", w, i)
				if err := e.Transact(context.Background(), func(tx kv.Tx) error {
					return tx.Set([]byte(k), []byte("v"))
				}); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				ok := durable[k]
				mu.Unlock()
				if !ok {
					errs <- fmt.Errorf("commit of %s acknowledged before an fsync covered it", k)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Not a speed check: group commit must never need more rounds than commits.
	if rounds == 0 || rounds > writers*each {
		t.Errorf("%d fsync rounds for %d commits", rounds, writers*each)
	}
	t.Logf("%d commits, %d fsync rounds", writers*each, rounds)
}

// TestFailedFsyncFailsTheCommitAndLaterOnes: a commit whose fsync failed is
// reported as outcome unknown (it is written, maybe not durable), and the
// engine refuses to acknowledge anything after it, since a later fsync
// that succeeds does not prove the earlier pages reached the disk.
func TestFailedFsyncFailsTheCommitAndLaterOnes(t *testing.T) {
	e, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	set := func(k string) error {
		return e.Transact(context.Background(), func(tx kv.Tx) error { return tx.Set([]byte(k), []byte("v")) })
	}
	if err := set("before"); err != nil {
		t.Fatal(err)
	}
	diskErr := errors.New("injected EIO")
	realSync := e.gsync.sync
	fail := true
	e.gsync.sync = func() error {
		if fail {
			return diskErr
		}
		return realSync()
	}
	if err := set("during"); !errors.Is(err, kv.ErrOutcomeUnknown) || !errors.Is(err, diskErr) {
		t.Fatalf("commit with a failed fsync: got %v, want kv.ErrOutcomeUnknown wrapping the fsync error", err)
	}
	fail = false
	if err := set("after"); !errors.Is(err, kv.ErrOutcomeUnknown) {
		t.Fatalf("commit after a failed fsync: got %v, want kv.ErrOutcomeUnknown", err)
	}
	// Reads still work.
	if err := e.ReadTransact(context.Background(), func(tx kv.ReadTx) error {
		_, found, err := tx.Get([]byte("before"))
		if err == nil && !found {
			err = errors.New("key committed before the failure is missing")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
