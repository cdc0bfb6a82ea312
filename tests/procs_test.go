// Package tests holds multi-process cluster and fault tests: they build
// the emberfs binary once and run real mgmtd and storage processes on
// loopback, killing them with SIGKILL.
package tests

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

const token = "process-test-token"

// eventually bounds waits; nothing asserts on how fast things happen.
const eventually = 60 * time.Second

var emberfsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "emberfs-tests-")
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

// proc is a running emberfs process whose output is scanned for lines.
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
	t.Cleanup(func() { p.kill() })
	return p
}

// wait returns the first submatch of re in the output, waiting for it.
func (p *proc) wait(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		m := re.FindStringSubmatch(p.out.String())
		p.mu.Unlock()
		if m != nil {
			return m[1]
		}
		select {
		case <-p.done:
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Fatalf("process %v exited before printing %v:\n%s", p.cmd.Args, re, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("process %v never printed %v", p.cmd.Args, re)
	return ""
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

var (
	mgmtdAddrRE = regexp.MustCompile(`listening on (\S+)`)
	metricsRE   = regexp.MustCompile(`url=(http://\S+/metrics)`)
)

// startMgmtd runs mgmtd with short leases (heartbeat 100 ms, failure
// timeout 600 ms) and returns its address.
func startMgmtd(t *testing.T, dir string) string {
	t.Helper()
	cfg := filepath.Join(dir, "mgmtd.toml")
	os.WriteFile(cfg, []byte(`listen = "127.0.0.1:0"
metrics_listen = ""
kv = "memory"
scan_interval = "20ms"
heartbeat_interval = "100ms"
node_failure_timeout = "600ms"
`), 0o644)
	p := startProc(t, filepath.Join(dir, "mgmtd.log"), "mgmtd", "--config", cfg, "--token", token)
	return p.wait(t, mgmtdAddrRE)
}

// storageNode is one storage process's configuration; it can be started
// again on the same directory after a kill.
type storageNode struct {
	id      int
	cfgPath string
	logDir  string
	p       *proc
	metrics string
	starts  int
}

func newStorageNode(t *testing.T, dir string, id int, mgmtd string) *storageNode {
	t.Helper()
	n := &storageNode{id: id, cfgPath: filepath.Join(dir, fmt.Sprintf("storage%d.toml", id)), logDir: dir}
	os.WriteFile(n.cfgPath, []byte(fmt.Sprintf(`node_id = %d
targets = [%q]
mgmtd = [%q]
token = %q
listen = "127.0.0.1:0"
data_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
repair_interval = "100ms"
# Data survives SIGKILL without fsync (it is in the page cache); skipping
# fsync keeps the test fast on a shared disk.
no_sync = true
`, id, filepath.Join(dir, fmt.Sprintf("node%d", id)), mgmtd, token)), 0o644)
	return n
}

func (n *storageNode) start(t *testing.T) {
	t.Helper()
	n.starts++
	n.p = startProc(t, filepath.Join(n.logDir, fmt.Sprintf("storage%d.%d.log", n.id, n.starts)), "storage", "--config", n.cfgPath)
	n.metrics = n.p.wait(t, metricsRE)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	t.Cleanup(cancel)
	return ctx
}
