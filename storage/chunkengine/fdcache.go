package chunkengine

import (
	"container/list"
	"sync"

	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
)

// DefaultOpenFiles is how many data files an engine keeps open for
// reading when Options.OpenFiles is 0.
const DefaultOpenFiles = 1024

// fdKey names one data file: a chunk and a file generation. Generations
// are never reused, so a key names the same bytes for as long as the file
// exists.
type fdKey struct {
	id  ChunkID
	gen uint64
}

// openFile is a cached read-only descriptor of a data file. refs counts
// its users plus one while the cache lists it; the descriptor is closed
// when the count reaches zero.
type openFile struct {
	key  fdKey
	f    vfs.File
	refs int
	elem *list.Element // nil once no longer listed
}

// fdCache keeps data files open between reads, so a read costs a pread
// (or sendfile) instead of open + fstat + read + close. A committed
// version's bytes never change while its file exists, so a descriptor
// stays good for as long as its generation is committed; a removed file
// is dropped from the cache at once (its descriptor closes when the last
// reader lets go), so the cache never keeps deleted files' space in use.
type fdCache struct {
	mu  sync.Mutex
	max int
	m   map[fdKey]*openFile
	lru list.List // front: most recently used
}

func newFDCache(max int) *fdCache {
	return &fdCache{max: max, m: make(map[fdKey]*openFile)}
}

// get returns the cached file for k with a reference taken, or nil.
func (c *fdCache) get(k fdKey) *openFile {
	c.mu.Lock()
	defer c.mu.Unlock()
	of := c.m[k]
	if of == nil {
		return nil
	}
	of.refs++
	c.lru.MoveToFront(of.elem)
	return of
}

// add lists f under k and returns it with a reference taken for the
// caller. If another reader listed k meanwhile, f is closed and that
// file is returned instead. The least recently used entries past the
// limit are dropped.
func (c *fdCache) add(k fdKey, f vfs.File) *openFile {
	c.mu.Lock()
	if of := c.m[k]; of != nil {
		of.refs++
		c.lru.MoveToFront(of.elem)
		c.mu.Unlock()
		f.Close()
		return of
	}
	of := &openFile{key: k, f: f, refs: 2}
	of.elem = c.lru.PushFront(of)
	c.m[k] = of
	var evicted []*openFile
	for c.lru.Len() > c.max {
		old := c.lru.Back().Value.(*openFile)
		if c.unlistLocked(old) {
			evicted = append(evicted, old)
		}
	}
	c.mu.Unlock()
	for _, e := range evicted {
		e.f.Close()
	}
	return of
}

// unlistLocked removes of from the cache and drops the cache's reference;
// it reports whether the descriptor should now be closed.
func (c *fdCache) unlistLocked(of *openFile) bool {
	if of.elem == nil {
		return false
	}
	c.lru.Remove(of.elem)
	of.elem = nil
	delete(c.m, of.key)
	of.refs--
	return of.refs == 0
}

// release drops a reference taken by get or add.
func (c *fdCache) release(of *openFile) {
	c.mu.Lock()
	of.refs--
	last := of.refs == 0
	c.mu.Unlock()
	if last {
		of.f.Close()
	}
}

// drop forgets k (its file is being removed or replaced).
func (c *fdCache) drop(k fdKey) {
	c.mu.Lock()
	of := c.m[k]
	last := of != nil && c.unlistLocked(of)
	c.mu.Unlock()
	if last {
		of.f.Close()
	}
}

// closeAll drops every entry (engine close); files still in use close
// when their readers release them.
func (c *fdCache) closeAll() {
	c.mu.Lock()
	var last []*openFile
	for _, of := range c.m {
		if c.unlistLocked(of) {
			last = append(last, of)
		}
	}
	c.mu.Unlock()
	for _, of := range last {
		of.f.Close()
	}
}
