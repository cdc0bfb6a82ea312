// Package ops tests the operations tools with the real emberfs binary
// against a real cluster (`emberfs up` as a process): the mount-less CLI
// (ls, cat, cp, rm, mkdir, du, stat), the /metrics of every role and the
// Grafana dashboard's queries, and `emberfs top`.
package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/emberfs/emberfs/tests/testproc"
)

var emberfsBin string

func TestMain(m *testing.M) { testproc.Main(m, &emberfsBin) }

// upCluster is a running `emberfs up` process and what its info file said.
type upCluster struct {
	proc  *testproc.Proc
	dir   string
	mgmtd string
	token string
	info  map[string]string
}

var readyRE = regexp.MustCompile(`(ready) \(Ctrl-C stops\)`)

// startUp runs `emberfs up` (one storage service with two targets, one
// replica, no fsync) on kernel-chosen ports and waits until it is ready.
func startUp(t *testing.T, extra ...string) *upCluster {
	t.Helper()
	dir := t.TempDir()
	infoPath := filepath.Join(dir, "info.json")
	args := append([]string{"up", "--data", filepath.Join(dir, "data"), "--storage", "1", "--replicas", "1", "--targets", "2",
		"--no-sync", "--no-demo", "--mgmtd-listen", "127.0.0.1:0", "--info-file", infoPath}, extra...)
	p := testproc.Start(t, emberfsBin, filepath.Join(dir, "up.log"), args...)
	p.Wait(t, readyRE)
	b, err := os.ReadFile(infoPath)
	if err != nil {
		t.Fatal(err)
	}
	info := map[string]string{}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatalf("info file %s: %v", b, err)
	}
	return &upCluster{proc: p, dir: dir, mgmtd: info["mgmtd"], token: info["token"], info: info}
}

// result is one finished emberfs command.
type result struct {
	stdout, stderr string
	err            error
}

// run runs the binary with env added to a cleaned environment (no
// EMBERFS_* from the test runner's shell, no user config file).
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testproc.Eventually)
	defer cancel()
	cmd := exec.CommandContext(ctx, emberfsBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("emberfs %v did not finish within %v", args, testproc.Eventually)
	}
	return result{out.String(), errb.String(), err}
}

// env is the environment that points commands at c.
func (c *upCluster) env() []string {
	return []string{"EMBERFS_MGMTD=" + c.mgmtd, "EMBERFS_TOKEN=" + c.token}
}

// must runs a command that has to succeed and returns its stdout.
func (c *upCluster) must(t *testing.T, args ...string) string {
	t.Helper()
	r := run(t, c.env(), args...)
	if r.err != nil {
		t.Fatalf("emberfs %v: %v\nstdout: %s\nstderr: %s", args, r.err, r.stdout, r.stderr)
	}
	return r.stdout
}
