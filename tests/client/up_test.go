package client_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/service/meta"
)

// upProc is a running `emberfs up` process.
type upProc struct {
	cmd   *exec.Cmd
	out   *lockedBuffer
	mgmtd string
	done  chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func buildEmberfs(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "emberfs")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/emberfs/emberfs/cmd/emberfs")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startUp(t *testing.T, bin, dir string) *upProc {
	t.Helper()
	cmd := exec.Command(bin, "up", "--data", dir, "--mgmtd-listen", "127.0.0.1:0", "--no-sync", "--targets", "2", "--chunk-size", "64KiB")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &upProc{cmd: cmd, out: &lockedBuffer{}, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		closed := false
		for sc.Scan() {
			line := sc.Text()
			p.out.WriteString(line + "\n") // read by the test only after ready/exit
			if f := strings.Fields(line); len(f) == 2 && f[0] == "mgmtd:" {
				p.mgmtd = f[1]
			}
			if strings.HasPrefix(line, "ready") && !closed {
				closed = true
				close(ready)
			}
		}
	}()
	go func() { err := cmd.Wait(); pw.Close(); p.done <- err }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("emberfs up exited before ready: %v\n%s", err, p.out.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("emberfs up not ready after 60 s:\n%s", p.out.String())
	}
	return p
}

func (p *upProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("emberfs up exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("emberfs up did not stop within 30 s of SIGTERM")
	}
}

func upClient(t *testing.T, p *upProc, dir string) *client.Client {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.New(ctx, client.Config{MgmtdAddrs: []string{p.mgmtd}, Token: strings.TrimSpace(string(tok))})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// `emberfs up` as a real process: files written through the client are
// all back after SIGTERM and a restart on the same directory.
func TestUpRestartKeepsFiles(t *testing.T) {
	bin := buildEmberfs(t)
	dir := t.TempDir()
	p := startUp(t, bin, dir)
	if !strings.Contains(p.out.String(), "wrote and read back /hello-emberfs.txt") {
		t.Fatalf("no demo on a fresh directory:\n%s", p.out.String())
	}
	cl := upClient(t, p, dir)
	ctx := ctxT(t)
	files := map[string][]byte{}
	if _, err := cl.Mkdir(ctx, meta.Root, meta.P("/dir/sub"), 0o755, true); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{0, 1, 4096, 64 << 10, 300<<10 + 7} {
		path := fmt.Sprintf("/dir/sub/f%d", i)
		files[path] = pattern(n, byte(i))
		if err := cl.WriteFile(ctx, meta.Root, meta.P(path), files[path], 0o640); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	p.stop(t)

	p = startUp(t, bin, dir)
	if strings.Contains(p.out.String(), "wrote and read back") {
		t.Fatal("demo written again on a restart")
	}
	cl = upClient(t, p, dir)
	defer cl.Close()
	for path, want := range files {
		got, err := cl.ReadFile(ctx, meta.Root, meta.P(path))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after restart: %d bytes (want %d), %v", path, len(got), len(want), err)
		}
	}
	if got, err := cl.ReadFile(ctx, meta.Root, meta.P("/hello-emberfs.txt")); err != nil || !bytes.HasPrefix(got, []byte("Hello from EmberFS")) {
		t.Fatalf("demo file after restart: %q %v", got, err)
	}
	ents, err := cl.ReadDir(ctx, meta.Root, meta.P("/dir/sub"), true)
	if err != nil || len(ents) != len(files) {
		t.Fatalf("listing after restart: %d entries, %v", len(ents), err)
	}
	cl.Close()
	p.stop(t)
}
