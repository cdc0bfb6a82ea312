package fuse

import (
	"sync"
	"time"
)

// selinuxXattr is the name SELinux-aware tools (ls -l, cp -a, find) read on
// every file. A FUSE mount is labelled by policy (genfscon), not per file,
// so the mount answers EOPNOTSUPP for it without asking meta; tools such as
// ls then stop asking for the rest of the file system, where ENODATA (what
// meta would say) makes them ask again for every entry.
const selinuxXattr = "security.selinux"

// missingXattrs remembers names getxattr found absent, per inode, for the
// attribute timeout. The kernel asks for security.capability before every
// write to a file (FUSE clears SB_NOSEC, so it cannot remember that a file
// has none), which would cost a metadata call per write. A set or remove
// through this mount forgets the inode's entries; a change by another client
// is seen once the entry expires, as for the attributes themselves.
type missingXattrs struct {
	ttl time.Duration
	now func() time.Time

	mu  sync.Mutex
	m   map[uint64]map[string]time.Time // inode -> name -> expiry
	n   int                             // entries in m
	gen uint64                          // bumped by every forget
}

// maxMissingXattrs bounds the cache; when full it starts over.
const maxMissingXattrs = 1 << 16

func newMissingXattrs(ttl time.Duration) *missingXattrs {
	return &missingXattrs{ttl: ttl, now: time.Now, m: map[uint64]map[string]time.Time{}}
}

// known reports whether name was found absent on inode id within the ttl.
func (c *missingXattrs) known(id uint64, name string) bool {
	if c.ttl <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.m[id][name]
	if ok && c.now().After(exp) {
		delete(c.m[id], name)
		c.n--
		return false
	}
	return ok
}

// generation is read before asking meta and passed to add.
func (c *missingXattrs) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// add records that name is absent on inode id, as meta answered after
// generation() returned gen. If a set or remove through this mount finished
// since (forget ran), the answer may predate it and is not kept.
func (c *missingXattrs) add(id uint64, name string, gen uint64) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.n >= maxMissingXattrs {
		c.m, c.n = map[uint64]map[string]time.Time{}, 0
	}
	names := c.m[id]
	if names == nil {
		names = map[string]time.Time{}
		c.m[id] = names
	}
	if _, ok := names[name]; !ok {
		c.n++
	}
	names[name] = c.now().Add(c.ttl)
}

// forget drops what is known of inode id (its xattrs changed here).
func (c *missingXattrs) forget(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.n -= len(c.m[id])
	delete(c.m, id)
}
