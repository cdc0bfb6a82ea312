package badgerkv

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Group commit.
//
// Badger's own SyncWrites fsyncs the write-ahead log once per transaction
// (db.writeToLSM syncs after each request of a batch), so concurrent commits
// never share an fsync. The durable engine therefore opens Badger without
// SyncWrites and makes commits durable itself: a commit whose writes have
// reached the log (Badger's commit callback ran) waits in groupSync for one
// fsync round that *started after* that moment. One caller at a time runs a
// round; everyone who arrived while it ran is covered by the next round,
// which one of them runs. N concurrent commits cost about two fsyncs, not N.

// groupSync hands out fsync rounds.
type groupSync struct {
	sync func() error // makes everything written so far durable

	mu      sync.Mutex
	cond    sync.Cond
	started uint64 // rounds begun
	done    uint64 // rounds finished (rounds finish in order: one runs at a time)
	running bool
	// broken is the first fsync error. After a failed fsync the kernel may
	// have dropped the dirty pages it could not write, so a later fsync
	// that succeeds proves nothing: every later commit fails too.
	broken error
}

func newGroupSync(syncFn func() error) *groupSync {
	g := &groupSync{sync: syncFn}
	g.cond.L = &g.mu
	return g
}

// wait returns once a sync round that began after the call has finished,
// so everything written before the call is durable.
func (g *groupSync) wait() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	// A round running now may have begun before our writes: we need the
	// next one to begin.
	target := g.started + 1
	for g.done < target && g.broken == nil {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		round := g.started
		g.mu.Unlock()
		err := g.sync()
		g.mu.Lock()
		g.running = false
		g.done = round
		if err != nil && g.broken == nil {
			g.broken = err
		}
		g.cond.Broadcast()
	}
	return g.broken
}

// walSyncer fsyncs Badger's logs in dir: every memtable write-ahead log
// (*.mem, the current one and any not yet flushed to a table) and every value
// log (*.vlog). Files are found by listing dir each round, so a log Badger
// created since the last round is included (and the directory is fsynced so
// that its name survives a crash); descriptors are kept between rounds.
// A log Badger deletes after flushing it has reached a synced table first.
type walSyncer struct {
	dir   string
	files map[string]*os.File
}

func newWALSyncer(dir string) *walSyncer {
	return &walSyncer{dir: dir, files: map[string]*os.File{}}
}

func (w *walSyncer) sync() error {
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("badgerkv: list %s for fsync: %w", w.dir, err)
	}
	seen := make(map[string]bool, len(w.files))
	added := false
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".mem") && !strings.HasSuffix(name, ".vlog") {
			continue
		}
		seen[name] = true
		if w.files[name] != nil {
			continue
		}
		f, err := os.Open(w.dir + "/" + name)
		if errors.Is(err, os.ErrNotExist) {
			continue // flushed and removed since the listing
		}
		if err != nil {
			return fmt.Errorf("badgerkv: open %s for fsync: %w", name, err)
		}
		w.files[name] = f
		added = true
	}
	for name, f := range w.files {
		if !seen[name] {
			f.Close()
			delete(w.files, name)
		}
	}
	if added {
		if err := syncDir(w.dir); err != nil {
			return err
		}
	}
	for name, f := range w.files {
		// fdatasync, as Badger's own SyncWrites (msync with MS_SYNC is a
		// data sync): the logs are written through mmap, which updates
		// their mtime, and a full fsync would commit that to the journal
		// every round. A log removed since the listing still syncs (the
		// descriptor keeps it); its data is in a synced table by then.
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("badgerkv: fdatasync %s: %w", name, err)
		}
	}
	return nil
}

func (w *walSyncer) close() {
	for name, f := range w.files {
		f.Close()
		delete(w.files, name)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("badgerkv: open directory %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("badgerkv: fsync directory %s: %w", dir, err)
	}
	return nil
}
