package meta

import (
	"context"
	"strings"
	"syscall"
	"testing"
)

var ctx = context.Background()

var alice = User{UID: 1000, GID: 1000}

// buildFixture makes:
//
//	/d            0755 root
//	/d/f          0644 alice   (file)
//	/d/sub        0755 root
//	/d/sub/x      0644 root
//	/d/link   ->  f
//	/d/dangling -> nowhere
//	/d/loop   ->  loop
//	/d/abs    ->  /d/sub
//	/e            0755 root    (empty)
func buildFixture(t testing.TB, fs FS) {
	t.Helper()
	noErr(t, ignore(fs.Mkdir(ctx, Root, P("/d"), 0o755, false)))
	noErr(t, ignore(fs.Mkdir(ctx, Root, P("/d/sub"), 0o755, false)))
	noErr(t, ignore(fs.Mkdir(ctx, Root, P("/e"), 0o755, false)))
	noErr(t, ignore(fs.Create(ctx, Root, P("/d/f"), CreateOptions{Mode: 0o644})))
	noErr(t, ignore(fs.SetAttr(ctx, Root, P("/d/f"), SetAttr{UID: &alice.UID, GID: &alice.GID})))
	noErr(t, ignore(fs.Create(ctx, Root, P("/d/sub/x"), CreateOptions{Mode: 0o644})))
	noErr(t, ignore(fs.Symlink(ctx, Root, P("/d/link"), "f")))
	noErr(t, ignore(fs.Symlink(ctx, Root, P("/d/dangling"), "nowhere")))
	noErr(t, ignore(fs.Symlink(ctx, Root, P("/d/loop"), "loop")))
	noErr(t, ignore(fs.Symlink(ctx, Root, P("/d/abs"), "/d/sub")))
}

type errnoCase struct {
	name  string
	op    func(fs FS) error
	errno syscall.Errno
}

func ignore[T any](_ T, err error) error { return err }

