package fuse

import (
	"testing"
	"time"
)

func TestMissingXattrs(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newMissingXattrs(10 * time.Second)
	c.now = func() time.Time { return now }
	if c.known(1, "security.capability") {
		t.Fatal("known before anything was added")
	}
	c.add(1, "security.capability", c.generation())
	if !c.known(1, "security.capability") || c.known(1, "user.x") || c.known(2, "security.capability") {
		t.Fatal("an absent name is remembered for its inode and name only")
	}
	now = now.Add(11 * time.Second)
	if c.known(1, "security.capability") {
		t.Fatal("remembered past the timeout")
	}
	c.add(1, "user.x", c.generation())
	c.forget(1)
	if c.known(1, "user.x") {
		t.Fatal("a set or remove through the mount must forget the inode's entries")
	}
	// An answer read before a set finished must not be kept after it.
	gen := c.generation()
	c.forget(3) // a set on any inode finished meanwhile
	c.add(1, "user.y", gen)
	if c.known(1, "user.y") {
		t.Fatal("an absent answer older than a set was kept")
	}
	off := newMissingXattrs(0)
	off.add(1, "user.z", off.generation())
	if off.known(1, "user.z") {
		t.Fatal("with attribute caching off nothing is remembered")
	}
}
