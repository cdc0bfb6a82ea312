package meta

import (
	"syscall"
	"testing"
	"time"
)

var (
	bob   = User{UID: 1001, GID: 1001, Groups: []uint32{1000}} // in alice's group through a supplementary group
	carol = User{UID: 1002, GID: 1002}
)

// permFixture (owners alice:1000 unless noted):
//
//	/p        0777 root
//	/p/f600   0600   /p/f640 0640   /p/f604 0604   /p/f000 0000   /p/f664 0664
//	/p/d700   0700 with x inside       /p/d755 0755   /p/dg775 0775
//	/tmp      1777 root, /tmp/carolf owned by carol
//	/sg       2775 root:1000
func permFixture(t *testing.T, s *Server) {
	t.Helper()
	mk := func(p string, mode uint32, dir bool) {
		if dir {
			noErr(t, ignore(s.Mkdir(ctx, Root, P(p), mode, false)))
		} else {
			noErr(t, ignore(s.Create(ctx, Root, P(p), CreateOptions{Mode: mode})))
		}
		noErr(t, ignore(s.SetAttr(ctx, Root, P(p), SetAttr{UID: &alice.UID, GID: &alice.GID, Mode: &mode})))
	}
	noErr(t, ignore(s.Mkdir(ctx, Root, P("/p"), 0o777, false)))
	for _, f := range []struct {
		n string
		m uint32
	}{{"f600", 0o600}, {"f640", 0o640}, {"f604", 0o604}, {"f000", 0}, {"f664", 0o664}} {
		mk("/p/"+f.n, f.m, false)
	}
	mk("/p/d700", 0o700, true)
	noErr(t, ignore(s.Create(ctx, Root, P("/p/d700/x"), CreateOptions{Mode: 0o644})))
	mk("/p/d755", 0o755, true)
	mk("/p/dg775", 0o775, true)
	noErr(t, ignore(s.Mkdir(ctx, Root, P("/tmp"), 0o1777, false)))
	noErr(t, ignore(s.Create(ctx, carol, P("/tmp/carolf"), CreateOptions{Mode: 0o666})))
	noErr(t, ignore(s.Mkdir(ctx, Root, P("/sg"), 0o2775, false)))
	g := uint32(1000)
	noErr(t, ignore(s.SetAttr(ctx, Root, P("/sg"), SetAttr{GID: &g})))
}