func errnoCases() []errnoCase {
	long := strings.Repeat("n", 256)
	rn := func(src, dst string, f RenameFlags) func(FS) error {
		return func(fs FS) error { return fs.Rename(ctx, Root, P(src), P(dst), f) }
	}
	stat := func(p PathAt) func(FS) error {
		return func(fs FS) error { return ignore(fs.Stat(ctx, Root, p)) }
	}
	create := func(p string, o CreateOptions) func(FS) error {
		return func(fs FS) error { return ignore(fs.Create(ctx, Root, P(p), o)) }
	}
	mkdir := func(p string, parents bool) func(FS) error {
		return func(fs FS) error { return ignore(fs.Mkdir(ctx, Root, P(p), 0o755, parents)) }
	}
	unlink := func(p string) func(FS) error { return func(fs FS) error { return fs.Unlink(ctx, Root, P(p)) } }
	rmdir := func(p string) func(FS) error { return func(fs FS) error { return fs.Rmdir(ctx, Root, P(p)) } }
	w := CreateOptions{Write: true, ClientID: "c1"}
	return []errnoCase{
		{"stat missing", stat(P("/nope")), syscall.ENOENT},
		{"stat through file", stat(P("/d/f/x")), syscall.ENOTDIR},
		{"stat file with trailing slash", stat(P("/d/f/")), syscall.ENOTDIR},
		{"stat symlink loop", stat(P("/d/loop")), syscall.ELOOP},
		{"stat dangling symlink", stat(P("/d/dangling")), syscall.ENOENT},
		{"lstat dangling symlink", stat(PathAt{Path: "/d/dangling", NoFollow: true}), 0},
		{"stat through absolute symlink", stat(P("/d/abs/x")), 0},
		{"stat dotdot", stat(P("/d/sub/../f")), 0},
		{"stat dotdot above root", stat(P("/../../d")), 0},
		{"stat long name", stat(P("/" + long)), syscall.ENAMETOOLONG},
		{"stat long path", stat(P(strings.Repeat("/a", 2048))), syscall.ENAMETOOLONG},
		{"stat NUL in path", stat(P("/d/f\x00")), syscall.EINVAL},
		{"stat missing inode", stat(At(999_999, "")), syscall.ESTALE},
		{"create existing exclusive", create("/d/f", CreateOptions{Exclusive: true}), syscall.EEXIST},
		{"create existing", create("/d/f", CreateOptions{}), 0},
		{"create new", create("/d/new", CreateOptions{Mode: 0o600}), 0},
		{"create in missing dir", create("/nope/x", CreateOptions{}), syscall.ENOENT},
		{"create under file", create("/d/f/x", CreateOptions{}), syscall.ENOTDIR},
		{"create over directory", create("/d/sub", w), syscall.EISDIR},
		{"create long name", create("/d/"+long, CreateOptions{}), syscall.ENAMETOOLONG},
		{"create NUL name", create("/d/a\x00b", CreateOptions{}), syscall.EINVAL},
		{"create write without client", create("/d/g", CreateOptions{Write: true}), syscall.EINVAL},
		{"create through symlink", create("/d/link", CreateOptions{Truncate: true}), 0},
		{"create excl over symlink", create("/d/link", CreateOptions{Exclusive: true}), syscall.EEXIST},
		{"create bare root", create("/", CreateOptions{}), syscall.EBUSY},
		{"create in detached parent id", func(fs FS) error {
			d := must2(fs.Stat(ctx, Root, P("/e")))
			if err := fs.RemoveAll(ctx, Root, P("/e")); err != nil {
				return err
			}
			return ignore(fs.Create(ctx, Root, At(d.ID, "x"), CreateOptions{}))
		}, syscall.ENOENT},
		{"mkdir over file", mkdir("/d/f", false), syscall.EEXIST},
		{"mkdir existing", mkdir("/d/sub", false), syscall.EEXIST},
		{"mkdir dot", mkdir("/d/.", false), syscall.EEXIST},
		{"mkdir new", mkdir("/d/nd", false), 0},
		{"mkdir -p new chain", mkdir("/d/a/b/c", true), 0},
		{"mkdir -p existing", mkdir("/d/sub", true), 0},
		{"mkdir -p through symlink", mkdir("/d/abs/q/r", true), 0},
		{"mkdir -p under file", mkdir("/d/f/x", true), syscall.ENOTDIR},
		{"mkdir -p over file", mkdir("/d/f", true), syscall.EEXIST},
		{"mkdir -p long name", mkdir("/d/"+long+"/x", true), syscall.ENAMETOOLONG},
		{"rmdir non-empty", rmdir("/d"), syscall.ENOTEMPTY},
		{"rmdir empty", rmdir("/e"), 0},
		{"rmdir file", rmdir("/d/f"), syscall.ENOTDIR},
		{"rmdir missing", rmdir("/nope"), syscall.ENOENT},
		{"rmdir dot", rmdir("/d/."), syscall.EINVAL},
		{"rmdir dotdot", rmdir("/d/sub/.."), syscall.ENOTEMPTY},
		{"rmdir root", rmdir("/"), syscall.EBUSY},
		{"unlink directory", unlink("/d/sub"), syscall.EISDIR},
		{"unlink file", unlink("/d/f"), 0},
		{"unlink symlink", unlink("/d/link"), 0},
		{"unlink missing", unlink("/d/nope"), syscall.ENOENT},
		{"unlink under file", unlink("/d/f/x"), syscall.ENOTDIR},
		{"rename dir into itself", rn("/d/sub", "/d/sub/in", 0), syscall.EINVAL},
		{"rename dir below itself", rn("/d", "/d/sub/deeper", 0), syscall.EINVAL},
		{"rename file over dir", rn("/d/f", "/d/sub", 0), syscall.EISDIR},
		{"rename dir over file", rn("/d/sub", "/d/f", 0), syscall.ENOTDIR},
		{"rename dir over non-empty dir", rn("/e", "/d", 0), syscall.ENOTEMPTY},
		{"rename dir over empty dir", rn("/d/sub", "/e", 0), 0},
		{"rename noreplace existing", rn("/d/f", "/d/link", RenameNoReplace), syscall.EEXIST},
		{"rename noreplace new", rn("/d/f", "/d/g", RenameNoReplace), 0},
		{"exchange with missing", rn("/d/f", "/d/nope", RenameExchange), syscall.ENOENT},
		{"exchange file and dir", rn("/d/f", "/e", RenameExchange), 0},
		{"exchange dir with its descendant", rn("/d", "/d/sub", RenameExchange), syscall.EINVAL},
		{"rename both flags", rn("/d/f", "/d/g", RenameExchange|RenameNoReplace), syscall.EINVAL},
		{"rename missing", rn("/nope", "/x", 0), syscall.ENOENT},
		{"rename into missing dir", rn("/d/f", "/nope/x", 0), syscall.ENOENT},
		{"rename onto itself", rn("/d/f", "/d/f", 0), 0},
		{"rename dot", rn("/d/.", "/x", 0), syscall.EBUSY},
		{"rename across directories", rn("/d/sub", "/e/sub", 0), 0},
		{"link directory", func(fs FS) error { return ignore(fs.Link(ctx, Root, P("/d/sub"), P("/d/l2"))) }, syscall.EPERM},
		{"link over existing", func(fs FS) error { return ignore(fs.Link(ctx, Root, P("/d/f"), P("/d/link"))) }, syscall.EEXIST},
		{"link new", func(fs FS) error { return ignore(fs.Link(ctx, Root, P("/d/f"), P("/e/f2"))) }, 0},
		{"link missing source", func(fs FS) error { return ignore(fs.Link(ctx, Root, P("/d/nope"), P("/e/f2"))) }, syscall.ENOENT},
		{"symlink over existing", func(fs FS) error { return ignore(fs.Symlink(ctx, Root, P("/d/f"), "x")) }, syscall.EEXIST},
		{"symlink empty target", func(fs FS) error { return ignore(fs.Symlink(ctx, Root, P("/d/s"), "")) }, syscall.ENOENT},
		{"readlink file", func(fs FS) error { return ignore(fs.Readlink(ctx, Root, P("/d/f"))) }, syscall.EINVAL},
		{"readlink symlink", func(fs FS) error { return ignore(fs.Readlink(ctx, Root, P("/d/link"))) }, 0},
		{"readdir file", func(fs FS) error { return ignore(fs.ReadDir(ctx, Root, P("/d/f"), ReadDirOptions{})) }, syscall.ENOTDIR},
		{"open dir for write", func(fs FS) error {
			return ignore(fs.Open(ctx, Root, P("/d/sub"), OpenOptions{Write: true, ClientID: "c"}))
		}, syscall.EISDIR},
		{"open symlink nofollow", func(fs FS) error {
			return ignore(fs.Open(ctx, Root, PathAt{Path: "/d/link", NoFollow: true}, OpenOptions{Read: true}))
		}, syscall.ELOOP},
		{"open dir for read", func(fs FS) error { return ignore(fs.Open(ctx, Root, P("/d/sub"), OpenOptions{Read: true})) }, 0},
		{"truncate dir", func(fs FS) error { return ignore(fs.Truncate(ctx, Root, P("/d/sub"), 0)) }, syscall.EISDIR},
		{"truncate symlink target", func(fs FS) error { return ignore(fs.Truncate(ctx, Root, P("/d/link"), 10)) }, 0},
		{"getxattr missing", func(fs FS) error { return ignore(fs.GetXattr(ctx, Root, P("/d/f"), "user.a")) }, syscall.ENODATA},
		{"setxattr bad namespace", func(fs FS) error { return fs.SetXattr(ctx, Root, P("/d/f"), "foo.a", nil, 0) }, syscall.EOPNOTSUPP},
		{"setxattr empty name", func(fs FS) error { return fs.SetXattr(ctx, Root, P("/d/f"), "", nil, 0) }, syscall.ERANGE},
		{"setxattr create twice", func(fs FS) error {
			if err := fs.SetXattr(ctx, Root, P("/d/f"), "user.a", []byte("1"), XattrCreate); err != nil {
				return err
			}
			return fs.SetXattr(ctx, Root, P("/d/f"), "user.a", []byte("2"), XattrCreate)
		}, syscall.EEXIST},
		{"setxattr replace missing", func(fs FS) error { return fs.SetXattr(ctx, Root, P("/d/f"), "user.a", nil, XattrReplace) }, syscall.ENODATA},
		{"setxattr too big", func(fs FS) error {
			return fs.SetXattr(ctx, Root, P("/d/f"), "user.a", make([]byte, MaxXattrValue+1), 0)
		}, syscall.E2BIG},
		{"setxattr user on symlink", func(fs FS) error {
			return fs.SetXattr(ctx, Root, PathAt{Path: "/d/link", NoFollow: true}, "user.a", nil, 0)
		}, syscall.EPERM},
		{"removexattr missing", func(fs FS) error { return fs.RemoveXattr(ctx, Root, P("/d/f"), "user.zz") }, syscall.ENODATA},
		{"close unknown session", func(fs FS) error {
			f := must2(fs.Stat(ctx, Root, P("/d/f")))
			return ignore(fs.Close(ctx, Root, CloseOptions{Inode: f.ID, Session: 12345}))
		}, syscall.EBADF},
		{"lookup dotdot", func(fs FS) error { return ignore(fs.Lookup(ctx, Root, RootID, "..")) }, 0},
		{"lookup slash in name", func(fs FS) error { return ignore(fs.Lookup(ctx, Root, RootID, "d/f")) }, syscall.EINVAL},
		{"remove all file", func(fs FS) error { return fs.RemoveAll(ctx, Root, P("/d/f")) }, 0},
		{"remove all tree", func(fs FS) error { return fs.RemoveAll(ctx, Root, P("/d")) }, 0},
		{"remove all missing", func(fs FS) error { return fs.RemoveAll(ctx, Root, P("/nope")) }, syscall.ENOENT},
		{"set layout on file", func(fs FS) error {
			return ignore(fs.SetDirLayout(ctx, Root, P("/d/f"), Layout{ChainTable: 1, ChunkSize: 1 << 20, StripeSize: 1}))
		}, syscall.ENOTDIR},
		{"set layout unknown table", func(fs FS) error {
			return ignore(fs.SetDirLayout(ctx, Root, P("/d"), Layout{ChainTable: 77, ChunkSize: 1 << 20, StripeSize: 1}))
		}, syscall.EINVAL},
	}
}

// must2 is must without a testing.TB, for ops inside table closures whose
// failure the table then reports through the closure's error.
func must2[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func runErrnoTable(t *testing.T, mk func(t *testing.T) (FS, *Server)) {
	for _, c := range errnoCases() {
		t.Run(c.name, func(t *testing.T) {
			fs, srv := mk(t)
			buildFixture(t, fs)
			wantErrno(t, c.op(fs), c.errno, c.name)
			drainGC(t, srv)
			fsckClean(t, srv, nil)
		})
	}
}

func TestErrnoTable(t *testing.T) {
	runErrnoTable(t, func(t *testing.T) (FS, *Server) {
		e := newEnv(t)
		return e.s, e.s
	})
}
