// Package etcdcluster runs a real etcd cluster for tests: each member is a
// separate etcd process on loopback ports, started through
// scripts/etcd-member.sh (which builds the server once per machine, cached),
// and can be SIGKILLed and restarted.
package etcdcluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/emberfs/emberfs/internal/testutil"
)

// Eventually bounds every wait; nothing asserts on how fast things happen.
const Eventually = 60 * time.Second

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	script  string
	members []*member
	initial string // --initial-cluster
	mu      sync.Mutex
}

type member struct {
	name, dir, clientURL, peerURL string
	prefix                        []string // runs the member on its host
	cmd                           *exec.Cmd
	log                           *os.File
}

// Host places a member on a host of its own (internal/netns): the member
// listens on IP:2379 (clients) and IP:2380 (peers), and Prefix is the
// command that runs a process there ("ip netns exec NS").
type Host struct {
	IP     string
	Prefix []string
}

// Start starts an n-member cluster on loopback and waits until it serves
// linearizable reads; every member is killed when the test ends. A missing
// Go toolchain or a failed etcd build fails the test with the build's output.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return start(t, n, nil)
}

// StartOn is Start with one member on each of hosts.
func StartOn(t testing.TB, hosts []Host) *Cluster {
	t.Helper()
	return start(t, len(hosts), hosts)
}

func start(t testing.TB, n int, hosts []Host) *Cluster {
	t.Helper()
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatalf("etcdcluster: %v", err)
	}
	build := exec.Command(filepath.Join(root, "scripts", "build-etcd.sh"))
	var out bytes.Buffer
	build.Stdout, build.Stderr = &out, &out
	if err := build.Run(); err != nil {
		t.Fatalf("etcdcluster: scripts/build-etcd.sh: %v\n%s", err, out.String())
	}
	var lastErr error
	// Ports are picked free and released before etcd binds them; another
	// process can take one in between, so a failed start is tried again
	// on fresh ports.
	for try := 0; try < 3; try++ {
		c := &Cluster{t: t, script: filepath.Join(root, "scripts", "etcd-member.sh")}
		if lastErr = c.start(n, hosts); lastErr == nil {
			t.Cleanup(c.stopAll)
			return c
		}
		c.stopAll()
	}
	t.Fatalf("etcdcluster: start %d members: %v", n, lastErr)
	return nil
}

func (c *Cluster) start(n int, hosts []Host) error {
	base := c.t.TempDir()
	var initial []string
	for i := range n {
		m := &member{name: fmt.Sprintf("e%d", i), dir: filepath.Join(base, fmt.Sprintf("e%d", i))}
		if hosts != nil {
			// A host of its own: etcd's usual ports are free there.
			m.clientURL = fmt.Sprintf("http://%s:2379", hosts[i].IP)
			m.peerURL = fmt.Sprintf("http://%s:2380", hosts[i].IP)
			m.prefix = hosts[i].Prefix
		} else {
			cp, err := freePort()
			if err != nil {
				return err
			}
			pp, err := freePort()
			if err != nil {
				return err
			}
			m.clientURL = fmt.Sprintf("http://127.0.0.1:%d", cp)
			m.peerURL = fmt.Sprintf("http://127.0.0.1:%d", pp)
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	c.initial = strings.Join(initial, ",")
	for i := range c.members {
		if err := c.launch(i); err != nil {
			return err
		}
	}
	return c.waitReady()
}

func (c *Cluster) launch(i int) error {
	m := c.members[i]
	log, err := os.OpenFile(m.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// The prefix execs its command, as the script execs etcd: the pid
	// Kill signals is etcd's.
	argv := append(append([]string(nil), m.prefix...), c.script, m.name, m.dir, m.clientURL, m.peerURL, c.initial, "new")
	cmd := exec.Command(argv[0], argv[1:]...)
	// Killed with the test binary if that dies without its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start member %s: %w", m.name, err)
	}
	c.mu.Lock()
	m.cmd, m.log = cmd, log
	c.mu.Unlock()
	go cmd.Wait() //nolint:errcheck // reaped here; Kill waits on the process itself
	return nil
}

// waitReady waits until a linearizable read succeeds through every running
// member's endpoint.
func (c *Cluster) waitReady() error {
	deadline := time.Now().Add(Eventually)
	for _, ep := range c.Endpoints() {
		for {
			err := probe(ep)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("member %s not serving after %v: %v; logs:\n%s", ep, Eventually, err, c.Logs())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func probe(endpoint string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = cli.Get(ctx, "probe")
	return err
}

// Endpoints lists every member's client URL (running or not).
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// Spec is the kvopen spec for the cluster with a key prefix ("" for none).
func (c *Cluster) Spec(prefix string) string {
	var hosts []string
	for _, ep := range c.Endpoints() {
		hosts = append(hosts, strings.TrimPrefix(ep, "http://"))
	}
	s := "etcd:" + strings.Join(hosts, ",")
	if prefix != "" {
		s += "/" + prefix
	}
	return s
}

// Kill SIGKILLs member i and waits until it is gone.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.mu.Lock()
	m := c.members[i]
	cmd := m.cmd
	m.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	for syscall.Kill(cmd.Process.Pid, 0) == nil {
		time.Sleep(10 * time.Millisecond) // until cmd.Wait has reaped it
	}
	m.log.Close()
}

// Restart starts member i again on its data directory and waits until the
// cluster serves through it.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.launch(i); err != nil {
		c.t.Fatalf("etcdcluster: %v", err)
	}
	deadline := time.Now().Add(Eventually)
	for {
		err := probe(c.members[i].clientURL)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("etcdcluster: member %d not serving after restart: %v\n%s", i, err, c.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Logs returns the tail of every member's log, for failure messages.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, m := range c.members {
		data, _ := os.ReadFile(m.dir + ".log")
		if len(data) > 2000 {
			data = data[len(data)-2000:]
		}
		fmt.Fprintf(&b, "--- %s (%s)\n%s\n", m.name, m.clientURL, data)
	}
	return b.String()
}

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Kill(i)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Leader returns the index of the member that is raft leader now.
func (c *Cluster) Leader() int {
	c.t.Helper()
	deadline := time.Now().Add(Eventually)
	for {
		for i, m := range c.members {
			if leader, ok := isLeader(m.clientURL); ok && leader {
				return i
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("etcdcluster: no leader after %v\n%s", Eventually, c.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func isLeader(endpoint string) (leader, ok bool) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return false, false
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		return false, false
	}
	return st.Leader == st.Header.MemberId, true
}
