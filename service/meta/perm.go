package meta

import (
	"slices"
	"strings"
)

// User is the caller's credentials, checked on every operation.
type User struct {
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups
}

// Root is the superuser, which bypasses permission checks.
var Root = User{}

func (u User) isRoot() bool { return u.UID == 0 }

func (u User) inGroup(gid uint32) bool { return u.GID == gid || slices.Contains(u.Groups, gid) }

// Access bits for access().
const (
	permR = 4
	permW = 2
	permX = 1
)

// access reports whether u may access n with the requested rwx bits, by the
// POSIX owner / group / other classes. Root may do anything except execute a
// non-directory without any execute bit.
func access(u User, n *Inode, want uint32) bool {
	if u.isRoot() {
		if want&permX != 0 && n.Type != TypeDir {
			return n.Mode&0o111 != 0
		}
		return true
	}
	var bits uint32
	switch {
	case u.UID == n.UID:
		bits = n.Mode >> 6 & 7
	case u.inGroup(n.GID):
		bits = n.Mode >> 3 & 7
	default:
		bits = n.Mode & 7
	}
	return bits&want == want
}

func needName(want uint32) string {
	var s []string
	if want&permR != 0 {
		s = append(s, "read")
	}
	if want&permW != 0 {
		s = append(s, "write")
	}
	if want&permX != 0 {
		s = append(s, "search")
	}
	return strings.Join(s, "+")
}

func checkAccess(u User, n *Inode, want uint32, what string) error {
	if !access(u, n, want) {
		return errAccess(what, needName(want)+" permission")
	}
	return nil
}

// checkSticky enforces the sticky bit: in a sticky directory only the owner
// of the entry, the owner of the directory or root may remove or rename it.
func checkSticky(u User, dir, child *Inode, what string) error {
	if dir.Mode&ModeSticky == 0 || u.isRoot() || u.UID == dir.UID || u.UID == child.UID {
		return nil
	}
	return errPerm("%s: sticky directory: only the owner may remove or rename it", what)
}

func isOwner(u User, n *Inode) bool { return u.isRoot() || u.UID == n.UID }

// dropSetIDOnWrite clears what a change of n's data by u clears, as the
// kernel does for a local file system (should_remove_suid): setuid always,
// setgid when the file is group-executable or u is not in its group; root
// (CAP_FSETID) keeps both. A truncate goes through here; writes do not
// reach meta, so for them the FUSE mount relays the kernel's own clearing.
func dropSetIDOnWrite(u User, n *Inode) {
	if u.isRoot() || n.Type != TypeFile {
		return
	}
	n.Mode &^= ModeSetuid
	if n.Mode&ModeSetgid != 0 && (n.Mode&0o010 != 0 || !u.inGroup(n.GID)) {
		n.Mode &^= ModeSetgid
	}
}
