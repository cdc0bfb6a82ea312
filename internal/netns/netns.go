// Package netns builds a network of "hosts" on one Linux machine for tests:
// each host is a network namespace with one veth link to a bridge, and a
// process runs on a host through `ip netns exec`. The plumbing itself is
// scripts/netns-cluster.sh (net-up, net-down, link, shape), shared with
// the script's manual `up`; this package calls it and removes the network
// when the test ends. Needs root.
package netns

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/internal/testutil"
)

// Network is one run's bridge and hosts.
type Network struct {
	t      testing.TB
	script string
	// Run is the run id that names the bridge (efb-RUN) and namespaces.
	Run string
	// Subnet is the run's /24; the root namespace, where the test runs,
	// is its .254 and reaches every host whose link is up.
	Subnet string
	Hosts  map[string]*Host
}

// Host is one namespace.
type Host struct {
	Name string // as given to New: "ctl1", "st3"
	NS   string // the namespace: efs-RUN-NAME
	IP   string
	net  *Network
}

// New creates a host per name (lower-case letters and digits) and removes
// them all when the test ends, after the processes the test started there
// (cleanups registered later run first). The script sweeps networks left
// by test processes that died without cleaning up.
func New(t testing.TB, names ...string) *Network {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netns: needs root (ip netns, veth pairs, a bridge)")
	}
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	n := &Network{t: t, script: filepath.Join(root, "scripts", "netns-cluster.sh"), Hosts: map[string]*Host{}}
	out, err := n.run(append([]string{"net-up", fmt.Sprint(os.Getpid())}, names...)...)
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if f := strings.Fields(lines[0]); len(f) == 2 {
		n.Run, n.Subnet = f[0], f[1]
	} else {
		t.Fatalf("netns: net-up printed %q, want RUN SUBNET first", lines[0])
	}
	t.Cleanup(func() {
		if _, err := n.run("net-down", n.Run); err != nil {
			t.Errorf("netns: %v", err)
		}
	})
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("netns: net-up printed %q, want HOST NS IP", l)
		}
		n.Hosts[f[0]] = &Host{Name: f[0], NS: f[1], IP: f[2], net: n}
	}
	if len(n.Hosts) != len(names) {
		t.Fatalf("netns: asked for %d hosts, net-up made %d:\n%s", len(names), len(n.Hosts), out)
	}
	return n
}

func (n *Network) run(args ...string) (string, error) {
	cmd := exec.Command(n.script, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s", filepath.Base(n.script), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// Host returns the named host or fails the test.
func (n *Network) Host(name string) *Host {
	h, ok := n.Hosts[name]
	if !ok {
		n.t.Fatalf("netns: no host %q", name)
	}
	return h
}

// Prefix is the command that runs a process on h; `ip netns exec` execs
// it, so the pid a test starts is the process's own.
func (h *Host) Prefix() []string { return []string{"ip", "netns", "exec", h.NS} }

// Command returns bin and args as one argv that runs on h.
func (h *Host) Command(bin string, args ...string) []string {
	return append(append(h.Prefix(), bin), args...)
}

// Addr is h's IP with port.
func (h *Host) Addr(port int) string { return fmt.Sprintf("%s:%d", h.IP, port) }

// Cut takes h's link to the bridge down: h keeps its own address but
// reaches no other host, and none reaches it (a network partition).
func (h *Host) Cut() { h.link("down") }

// Heal brings h's link back.
func (h *Host) Heal() { h.link("up") }

func (h *Host) link(state string) {
	h.net.t.Helper()
	if _, err := h.net.run("link", h.net.Run, h.Name, state); err != nil {
		h.net.t.Fatalf("netns: %v", err)
	}
}

// Shape puts a tc qdisc on h's egress ("tbf", "rate", "200mbit", ...);
// no arguments removes it.
func (h *Host) Shape(qdisc ...string) error {
	_, err := h.net.run(append([]string{"shape", h.net.Run, h.Name}, qdisc...)...)
	return err
}
