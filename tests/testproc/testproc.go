// Package testproc runs the emberfs binary as real processes for the
// multi-process tests under tests/: it builds the binary once per test
// binary, starts roles from config files, waits for lines they print, and
// kills them with real signals.
package testproc

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// Eventually bounds every wait; nothing asserts on how fast things happen.
const Eventually = 60 * time.Second

// ListeningRE matches the address a role prints when it is ready
// ("mgmtd ... listening on ADDR", "meta listening on ADDR").
var ListeningRE = regexp.MustCompile(`listening on (\S+)`)

// MetricsRE matches the /metrics URL a storage service logs at start.
var MetricsRE = regexp.MustCompile(`url=(http://\S+/metrics)`)

// Main builds the emberfs binary into a temporary directory, stores its
// path in *bin, runs the tests and removes the directory; use it as the
// body of TestMain. Each of more is another main package to build there
// (a test's helper program), its path stored likewise.
func Main(m *testing.M, bin *string, more ...Bin) {
	dir, err := os.MkdirTemp("", "emberfs-proc-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, b := range append([]Bin{{Pkg: "github.com/emberfs/emberfs/cmd/emberfs", Path: bin}}, more...) {
		*b.Path = filepath.Join(dir, filepath.Base(b.Pkg))
		build := exec.Command("go", "build", "-o", *b.Path, b.Pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", b.Pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Bin is a main package for Main to build, and where to put its path.
type Bin struct {
	Pkg  string
	Path *string
}

// Proc is a running emberfs process whose output is kept (and copied to a
// log file) so that tests can wait for lines.
type Proc struct {
	Cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
	err  error // exit status, once done is closed
}

// Start runs bin with args, logging its output to logPath; the process is
// SIGKILLed when the test ends if it is still running.
func Start(t *testing.T, bin, logPath string, args ...string) *Proc {
	t.Helper()
	return StartEnv(t, bin, logPath, nil, args...)
}

// StartEnv is Start with extra environment variables ("KEY=value").
func StartEnv(t *testing.T, bin, logPath string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(bin, args...), done: make(chan struct{})}
	// A test binary killed by its timeout runs no cleanups: the kernel
	// then kills its processes, which would otherwise keep running (and,
	// in a network namespace, keep it alive after it is deleted).
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if env != nil {
		p.Cmd.Env = append(os.Environ(), env...)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	p.Cmd.Stdout, p.Cmd.Stderr = pw, pw
	if err := p.Cmd.Start(); err != nil {
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
		p.err = p.Cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(p.Kill)
	return p
}

// Output is everything the process printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Wait returns the first submatch of re in the output, waiting for it; it
// fails the test if the process exits first or Eventually passes.
func (p *Proc) Wait(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(Eventually)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.Output()); m != nil {
			return m[1]
		}
		select {
		case <-p.done:
			t.Fatalf("process %v exited before printing %v:\n%s", p.Cmd.Args, re, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("process %v never printed %v", p.Cmd.Args, re)
	return ""
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the exit status (nil for exit 0); valid once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Signal sends sig and waits for the process to be gone.
func (p *Proc) Signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.Cmd.Process.Signal(sig)
		<-p.done
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() { p.Signal(syscall.SIGKILL) }

// WriteFile writes content to path or fails the test, returning path.
func WriteFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// StartMgmtd runs mgmtd on an in-memory KV with short leases (heartbeat
// 100 ms, failure timeout 600 ms) and returns its address.
func StartMgmtd(t *testing.T, bin, dir, token string) string {
	t.Helper()
	return StartMgmtdKV(t, bin, dir, token, "memory")
}

// StartMgmtdKV is StartMgmtd on the KV that kvSpec names (kvopen syntax).
func StartMgmtdKV(t *testing.T, bin, dir, token, kvSpec string) string {
	t.Helper()
	cfg := WriteFile(t, filepath.Join(dir, "mgmtd.toml"), fmt.Sprintf(`listen = "127.0.0.1:0"
metrics_listen = ""
kv = %q
scan_interval = "20ms"
heartbeat_interval = "100ms"
node_failure_timeout = "600ms"
`, kvSpec))
	return Start(t, bin, filepath.Join(dir, "mgmtd.log"), "mgmtd", "--config", cfg, "--token", token).Wait(t, ListeningRE)
}

// StorageConfig is the config of a storage process with one target in
// dir/node<id>. Data survives SIGKILL without fsync (it is in the page
// cache), so no_sync keeps the tests fast on a shared disk.
func StorageConfig(dir string, id int, mgmtd, token string) string {
	return fmt.Sprintf(`node_id = %d
targets = [%q]
mgmtd = [%q]
token = %q
peer_token = %q
listen = "127.0.0.1:0"
data_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
repair_interval = "100ms"
no_sync = true
`, id, filepath.Join(dir, fmt.Sprintf("node%d", id)), mgmtd, token, PeerToken(token))
}

// PeerToken is the storage peer token (storage config peer_token) of a
// test cluster whose cluster token is clusterToken. Tests only: every
// storage process of one cluster needs the same secret, and deriving it
// from the cluster token gives each test cluster its own without passing
// a second value around. A real cluster's peer token is independent of
// the cluster token, which every client holds (docs/deploy.md).
func PeerToken(clusterToken string) string {
	sum := sha256.Sum256([]byte("emberfs-test-peer-token/" + clusterToken))
	return hex.EncodeToString(sum[:])
}

// Ctx is a context that ends after Eventually or with the test.
func Ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Eventually)
	t.Cleanup(cancel)
	return ctx
}

// Role is one restartable process of a multi-process cluster: its command
// is fixed, so a restart after SIGKILL runs the same config on the same
// data. Argv is the whole command: the emberfs binary and its arguments,
// or a prefix that execs them elsewhere (`ip netns exec NS emberfs ...`).
type Role struct {
	T     *testing.T
	Name  string // "mgmtd1", "storage3": the Nth start logs to Dir/Name.N.log
	Dir   string
	Argv  []string
	Ready func(p *Proc) // waits until the process serves; nil: no wait

	mu     sync.Mutex
	p      *Proc
	starts int
	paused bool
}

// Start runs the process (again) and waits until it is ready.
func (r *Role) Start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts++
	r.p = Start(r.T, r.Argv[0], filepath.Join(r.Dir, fmt.Sprintf("%s.%d.log", r.Name, r.starts)), r.Argv[1:]...)
	r.paused = false
	if r.Ready != nil {
		r.Ready(r.p)
	}
}

// Kill SIGKILLs the process (continuing it first if it was stopped) and
// waits until it is gone.
func (r *Role) Kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.paused {
		_ = r.p.Cmd.Process.Signal(syscall.SIGCONT)
		r.paused = false
	}
	r.p.Kill()
}

// Signal sends sig to the running process (SIGSTOP, SIGCONT); a process
// that already exited is a test failure.
func (r *Role) Signal(sig syscall.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.p.Done():
		r.T.Errorf("%s: process exited unexpectedly (%v):\n%s", r.Name, r.p.Err(), Tail(r.p.Output(), 3000))
		return
	default:
	}
	if err := r.p.Cmd.Process.Signal(sig); err != nil {
		r.T.Errorf("%s: %v: %v", r.Name, sig, err)
	}
	r.paused = sig == syscall.SIGSTOP
}

// Alive reports whether the process is still running (a role that died on
// its own, not by the test, is a failure the test reports).
func (r *Role) Alive() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.p.Done():
		return false
	default:
		return true
	}
}

// Proc is the current process.
func (r *Role) Proc() *Proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.p
}

// Tail is the last n bytes of s, for failure messages.
func Tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
