package meta_test

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/metaclient"

	"google.golang.org/grpc"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/proto/metapb"
)

// serveStoppable serves s on a fresh port and returns a function that
// stops the gRPC server abruptly (connections closed, as when the process
// dies).
func serveStoppable(t testing.TB, s *meta.Server) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	noErr(t, err)
	gs := grpc.NewServer(rpcauth.ServerOptions(testToken)...)
	metapb.RegisterMetaServer(gs, meta.NewGRPCService(s))
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String(), gs.Stop
}

// Two meta servers over one engine behind one FailoverClient. One is
// killed in the middle of a storm of creates: every later operation goes
// through the other; the only failures are creates that were on the wire
// at the kill, reported as Unavailable ("may or may not have been
// applied"), and each of those really is either applied or not.
func TestFailoverClientSurvivesServerLoss(t *testing.T) {
	eng := openEngine(t)
	chunks := newMemChunks()
	s1, s2 := newEnvOn(t, eng, chunks).s, newEnvOn(t, eng, chunks).s
	a1, stop1 := serveStoppable(t, s1)
	a2, _ := serveStoppable(t, s2)
	// Only a1 is known for the first call, which makes a1 the server in
	// use, so that the kill hits it.
	var both atomic.Bool
	fc, err := metaclient.NewFailoverClient(metaclient.FailoverConfig{Token: testToken, Addrs: func() []string {
		if both.Load() {
			return []string{a1, a2}
		}
		return []string{a1}
	}})
	noErr(t, err)
	defer fc.CloseConn()
	noErr(t, ignore(fc.Mkdir(ctx, meta.Root, meta.P("/d"), 0o777, false)))
	both.Store(true)
	if fc.Current() != a1 {
		t.Fatalf("server in use %q, want %q", fc.Current(), a1)
	}

	const workers, perWorker = 8, 60
	var (
		wg        sync.WaitGroup
		done      atomic.Int64
		killOnce  sync.Once
		mu        sync.Mutex
		acked     = map[string]uint64{}
		uncertain = map[string]bool{}
		failures  []string
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				if done.Add(1) == workers*perWorker/3 {
					killOnce.Do(stop1)
				}
				name := fmt.Sprintf("/d/w%d-%d", w, i)
				r, err := fc.Create(ctx, meta.Root, meta.P(name), meta.CreateOptions{Mode: 0o644, Exclusive: true})
				mu.Lock()
				switch {
				case err == nil:
					acked[name] = r.Inode.ID
				case errcode.Is(err, errcode.Unavailable):
					uncertain[name] = true
				default:
					failures = append(failures, fmt.Sprintf("create %s: %v", name, err))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d creates acknowledged, %d in flight at the kill", len(acked), len(uncertain))
	if len(failures) > 0 {
		t.Fatalf("unexpected errors: %v", failures)
	}
	if len(uncertain) > workers {
		t.Fatalf("%d creates failed as unavailable; at most the %d in flight at the kill may", len(uncertain), workers)
	}
	if fc.Current() != a2 {
		t.Fatalf("client still prefers %q after %q died, want %q", fc.Current(), a1, a2)
	}
	for name, id := range acked {
		n, err := fc.Stat(ctx, meta.Root, meta.P(name))
		if err != nil || n.ID != id {
			t.Fatalf("acknowledged create %s (inode %d): stat %+v, %v", name, id, n, err)
		}
	}
	for name := range uncertain {
		if _, err := fc.Stat(ctx, meta.Root, meta.P(name)); err != nil && errcode.ErrnoOf(err) != syscall.ENOENT {
			t.Fatalf("in-flight create %s: stat: %v", name, err)
		}
	}
	// Every kind of call still works, through the survivor only.
	noErr(t, ignore(fc.Mkdir(ctx, meta.Root, meta.P("/d/sub"), 0o755, false)))
	// Rename an acknowledged file: which names were still in flight at
	// the kill depends on scheduling.
	var some string
	for name := range acked {
		some = name
		break
	}
	noErr(t, fc.Rename(ctx, meta.Root, meta.P(some), meta.P("/d/sub/moved"), 0))
	noErr(t, fc.SetXattr(ctx, meta.Root, meta.P("/d/sub/moved"), "user.k", []byte("v"), 0))
	page, err := fc.ReadDir(ctx, meta.Root, meta.P("/d/sub"), meta.ReadDirOptions{})
	noErr(t, err)
	if len(page.Entries) != 1 || page.Entries[0].Name != "moved" {
		t.Fatalf("readdir after failover: %+v", page.Entries)
	}
	noErr(t, fc.RemoveAll(ctx, meta.Root, meta.P("/d/sub")))
	drainGC(t, s2)
	fsckClean(t, s2, chunks)
}

// With every server down, a call that never left fails as Unavailable
// naming the servers tried; a non-failover error from a live server (here
// EEXIST) is returned as is, without trying another server.
func TestFailoverClientErrors(t *testing.T) {
	e := newEnv(t)
	a1, stop1 := serveStoppable(t, e.s)
	fc, err := metaclient.DialMany([]string{a1}, testToken)
	noErr(t, err)
	defer fc.CloseConn()
	noErr(t, ignore(fc.Mkdir(ctx, meta.Root, meta.P("/x"), 0o755, false)))
	_, err = fc.Mkdir(ctx, meta.Root, meta.P("/x"), 0o755, false)
	wantErrno(t, err, syscall.EEXIST, "mkdir of an existing directory")
	stop1()
	for _, op := range []struct {
		name string
		call func() error
	}{
		{"stat", func() error { return ignore(fc.Stat(ctx, meta.Root, meta.P("/x"))) }},
		{"unlink", func() error { return fc.Unlink(ctx, meta.Root, meta.P("/x/f")) }},
	} {
		err := op.call()
		if !errcode.Is(err, errcode.Unavailable) {
			t.Fatalf("%s with the only server down: %v, want Unavailable", op.name, err)
		}
	}
	if _, err := metaclient.DialMany(nil, testToken); err == nil {
		t.Fatal("DialMany with no address succeeded")
	}
	if _, err := metaclient.NewFailoverClient(metaclient.FailoverConfig{Addrs: func() []string { return nil }, Token: testToken}); err != nil {
		t.Fatal(err)
	}
	empty, _ := metaclient.NewFailoverClient(metaclient.FailoverConfig{Addrs: func() []string { return nil }, Token: testToken})
	if _, err := empty.StatFS(ctx); !errcode.Is(err, errcode.Unavailable) {
		t.Fatalf("statfs with no server known: %v, want Unavailable", err)
	}
}

// With a RetryWindow, a call made while no server is known (as while a
// restarted server has not registered yet) waits for one to appear.
func TestFailoverClientRetryWindow(t *testing.T) {
	e := newEnv(t)
	addr, _ := serveStoppable(t, e.s)
	var known atomic.Bool
	fc, err := metaclient.NewFailoverClient(metaclient.FailoverConfig{Token: testToken, RetryWindow: 30 * time.Second, Addrs: func() []string {
		if known.Load() {
			return []string{"127.0.0.1:1", addr} // a dead one first
		}
		return nil
	}})
	noErr(t, err)
	defer fc.CloseConn()
	go func() {
		time.Sleep(200 * time.Millisecond)
		known.Store(true)
	}()
	if _, err := fc.Mkdir(ctx, meta.Root, meta.P("/late"), 0o755, false); err != nil {
		t.Fatalf("mkdir while the server appears: %v", err)
	}
	if !known.Load() || fc.Current() != addr {
		t.Fatalf("call finished before the server was known (current %q)", fc.Current())
	}
}
