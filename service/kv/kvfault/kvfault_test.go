package kvfault_test

import (
	"context"
	"errors"
	"testing"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/badgerkv"
	"github.com/emberfs/emberfs/service/kv/kvfault"
	"github.com/emberfs/emberfs/service/kv/kvtest"
)

func open(t *testing.T, maxRetries int) *kvfault.Engine {
	t.Helper()
	inner, err := badgerkv.OpenMemory(badgerkv.Options{MaxRetries: maxRetries})
	if err != nil {
		t.Fatal(err)
	}
	e := kvfault.Wrap(inner)
	t.Cleanup(func() { e.Close() })
	return e
}

// With no faults armed the wrapper is the engine it wraps.
func TestConformanceWithoutFaults(t *testing.T) {
	kvtest.RunConformance(t, func(t *testing.T) kv.Engine {
		inner, err := badgerkv.OpenMemory(badgerkv.Options{MaxRetries: 20})
		if err != nil {
			t.Fatal(err)
		}
		return kvfault.Wrap(inner)
	})
}

func TestTransientReadIsRetriedByTheEngine(t *testing.T) {
	ctx := context.Background()
	e := open(t, 10)
	key := []byte("k")
	e.FailReadsOf(key, 2)
	attempts := 0
	err := e.Transact(ctx, func(tx kv.Tx) error {
		attempts++
		if _, _, err := tx.Get(key); err != nil {
			return err // passed on unchanged: the engine retries
		}
		return tx.Set(key, []byte("v"))
	})
	if err != nil || attempts != 3 || e.Injected() != 2 {
		t.Fatalf("err %v after %d attempts, %d injected; want success on attempt 3", err, attempts, e.Injected())
	}
	e.FailReadsOf(key, 1)
	reads := 0
	err = e.ReadTransact(ctx, func(tx kv.ReadTx) error {
		reads++
		v, ok, err := tx.Get(key)
		if err == nil && (!ok || string(v) != "v") {
			t.Errorf("read %q %v", v, ok)
		}
		return err
	})
	if err != nil || reads != 2 {
		t.Fatalf("read-only: err %v after %d attempts; want success on attempt 2", err, reads)
	}
}

func TestTransientReadReplacedByTheBodyIsNotRetried(t *testing.T) {
	e := open(t, 10)
	e.FailReadsOf([]byte("k"), 1)
	attempts := 0
	replaced := errors.New("body's own error")
	err := e.Transact(context.Background(), func(tx kv.Tx) error {
		attempts++
		if _, _, err := tx.Get([]byte("k")); err != nil {
			return replaced
		}
		return nil
	})
	if err != replaced || attempts != 1 {
		t.Fatalf("err %v after %d attempts; want the body's error after 1", err, attempts)
	}
}

func TestPersistentTransientErrorsHitTheRetryBound(t *testing.T) {
	e := open(t, 3)
	e.FailReadsOf([]byte("k"), 1000)
	err := e.Transact(context.Background(), func(tx kv.Tx) error {
		_, _, err := tx.Get([]byte("k"))
		return err
	})
	if !errors.Is(err, kv.ErrTooManyRetries) || !errors.Is(err, kv.ErrTransient) || e.Injected() != 4 {
		t.Fatalf("err %v, %d injected; want ErrTooManyRetries wrapping ErrTransient after 4 attempts", err, e.Injected())
	}
}

func TestCommitOutcomeUnknown(t *testing.T) {
	ctx := context.Background()
	e := open(t, 10)
	for _, c := range []struct {
		fault   kvfault.CommitFault
		key     string
		applied bool
	}{{kvfault.CommitThenUnknown, "applied", true}, {kvfault.AbortThenUnknown, "dropped", false}} {
		e.FailNextCommit(c.fault)
		attempts := 0
		err := e.Transact(ctx, func(tx kv.Tx) error {
			attempts++
			return tx.Set([]byte(c.key), []byte("v"))
		})
		if !errors.Is(err, kv.ErrOutcomeUnknown) || attempts != 1 {
			t.Fatalf("%s: err %v after %d attempts; want ErrOutcomeUnknown after 1", c.key, err, attempts)
		}
		var found bool
		if err := e.ReadTransact(ctx, func(tx kv.ReadTx) error {
			_, found, err = tx.Get([]byte(c.key))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if found != c.applied {
			t.Fatalf("%s: present %v, want %v", c.key, found, c.applied)
		}
	}
}

func TestActiveCountsBodies(t *testing.T) {
	e := open(t, 10)
	var inside int
	if err := e.Transact(context.Background(), func(tx kv.Tx) error { inside = e.Active(); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != 1 || e.Active() != 0 {
		t.Fatalf("active inside %d, after %d; want 1 and 0", inside, e.Active())
	}
}
