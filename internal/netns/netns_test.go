package netns

import (
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/internal/testutil"
)

// TestCutHealAndCleanup: a host reaches the test (the bridge's address)
// while its link is up, not while it is cut, again once healed; the
// namespaces are gone when the test that made them ends.
func TestCutHealAndCleanup(t *testing.T) {
	var nsNames []string
	t.Run("network", func(t *testing.T) {
		n := New(t, "a", "b")
		bridgeIP := strings.TrimSuffix(n.Subnet, "0/24") + "254"
		l, err := net.Listen("tcp", bridgeIP+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		h := n.Host("a")
		nsNames = []string{h.NS, n.Host("b").NS}
		// bash's /dev/tcp connects from inside the namespace.
		reach := func() bool {
			argv := h.Command("timeout", "2", "bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(l.Addr().String(), ":", "/", 1))
			return exec.Command(argv[0], argv[1:]...).Run() == nil
		}
		if !reach() {
			t.Fatal("host a cannot reach the bridge")
		}
		h.Cut()
		if reach() {
			t.Fatal("host a reaches the bridge with its link cut")
		}
		h.Heal()
		// Heal returns once the link has its carrier back; the bridge
		// may still take a moment to forward.
		testutil.WaitUntil(t, "host a reaches the bridge after the heal", reach)
	})
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	for _, ns := range nsNames {
		if strings.Contains(string(out), ns) {
			t.Errorf("namespace %s left after the test", ns)
		}
	}
}
