package meta

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/kv/badgerkv"
)

// Several meta servers over one durable Badger engine; many goroutines run
// random creates, mkdirs, links, renames (plain, noreplace, exchange, of
// files and directories, across directories), unlinks, rmdirs and recursive
// removes through different servers. Only POSIX errors are acceptable, and
// afterwards fsck must find every invariant intact.
func TestConcurrentStormKeepsInvariants(t *testing.T) {
	eng, err := badgerkv.Open(t.TempDir(), badgerkv.Options{Logger: testutil.Logger(), MaxRetries: 10_000})
	noErr(t, err)
	defer eng.Close()
	chunks := newMemChunks()
	var servers []*Server
	for range 4 {
		servers = append(servers, newEnvOn(t, eng, chunks).s)
	}
	dirs := []string{"/a", "/b", "/a/x", "/b/y"}
	for _, d := range dirs {
		noErr(t, ignore(servers[0].Mkdir(ctx, Root, P(d), 0o777, true)))
	}
	paths := func(r *rand.Rand) string {
		base := []string{"/a", "/b", "/a/x", "/b/y", "/a/x/n1", "/b/n2"}[r.IntN(6)]
		return fmt.Sprintf("%s/n%d", base, r.IntN(4))
	}
	allowed := map[syscall.Errno]bool{syscall.ENOENT: true, syscall.EEXIST: true, syscall.ENOTDIR: true,
		syscall.EISDIR: true, syscall.ENOTEMPTY: true, syscall.EINVAL: true, syscall.EBUSY: true,
		syscall.EPERM: true} // EPERM: hard link to a directory
	const workers, opsEach = 24, 120
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	counts := map[string]int{}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			s := servers[w%len(servers)]
			for range opsEach {
				var err error
				op := r.IntN(10)
				name := [...]string{"create", "mkdir", "link", "rename", "noreplace", "exchange", "unlink", "rmdir", "removeall", "openunlinkclose"}[op]
				switch op {
				case 0:
					_, err = s.Create(ctx, Root, P(paths(r)), CreateOptions{Mode: 0o644, Exclusive: r.IntN(2) == 0})
				case 1:
					_, err = s.Mkdir(ctx, Root, P(paths(r)), 0o755, false)
				case 2:
					_, err = s.Link(ctx, Root, P(paths(r)), P(paths(r)))
				case 3:
					err = s.Rename(ctx, Root, P(paths(r)), P(paths(r)), 0)
				case 4:
					err = s.Rename(ctx, Root, P(paths(r)), P(paths(r)), RenameNoReplace)
				case 5:
					err = s.Rename(ctx, Root, P(paths(r)), P(paths(r)), RenameExchange)
				case 6:
					err = s.Unlink(ctx, Root, P(paths(r)))
				case 7:
					err = s.Rmdir(ctx, Root, P(paths(r)))
				case 8:
					if r.IntN(4) != 0 {
						continue // keep whole-tree removals rarer than the rest
					}
					err = s.RemoveAll(ctx, Root, P(paths(r)))
				case 9:
					p := paths(r)
					var o OpenResult
					if o, err = s.Create(ctx, Root, P(p), CreateOptions{Write: true, ClientID: fmt.Sprint("w", w)}); err == nil {
						chunks.write(o.Inode.ID, uint64(r.IntN(1000)))
						s.Unlink(ctx, Root, P(p))
						_, err = s.Close(ctx, Root, CloseOptions{Inode: o.Inode.ID, Session: o.Session, UpdateLength: true})
						if err != nil {
							err = fmt.Errorf("created=%v session=%x: %w", o.Created, o.Session, err)
						}
					}
				}
				mu.Lock()
				if err == nil {
					counts[name]++
				} else if !allowed[errcode.ErrnoOf(err)] {
					failures = append(failures, fmt.Sprintf("%s: %v", name, err))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d unexpected failures, first: %v", len(failures), failures)
	}
	t.Logf("successful ops: %v", counts)
	for _, op := range []string{"create", "mkdir", "rename", "unlink", "exchange"} {
		if counts[op] == 0 {
			t.Errorf("no %s ever succeeded: the storm did not exercise it", op)
		}
	}
	fsckClean(t, servers[1], nil)
	drainGC(t, servers[2])
	fsckClean(t, servers[3], chunks)
}
