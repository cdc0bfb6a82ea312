package meta_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/metaclient"

	"google.golang.org/grpc"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/proto/metapb"
)

const testToken = "meta-test-token"

// The package's test helpers, through export_test.go.
var (
	ctx          = context.Background()
	alice        = meta.Alice
	newMemChunks = meta.NewMemChunks
	openEngine   = meta.OpenEngine
	noErr        = meta.NoErr
	wantErrno    = meta.WantErrno
	drainGC      = meta.DrainGC
	fsckClean    = meta.FsckClean
	buildFixture = meta.BuildFixture
)

func ignore[T any](_ T, err error) error { return err }

type testEnv struct{ s *meta.Server }

func newEnv(t testing.TB) testEnv { return testEnv{s: meta.NewTestServer(t)} }

func newEnvOn(t testing.TB, eng kv.Engine, chunks *meta.MemChunks) testEnv {
	return testEnv{s: meta.NewTestServerOn(t, eng, chunks)}
}

func init() {
	meta.AddBenchTarget("grpc", func(b *testing.B, s *meta.Server) meta.FS {
		return dialT(b, serveGRPC(b, s), testToken)
	})
}

// serveGRPC serves s on a kernel-chosen 127.0.0.1 port with the token check.
func serveGRPC(t testing.TB, s *meta.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(rpcauth.ServerOptions(testToken)...)
	metapb.RegisterMetaServer(gs, meta.NewGRPCService(s))
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func dialT(t testing.TB, addr, token string) *metaclient.Client {
	t.Helper()
	c, err := metaclient.Dial(addr, token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseConn() })
	return c
}

// The whole errno table again, through a real gRPC server: codes and
// errnos must survive the wire unchanged.
func TestErrnoTableOverGRPC(t *testing.T) {
	meta.RunErrnoTable(t, func(t *testing.T) (meta.FS, *meta.Server) {
		e := newEnv(t)
		return dialT(t, serveGRPC(t, e.s), testToken), e.s
	})
}

func TestGRPCRoundTripAndTokenRefusal(t *testing.T) {
	e := newEnv(t)
	addr := serveGRPC(t, e.s)
	c := dialT(t, addr, testToken)
	buildFixture(t, c)
	n, err := c.Stat(ctx, meta.Root, meta.P("/d/link"))
	noErr(t, err)
	want, _ := e.s.Stat(ctx, meta.Root, meta.P("/d/f"))
	if n.ID != want.ID || n.UID != alice.UID || n.Type != meta.TypeFile || !n.Mtime.Equal(want.Mtime) || n.Layout != want.Layout {
		t.Fatalf("stat over gRPC %+v, in-process %+v", n, want)
	}
	page, err := c.ReadDir(ctx, meta.Root, meta.P("/d"), meta.ReadDirOptions{WithStat: true})
	noErr(t, err)
	if len(page.Entries) != 6 || page.Entries[0].Name != "abs" || page.Entries[0].Inode == nil {
		t.Fatalf("readdir over gRPC: %+v", page)
	}
	ids := []uint64{want.ID, 424242}
	got, err := c.BatchStat(ctx, ids)
	noErr(t, err)
	if got[0] == nil || got[0].ID != want.ID || got[1] != nil {
		t.Fatalf("batch stat: %+v", got)
	}
	ns, errs, err := c.BatchStatPaths(ctx, meta.Root, []meta.PathAt{meta.P("/d/f"), meta.P("/nope")})
	noErr(t, err)
	if ns[0].ID != want.ID || errs[0] != nil || errcode.ErrnoOf(errs[1]) != syscall.ENOENT {
		t.Fatalf("batch stat paths: %+v %v", ns, errs)
	}
	noErr(t, c.SetXattr(ctx, meta.Root, meta.P("/d/f"), "user.k", []byte("v"), 0))
	v, err := c.GetXattr(ctx, meta.Root, meta.P("/d/f"), "user.k")
	noErr(t, err)
	names, err := c.ListXattr(ctx, meta.Root, meta.P("/d/f"))
	noErr(t, err)
	if string(v) != "v" || len(names) != 1 || names[0] != "user.k" {
		t.Fatalf("xattr over gRPC: %q %v", v, names)
	}
	st, err := c.StatFS(ctx)
	noErr(t, err)
	if st.Capacity != 1<<40 || st.InodesAllocated == 0 {
		t.Fatalf("statfs: %+v", st)
	}

	for _, tok := range []string{"", "wrong"} {
		bad := dialT(t, addr, tok)
		_, err := bad.Stat(ctx, meta.Root, meta.P("/"))
		if !errcode.Is(err, errcode.Unauthenticated) {
			t.Fatalf("token %q: got %v, want unauthenticated", tok, err)
		}
	}
}

// TestGRPCTimesAndDeviceNodes: times outside int64 nanoseconds (past
// 2262, before 1678) and device numbers survive the wire in both
// directions (SetAttr request, Inode answer), to the nanosecond.
func TestGRPCTimesAndDeviceNodes(t *testing.T) {
	e := newEnv(t)
	c := dialT(t, serveGRPC(t, e.s), testToken)
	f, err := c.Create(ctx, meta.Root, meta.P("/f"), meta.CreateOptions{Mode: 0o644, Exclusive: true})
	noErr(t, err)
	_ = f
	future := time.Unix(10_000_000_000, 123456789) // year 2286
	past := time.Unix(-10_000_000_000, 1)          // year 1653
	n, err := c.SetAttr(ctx, meta.Root, meta.P("/f"), meta.SetAttr{Atime: &future, Mtime: &past})
	noErr(t, err)
	if !n.Atime.Equal(future) || !n.Mtime.Equal(past) {
		t.Fatalf("setattr answer over gRPC: atime %v mtime %v, want %v %v", n.Atime, n.Mtime, future, past)
	}
	n, err = e.s.Stat(ctx, meta.Root, meta.P("/f"))
	noErr(t, err)
	if !n.Atime.Equal(future) || !n.Mtime.Equal(past) {
		t.Fatalf("stored: atime %v mtime %v, want %v %v", n.Atime, n.Mtime, future, past)
	}
	dev, err := c.Mknod(ctx, meta.Root, meta.P("/null"), meta.TypeCharDev, 0o666, 0x103)
	noErr(t, err)
	got, err := c.Stat(ctx, meta.Root, meta.P("/null"))
	noErr(t, err)
	if dev.Type != meta.TypeCharDev || got.Type != meta.TypeCharDev || got.Rdev != 0x103 || got.Mode != 0o666 {
		t.Fatalf("mknod over gRPC: %+v, stat %+v", dev, got)
	}
	wantErrno(t, ignore(c.Mknod(ctx, alice, meta.P("/tmpdev"), meta.TypeBlockDev, 0o600, 1)), syscall.EPERM, "device node by a user")
}
