package fuse

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strconv"
	"sync"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/emberfs/emberfs/service/meta"
)

// The kernel tells a FUSE server the caller's uid, gid and thread id but not
// its supplementary groups; those come from /proc/<tid>/status. A short-lived
// cache keyed by thread id (checked against uid/gid, so a reused id of
// another user is read again) keeps that to one read per thread and second.
const groupsTTL = time.Second

type credCache struct {
	mu      sync.Mutex
	entries map[uint32]credEntry
	now     func() time.Time
	procDir string
}

type credEntry struct {
	uid, gid uint32
	groups   []uint32
	read     time.Time
}

func newCredCache() *credCache {
	return &credCache{entries: map[uint32]credEntry{}, now: time.Now, procDir: "/proc"}
}

// user returns the credentials of the process behind a FUSE request. A
// request without a caller (kernel writeback) acts as root: the kernel has
// already checked the open that allowed it.
func (c *credCache) user(ctx context.Context) meta.User {
	caller, ok := gofuse.FromContext(ctx)
	if !ok {
		return meta.User{}
	}
	u := meta.User{UID: caller.Uid, GID: caller.Gid}
	if caller.Pid == 0 {
		return u
	}
	u.Groups = c.groups(caller.Pid, caller.Uid, caller.Gid)
	return u
}

func (c *credCache) groups(pid, uid, gid uint32) []uint32 {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[pid]
	c.mu.Unlock()
	if ok && e.uid == uid && e.gid == gid && now.Sub(e.read) < groupsTTL {
		return e.groups
	}
	groups := readGroups(c.procDir + "/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	c.mu.Lock()
	if len(c.entries) > 4096 { // bound the cache; stale entries are cheap to re-read
		for k, v := range c.entries {
			if now.Sub(v.read) >= groupsTTL {
				delete(c.entries, k)
			}
		}
	}
	c.entries[pid] = credEntry{uid: uid, gid: gid, groups: groups, read: now}
	c.mu.Unlock()
	return groups
}

// readGroups parses the "Groups:" line of a /proc status file; a process
// that is gone (or unreadable) has no supplementary groups.
func readGroups(path string) []uint32 {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return parseGroups(data)
}

func parseGroups(status []byte) []uint32 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Bytes()
		rest, ok := bytes.CutPrefix(line, []byte("Groups:"))
		if !ok {
			continue
		}
		var out []uint32
		for _, f := range bytes.Fields(rest) {
			g, err := strconv.ParseUint(string(f), 10, 32)
			if err == nil {
				out = append(out, uint32(g))
			}
		}
		return out
	}
	return nil
}