func TestPermissionMatrix(t *testing.T) {
	openR := func(p string) func(*Server, User) error {
		return func(s *Server, u User) error { return ignore(s.Open(ctx, u, P(p), OpenOptions{Read: true})) }
	}
	openW := func(p string) func(*Server, User) error {
		return func(s *Server, u User) error {
			return ignore(s.Open(ctx, u, P(p), OpenOptions{Write: true, ClientID: "c"}))
		}
	}
	create := func(p string) func(*Server, User) error {
		return func(s *Server, u User) error { return ignore(s.Create(ctx, u, P(p), CreateOptions{Mode: 0o644})) }
	}
	unlink := func(p string) func(*Server, User) error {
		return func(s *Server, u User) error { return s.Unlink(ctx, u, P(p)) }
	}
	users := []struct {
		name string
		u    User
	}{{"root", Root}, {"alice(owner)", alice}, {"bob(group)", bob}, {"carol(other)", carol}}
	const (
		ok  = 0
		acc = syscall.EACCES
		prm = syscall.EPERM
	)
	yr := 1_600_000_000
	explicit := time.Unix(int64(yr), 0)
	mode := uint32(0o777)
	toBob, toGroup1000, toGroup1002 := uint32(1001), uint32(1000), uint32(1002)
	cases := []struct {
		name string
		op   func(*Server, User) error
		want [4]syscall.Errno // root, alice, bob, carol
	}{
		{"read f600", openR("/p/f600"), [4]syscall.Errno{ok, ok, acc, acc}},
		{"write f600", openW("/p/f600"), [4]syscall.Errno{ok, ok, acc, acc}},
		{"read f640", openR("/p/f640"), [4]syscall.Errno{ok, ok, ok, acc}},
		{"write f640", openW("/p/f640"), [4]syscall.Errno{ok, ok, acc, acc}},
		{"read f604", openR("/p/f604"), [4]syscall.Errno{ok, ok, acc, ok}}, // group class denies before other
		{"read f000", openR("/p/f000"), [4]syscall.Errno{ok, acc, acc, acc}},
		{"stat through d700", func(s *Server, u User) error { return ignore(s.Stat(ctx, u, P("/p/d700/x"))) }, [4]syscall.Errno{ok, ok, acc, acc}},
		{"readdir d700", func(s *Server, u User) error { return ignore(s.ReadDir(ctx, u, P("/p/d700"), ReadDirOptions{})) }, [4]syscall.Errno{ok, ok, acc, acc}},
		{"create in d755", create("/p/d755/n"), [4]syscall.Errno{ok, ok, acc, acc}},
		{"create in dg775", create("/p/dg775/n"), [4]syscall.Errno{ok, ok, ok, acc}},
		{"mkdir in dg775", func(s *Server, u User) error { return ignore(s.Mkdir(ctx, u, P("/p/dg775/n"), 0o755, false)) }, [4]syscall.Errno{ok, ok, ok, acc}},
		{"unlink in d700", unlink("/p/d700/x"), [4]syscall.Errno{ok, ok, acc, acc}},
		{"unlink in sticky dir", unlink("/tmp/carolf"), [4]syscall.Errno{ok, prm, prm, ok}},
		{"rename out of sticky dir", func(s *Server, u User) error { return s.Rename(ctx, u, P("/tmp/carolf"), P("/p/moved"), 0) }, [4]syscall.Errno{ok, prm, prm, ok}},
		{"chmod", func(s *Server, u User) error { return ignore(s.SetAttr(ctx, u, P("/p/f664"), SetAttr{Mode: &mode})) }, [4]syscall.Errno{ok, ok, prm, prm}},
		{"chown to bob", func(s *Server, u User) error { return ignore(s.SetAttr(ctx, u, P("/p/f664"), SetAttr{UID: &toBob})) }, [4]syscall.Errno{ok, prm, prm, prm}},
		{"chgrp to own group", func(s *Server, u User) error {
			return ignore(s.SetAttr(ctx, u, P("/p/f664"), SetAttr{GID: &toGroup1000}))
		}, [4]syscall.Errno{ok, ok, prm, prm}},
		{"chgrp to foreign group", func(s *Server, u User) error {
			return ignore(s.SetAttr(ctx, u, P("/p/f664"), SetAttr{GID: &toGroup1002}))
		}, [4]syscall.Errno{ok, prm, prm, prm}},
		{"utimes explicit", func(s *Server, u User) error {
			return ignore(s.SetAttr(ctx, u, P("/p/f664"), SetAttr{Mtime: &explicit}))
		}, [4]syscall.Errno{ok, ok, prm, prm}},
		{"utimes now", func(s *Server, u User) error { return ignore(s.SetAttr(ctx, u, P("/p/f664"), SetAttr{MtimeNow: true})) }, [4]syscall.Errno{ok, ok, ok, acc}},
		{"truncate f664", func(s *Server, u User) error { return ignore(s.Truncate(ctx, u, P("/p/f664"), 0)) }, [4]syscall.Errno{ok, ok, ok, acc}},
		{"set user xattr f640", func(s *Server, u User) error { return s.SetXattr(ctx, u, P("/p/f640"), "user.a", []byte("1"), 0) }, [4]syscall.Errno{ok, ok, acc, acc}},
		{"set trusted xattr", func(s *Server, u User) error { return s.SetXattr(ctx, u, P("/p/f664"), "trusted.a", []byte("1"), 0) }, [4]syscall.Errno{ok, prm, prm, prm}},
		{"move dir d755 across dirs", func(s *Server, u User) error { return s.Rename(ctx, u, P("/p/d755"), P("/tmp/d755"), 0) }, [4]syscall.Errno{ok, ok, acc, acc}},
		{"set layout", func(s *Server, u User) error {
			return ignore(s.SetDirLayout(ctx, u, P("/p/d755"), Layout{ChainTable: 1, ChunkSize: 1 << 16, StripeSize: 1}))
		}, [4]syscall.Errno{ok, ok, prm, prm}},
		{"remove all d700", func(s *Server, u User) error { return s.RemoveAll(ctx, u, P("/p/d700")) }, [4]syscall.Errno{ok, ok, acc, acc}},
	}
	for _, c := range cases {
		for i, who := range users {
			t.Run(c.name+"/"+who.name, func(t *testing.T) {
				e := newEnv(t)
				permFixture(t, e.s)
				wantErrno(t, c.op(e.s, who.u), c.want[i], c.name+" as "+who.name)
			})
		}
	}
}

func TestSetgidAndOwnership(t *testing.T) {
	e := newEnv(t)
	s := e.s
	permFixture(t, s)
	f := must2(s.Create(ctx, bob, P("/sg/f"), CreateOptions{Mode: 0o2755}))
	if f.Inode.GID != 1000 || f.Inode.UID != bob.UID || f.Inode.Mode&ModeSetgid == 0 {
		t.Fatalf("file in setgid dir: uid %d gid %d mode %o", f.Inode.UID, f.Inode.GID, f.Inode.Mode)
	}
	d := must2(s.Mkdir(ctx, bob, P("/sg/d"), 0o755, false))
	if d.GID != 1000 || d.Mode&ModeSetgid == 0 {
		t.Fatalf("dir in setgid dir: gid %d mode %o", d.GID, d.Mode)
	}
	// carol (not in group 1000) cannot create a setgid file of group 1000.
	noErr(t, ignore(s.Mkdir(ctx, Root, P("/sg/open"), 0o777, false)))
	c := must2(s.Create(ctx, carol, P("/sg/open/c"), CreateOptions{Mode: 0o2755}))
	if c.Inode.GID != 1000 || c.Inode.Mode&ModeSetgid != 0 {
		t.Fatalf("non-member kept setgid: gid %d mode %o", c.Inode.GID, c.Inode.Mode)
	}
	// chown clears setuid/setgid on files.
	m := uint32(0o6755)
	noErr(t, ignore(s.SetAttr(ctx, Root, P("/sg/f"), SetAttr{Mode: &m})))
	g := uint32(1001)
	n := must2(s.SetAttr(ctx, bob, P("/sg/f"), SetAttr{GID: &g}))
	if n.Mode != 0o755 || n.GID != 1001 {
		t.Fatalf("after chgrp: mode %o gid %d", n.Mode, n.GID)
	}
}
