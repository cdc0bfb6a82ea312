// Package fusehang checks that a FUSE mount stays responsive when the
// metadata service hangs (issue 13, hole 12): mgmtd, storage and meta run
// as real processes, the meta process is frozen with SIGSTOP, and system
// calls on the mount must fail with ETIMEDOUT instead of hanging. Also:
// `emberfs mount` against a cluster nobody answers for fails with a clear
// message. Needs root and /dev/fuse.
package fusehang

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/tests/testproc"
)

var emberfsBin string

func TestMain(m *testing.M) { testproc.Main(m, &emberfsBin) }

const token = "fusehang-token"

// cluster runs mgmtd, one storage process (one target, replication 1) and
// a meta process; it returns mgmtd's address and the meta process.
func cluster(t *testing.T, ctx context.Context) (string, *testproc.Proc) {
	t.Helper()
	dir := t.TempDir()
	mgmtdAddr := testproc.StartMgmtd(t, emberfsBin, dir, token)
	scfg := testproc.WriteFile(t, filepath.Join(dir, "storage.toml"), testproc.StorageConfig(dir, 50, mgmtdAddr, token))
	testproc.Start(t, emberfsBin, filepath.Join(dir, "storage.log"), "storage", "--config", scfg)
	conn, err := mgmtdclient.Dial([]string{mgmtdAddr}, token)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cache := mgmtdclient.NewCache(conn)
	cache.Start()
	defer cache.Close()
	if _, err := cache.WaitFor(ctx, func(r *routing.Routing) bool { return len(r.Info.Targets) == 1 }); err != nil {
		t.Fatalf("storage target never registered: %v", err)
	}
	if err := conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
		_, err := cl.CreateChainTable(ctx, &mgmtdpb.CreateChainTableReq{ReplicationFactor: 1})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	mcfg := testproc.WriteFile(t, filepath.Join(dir, "meta.toml"), fmt.Sprintf(`listen = "127.0.0.1:0"
metrics_listen = ""
kv = %q
mgmtd = [%q]
token = %q
`, "badger:"+filepath.Join(dir, "meta-kv"), mgmtdAddr, token))
	metaProc := testproc.Start(t, emberfsBin, filepath.Join(dir, "meta.log"), "meta", "--config", mcfg)
	addr := metaProc.Wait(t, testproc.ListeningRE)
	if _, err := cache.WaitFor(ctx, func(r *routing.Routing) bool {
		for _, n := range r.ActiveNodes(mgmtdpb.NodeRole_ROLE_META) {
			if n.Address == addr {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("meta never active in routing: %v", err)
	}
	return mgmtdAddr, metaProc
}

// within runs fn in the background and returns its error, or fails the
// test if fn has not returned after testproc.Eventually (a hang: without
// the deadline the call never returns while meta is stopped).
func within(t *testing.T, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(testproc.Eventually):
		t.Fatalf("%s hung while meta was stopped", what)
		return nil
	}
}

func wantTimeout(t *testing.T, what string, err error) {
	t.Helper()
	var errno syscall.Errno
	if !errors.As(err, &errno) || (errno != syscall.ETIMEDOUT && errno != syscall.EIO) {
		t.Fatalf("%s with meta stopped: %v; want ETIMEDOUT or EIO", what, err)
	}
}

func TestHungMetaFailsSyscallsNotHangs(t *testing.T) {
	ctx := testproc.Ctx(t)
	mgmtdAddr, metaProc := cluster(t, ctx)
	c, err := client.New(ctx, client.Config{MgmtdAddrs: []string{mgmtdAddr}, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mnt, err := os.MkdirTemp("", "emberfs-fusehang-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(mnt)
	opts := fuse.Options{MetaTimeout: 2 * time.Second, AttrTimeout: -1, EntryTimeout: -1}
	srv, err := fuse.Mount(ctx, fuse.ClientBackend(c), mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if stopped {
			_ = metaProc.Cmd.Process.Signal(syscall.SIGCONT)
		}
		if err := srv.Unmount(); err != nil {
			t.Error(err)
		}
	}()
	file := filepath.Join(mnt, "f")
	if err := os.WriteFile(file, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := metaProc.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped = true
	wantTimeout(t, "stat of an existing file", within(t, "stat", func() error { _, err := os.Stat(file); return err }))
	wantTimeout(t, "lookup of a new name", within(t, "lookup", func() error { _, err := os.Stat(filepath.Join(mnt, "nope")); return err }))
	wantTimeout(t, "mkdir", within(t, "mkdir", func() error { return os.Mkdir(filepath.Join(mnt, "d"), 0o755) }))
	// A second mount against the hung meta fails instead of hanging.
	mnt2, err := os.MkdirTemp("", "emberfs-fusehang-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(mnt2)
	err = within(t, "mount", func() error {
		s, err := fuse.Mount(ctx, fuse.ClientBackend(c), mnt2, opts)
		if err == nil {
			_ = s.Unmount()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "metadata service did not answer") {
		t.Fatalf("mount with meta stopped: %v; want a clear failure", err)
	}

	if err := metaProc.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	// Once meta runs again the mount answers again (meta may first have
	// to re-register after its lease lapsed: poll).
	for {
		got, err := os.ReadFile(file)
		if err == nil {
			if string(got) != "hello" {
				t.Fatalf("after meta resumed the file reads %q", got)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the mount never recovered after meta resumed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// `emberfs mount` against an address nobody answers on fails within its
// connect timeout and says what it tried.
func TestMountUnreachableClusterFailsClearly(t *testing.T) {
	ctx := testproc.Ctx(t)
	mnt := t.TempDir()
	// Port 1 (tcpmux): nothing listens there on these machines.
	addr := "127.0.0.1:1"
	out, err := exec.CommandContext(ctx, emberfsBin, "mount", "--mgmtd", addr, "--token", token, "--connect-timeout", "1s", mnt).CombinedOutput()
	if err == nil {
		t.Fatalf("mount against %s succeeded:\n%s", addr, out)
	}
	if ctx.Err() != nil {
		t.Fatal("mount against an unreachable cluster did not give up")
	}
	for _, want := range []string{"cannot reach the cluster", addr} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("mount error does not say %q:\n%s", want, out)
		}
	}
}
