// Package metatests runs the meta server as a real process (the emberfs
// binary, built once) next to mgmtd and a storage process, kills it with
// SIGKILL in the middle of a namespace storm and checks what survived.
package metatests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const token = "meta-process-test-token"

// eventually bounds waits; nothing asserts on how fast things happen.
const eventually = 60 * time.Second

var emberfsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "emberfs-meta-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	emberfsBin = filepath.Join(dir, "emberfs")
	build := exec.Command("go", "build", "-o", emberfsBin, "github.com/emberfs/emberfs/cmd/emberfs")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building emberfs:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running emberfs process whose output is kept (and logged to
// a file) so that tests can wait for lines.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

func startProc(t *testing.T, logPath string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(emberfsBin, args...), done: make(chan struct{})}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			fmt.Fprintln(logf, sc.Text())
		}
		logf.Close()
	}()
	go func() {
		p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.signal(syscall.SIGKILL) })
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// wait returns the first submatch of re in the output, waiting for it.
func (p *proc) wait(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.output()); m != nil {
			return m[1]
		}
		select {
		case <-p.done:
			t.Fatalf("process %v exited before printing %v:\n%s", p.cmd.Args, re, p.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("process %v never printed %v", p.cmd.Args, re)
	return ""
}

// signal sends sig and waits for the process to be gone.
func (p *proc) signal(sig syscall.Signal) {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
		<-p.done
	}
}

var listeningRE = regexp.MustCompile(`listening on (\S+)`)

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startMgmtd runs mgmtd with short leases and returns its address.
func startMgmtd(t *testing.T, dir string) string {
	t.Helper()
	cfg := writeFile(t, filepath.Join(dir, "mgmtd.toml"), `listen = "127.0.0.1:0"
metrics_listen = ""
kv = "memory"
scan_interval = "20ms"
heartbeat_interval = "100ms"
node_failure_timeout = "600ms"
`)
	return startProc(t, filepath.Join(dir, "mgmtd.log"), "mgmtd", "--config", cfg, "--token", token).wait(t, listeningRE)
}

// startStorage runs one storage process with one target, so that mgmtd
// can form the chain table new files are placed on.
func startStorage(t *testing.T, dir, mgmtd string) {
	t.Helper()
	cfg := writeFile(t, filepath.Join(dir, "storage.toml"), fmt.Sprintf(`node_id = 50
targets = [%q]
mgmtd = [%q]
token = %q
listen = "127.0.0.1:0"
data_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
no_sync = true
`, filepath.Join(dir, "target"), mgmtd, token))
	startProc(t, filepath.Join(dir, "storage.log"), "storage", "--config", cfg)
}

// runCLI runs the binary to completion and returns its output and error.
func runCLI(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, emberfsBin, args...).CombinedOutput()
	return string(out), err
}
