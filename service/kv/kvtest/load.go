package kvtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emberfs/emberfs/service/kv"
)

const (
	numAccounts     = 8
	initialBalance  = 100
	transferWorkers = 8
	transfersEach   = 30
)

func accountKey(i int) []byte { return fmt.Appendf(nil, "acct/%02d", i) }

// transactPersist runs fn until it commits: a caller that gets
// ErrTooManyRetries may simply try again, because that error means the last
// attempt did not commit. It returns how often the bound was hit.
func transactPersist(ctx context.Context, e kv.Engine, fn func(tx kv.Tx) error) (gaveUp int, err error) {
	for {
		err := e.Transact(ctx, fn)
		if !errors.Is(err, kv.ErrTooManyRetries) {
			return gaveUp, err
		}
		if !errors.Is(err, kv.ErrConflict) {
			return gaveUp, fmt.Errorf("ErrTooManyRetries does not wrap ErrConflict: %w", err)
		}
		gaveUp++
	}
}

func readInt(tx kv.ReadTx, key []byte) (int, error) {
	v, found, err := tx.Get(key)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("key %q missing", key)
	}
	return strconv.Atoi(string(v))
}

// testTransfersPreserveTotal moves money between accounts from many
// goroutines while auditors check that every snapshot sums to the same
// total. Afterwards each balance must equal its start plus the transfers
// that were acknowledged: a lost update shows up as a mismatch.
func testTransfersPreserveTotal(t *testing.T, e kv.Engine) {
	ctx := t.Context()
	var pairs []string
	for i := range numAccounts {
		pairs = append(pairs, string(accountKey(i)), strconv.Itoa(initialBalance))
	}
	mustSet(t, e, pairs...)
	const total = numAccounts * initialBalance

	var (
		deltas  [transferWorkers][numAccounts]int
		applied atomic.Int64
		gaveUp  atomic.Int64
		workers sync.WaitGroup
		stop    = make(chan struct{})
		audits  sync.WaitGroup
		errMu   sync.Mutex
		errs    []error
	)
	report := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}
	for w := range transferWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for range transfersEach {
				from := rng.IntN(numAccounts)
				to := (from + 1 + rng.IntN(numAccounts-1)) % numAccounts
				amount := 1 + rng.IntN(30)
				var moved bool // set by the attempt that commits
				n, err := transactPersist(ctx, e, func(tx kv.Tx) error {
					moved = false
					a, err := readInt(tx, accountKey(from))
					if err != nil {
						return err
					}
					b, err := readInt(tx, accountKey(to))
					if err != nil {
						return err
					}
					if a < amount {
						return nil // insufficient funds: commit nothing
					}
					if err := tx.Set(accountKey(from), []byte(strconv.Itoa(a-amount))); err != nil {
						return err
					}
					if err := tx.Set(accountKey(to), []byte(strconv.Itoa(b+amount))); err != nil {
						return err
					}
					moved = true
					return nil
				})
				gaveUp.Add(int64(n))
				if err != nil {
					report(fmt.Errorf("transfer: %w", err))
					return
				}
				if moved {
					deltas[w][from] -= amount
					deltas[w][to] += amount
					applied.Add(1)
				}
			}
		}()
	}
	audit := func(name string, sum func() (int, error)) {
		defer audits.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s, err := sum()
			if err != nil {
				report(fmt.Errorf("%s audit: %w", name, err))
				return
			}
			if s != total {
				report(fmt.Errorf("%s audit: balances sum to %d, want %d", name, s, total))
				return
			}
		}
	}
	audits.Add(2)
	go audit("snapshot range", func() (int, error) {
		sum := 0
		err := e.ReadTransact(ctx, func(tx kv.ReadTx) error {
			sum = 0
			kvs, err := tx.GetRange([]byte("acct/"), kv.PrefixEnd([]byte("acct/")), kv.RangeOptions{})
			if err != nil {
				return err
			}
			if len(kvs) != numAccounts {
				return fmt.Errorf("%d accounts, want %d", len(kvs), numAccounts)
			}
			for _, p := range kvs {
				n, err := strconv.Atoi(string(p.Value))
				if err != nil {
					return err
				}
				if n < 0 {
					return fmt.Errorf("account %q overdrawn: %d", p.Key, n)
				}
				sum += n
			}
			return nil
		})
		return sum, err
	})
	go audit("point reads in Transact", func() (int, error) {
		sum := 0
		_, err := transactPersist(ctx, e, func(tx kv.Tx) error {
			sum = 0
			for i := range numAccounts {
				n, err := readInt(tx, accountKey(i))
				if err != nil {
					return err
				}
				sum += n
			}
			return nil
		})
		return sum, err
	})
	workers.Wait()
	close(stop)
	audits.Wait()
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if applied.Load() == 0 {
		t.Fatal("no transfer was applied; the test exercised nothing")
	}
	err := e.ReadTransact(ctx, func(tx kv.ReadTx) error {
		sum := 0
		for i := range numAccounts {
			want := initialBalance
			for w := range transferWorkers {
				want += deltas[w][i]
			}
			got, err := readInt(tx, accountKey(i))
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("account %d = %d, acknowledged transfers give %d (lost or phantom update)", i, got, want)
			}
			sum += got
		}
		if sum != total {
			return fmt.Errorf("final total %d, want %d", sum, total)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d transfers applied; retry bound hit %d times (callers retried)", applied.Load(), gaveUp.Load())
}

// testConcurrentCounter increments one key from many goroutines: it must end
// at exactly the number of acknowledged increments.
func testConcurrentCounter(t *testing.T, e kv.Engine) {
	const workers, each = 8, 25
	ctx := t.Context()
	mustSet(t, e, "counter", "0")
	var (
		wg       sync.WaitGroup
		attempts atomic.Int64
		gaveUp   atomic.Int64
		errs     = make(chan error, workers)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				n, err := transactPersist(ctx, e, func(tx kv.Tx) error {
					attempts.Add(1)
					n, err := readInt(tx, []byte("counter"))
					if err != nil {
						return err
					}
					return tx.Set([]byte("counter"), []byte(strconv.Itoa(n+1)))
				})
				gaveUp.Add(int64(n))
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("increment: %v", err)
	}
	wantValue(t, e, "counter", strconv.Itoa(workers*each))
	if attempts.Load() < workers*each {
		t.Fatalf("%d attempts for %d increments", attempts.Load(), workers*each)
	}
	t.Logf("%d increments took %d attempts; retry bound hit %d times", workers*each, attempts.Load(), gaveUp.Load())
}

// testRetryBound makes every attempt conflict: Transact must give up with
// ErrTooManyRetries wrapping ErrConflict, having written nothing.
func testRetryBound(t *testing.T, e kv.Engine) {
	mustSet(t, e, "hot", "0")
	attempts := 0
	err := e.Transact(t.Context(), func(tx kv.Tx) error {
		attempts++
		if attempts > 10_000 {
			return errors.New("no retry bound after 10000 attempts")
		}
		if _, _, err := tx.Get([]byte("hot")); err != nil {
			return err
		}
		if err := e.Transact(context.Background(), set("hot", strconv.Itoa(attempts))); err != nil {
			return fmt.Errorf("intruder: %w", err)
		}
		return tx.Set([]byte("never"), []byte("written"))
	})
	if !errors.Is(err, kv.ErrTooManyRetries) || !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("always-conflicting transaction: err = %v, want ErrTooManyRetries wrapping ErrConflict", err)
	}
	if attempts < 2 {
		t.Fatalf("gave up after %d attempts without retrying", attempts)
	}
	wantAbsent(t, e, "never")
	wantValue(t, e, "hot", strconv.Itoa(attempts))
	t.Logf("gave up after %d attempts: %v", attempts, err)
}

// testCommittedWritesVisibleAtOnce: once Transact returns, every transaction
// begun afterwards reads the write, even while other goroutines commit
// concurrently (an engine that acknowledges before earlier commits land
// would hand out an older read version).
func testCommittedWritesVisibleAtOnce(t *testing.T, e kv.Engine) {
	const writers, rounds = 16, 40
	var wg sync.WaitGroup
	var missing atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				key := []byte(fmt.Sprintf("vis/%02d/%03d", w, r))
				if err := e.Transact(t.Context(), func(tx kv.Tx) error { return tx.Set(key, []byte("v")) }); err != nil {
					t.Error(err)
					return
				}
				err := e.ReadTransact(t.Context(), func(tx kv.ReadTx) error {
					if _, found, err := tx.Get(key); err != nil || !found {
						missing.Add(1)
						return err
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				err = e.Transact(t.Context(), func(tx kv.Tx) error {
					if _, found, err := tx.Get(key); err != nil || !found {
						missing.Add(1)
						return err
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := missing.Load(); n > 0 {
		t.Fatalf("%d reads after an acknowledged commit did not see it", n)
	}
}
