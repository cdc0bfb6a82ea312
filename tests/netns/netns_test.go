package netns

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emberfs/emberfs/service/routing"
	"github.com/emberfs/emberfs/tests/testproc"
)

// TestCluster runs every scenario on one cluster, one after the other
// (starting 18 processes in 13 namespaces is the slow part); each leaves
// the cluster all serving for the next.
func TestCluster(t *testing.T) {
	c := startCluster(t)
	steps := []struct {
		name string
		run  func(*testing.T, *cluster)
	}{
		{"FailureDomains", testFailureDomains},
		{"ReadScaling", testReadScaling},
		{"HostLoss", testHostLoss},
		{"StorageHostPartition", testStorageHostPartition},
		{"ControlMinorityPartition", testControlMinorityPartition},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { c.t = t; s.run(t, c) }) {
			t.Fatalf("%s failed; later steps need the cluster it leaves", s.name)
		}
	}
}

// testFailureDomains proves on the running cluster that no chain holds two
// replicas on one host: each target's node is mapped to the host whose IP
// the node registered with (so the mapping is what the network did, not
// what the test configured).
func testFailureDomains(t *testing.T, c *cluster) {
	r := c.cache.Current()
	ipHost := map[string]string{}
	for _, h := range c.net.Hosts {
		ipHost[h.IP] = h.Name
	}
	bad, err := failureDomainViolations(r, hostOfNode(r, ipHost))
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("chains with two replicas on one host:\n%s", strings.Join(bad, "\n"))
	}
	hosts := map[string]bool{}
	chains := 0
	for _, ch := range r.Info.Chains {
		chains++
		for _, ct := range ch.Targets {
			h, _ := hostOfNode(r, ipHost)(mustTarget(t, r, ct.TargetId).GetNodeId())
			hosts[h] = true
		}
	}
	if chains != 4+6 || len(hosts) != storageHosts {
		t.Fatalf("%d chains over %d hosts, want 10 (4 of 3 replicas, 6 of 1) over %d", chains, len(hosts), storageHosts)
	}
	t.Logf("%d chains over %d storage hosts, every replica of a chain on its own host", chains, len(hosts))
}

// testReadScaling prints aggregate read throughput from 1, 2 and 4
// client hosts reading at once, for chains of 1 and of 3 replicas, in two
// setups: (1) many files over every chain, links unshaped (what this
// machine's CPUs give); (2) one hot 1 MiB chunk that every client reads,
// with every storage host's link shaped to storageRate, so the replicas'
// links, not the CPUs, bound it: with 3 replicas the client spreads the
// reads over three hosts. It asserts only that every read succeeded and
// returned the right bytes.
func testReadScaling(t *testing.T, c *cluster) {
	const files, size, hot = 8, 4 << 20, 1 << 20
	const storageRate = "200mbit" // 25 MB/s per storage host
	for _, d := range []struct {
		dir                  string
		table, stripe, n, sz int
	}{{"/r3", mainTable, 4, files, size}, {"/r1", singleTable, 6, files, size}, {"/h3", mainTable, 1, 1, hot}, {"/h1", singleTable, 1, 1, hot}} {
		p := c.clientProc(c.client(0), "prep"+d.dir[1:], "prep", d.dir, strconv.Itoa(d.table), strconv.Itoa(d.stripe),
			strconv.Itoa(d.n), strconv.Itoa(d.sz))
		if err := p.Err(); err != nil || !strings.Contains(p.Output(), fmt.Sprintf("PREPARED %d", d.n)) {
			t.Fatalf("prep %s: %v\n%s", d.dir, err, p.Output())
		}
	}
	var table strings.Builder
	table.WriteString("| workload | client hosts | replicas | aggregate read MB/s | per client MB/s |\n|---|---|---|---|---|\n")
	run := func(label, dirPrefix string, n, sz int) {
		for _, replicas := range []int{1, 3} {
			dir := fmt.Sprintf("%s%d", dirPrefix, replicas)
			for _, clients := range []int{1, 2, 4} {
				agg := c.readAll(dir, clients, n, sz)
				fmt.Fprintf(&table, "| %s | %d | %d | %.0f | %.0f |\n", label, clients, replicas, agg, agg/float64(clients))
			}
		}
	}
	run(fmt.Sprintf("%d files x %d MiB, unshaped", files, size>>20), "/r", files, size)
	for i := range storageHosts {
		if err := c.st(i).Shape("tbf", "rate", storageRate, "burst", "256kb", "latency", "100ms"); err != nil {
			t.Fatal(err)
		}
	}
	run("one hot 1 MiB chunk, storage links "+storageRate, "/h", 1, hot)
	for i := range storageHosts {
		if err := c.st(i).Shape(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("aggregate read throughput: files read whole with O_DIRECT, 4 threads per client host, %v per run:\n%s",
		readFor, table.String())
}

const readFor = 3 * time.Second

// readAll runs a reader of dir's n files on each of the first clients
// client hosts for readFor and returns the aggregate MB/s.
func (c *cluster) readAll(dir string, clients, n, sz int) float64 {
	t := c.t
	var ps []*testproc.Proc
	for i := range clients {
		ps = append(ps, c.clientProc(c.client(i), fmt.Sprintf("read%s-%d-%d", strings.ReplaceAll(dir, "/", "-"), clients, i),
			"--threads", "4", "read", dir, strconv.Itoa(n), strconv.Itoa(sz)))
	}
	time.Sleep(readFor)
	var total int64
	var secs float64
	for i, p := range ps {
		b, s, errs, err := parseRead(stop(p))
		if err != nil || errs > 0 || b == 0 {
			t.Fatalf("reader on cl%d (%s, %d hosts): %d bytes, %d errors, %v\n%s", i+1, dir, clients, b, errs, err,
				testproc.Tail(p.Output(), 3000))
		}
		total += b
		secs = max(secs, s)
	}
	return float64(total) / secs / 1e6
}

func parseRead(out string) (bytes int64, secs float64, errs int64, err error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "READ" {
			bytes, _ = strconv.ParseInt(f[1], 10, 64)
			secs, _ = strconv.ParseFloat(f[2], 64)
			errs, _ = strconv.ParseInt(f[3], 10, 64)
			return bytes, secs, errs, nil
		}
	}
	return 0, 0, 0, fmt.Errorf("no READ line")
}

// testHostLoss SIGKILLs everything on storage host st1 while a client host
// writes and another reads: reads keep working, writes resume once mgmtd
// takes st1 out of its chains (while st1 is still down), and st1's targets
// resync when it comes back, every replica then equal.
func testHostLoss(t *testing.T, c *cluster) {
	p := c.clientProc(c.client(1), "prep-loss", "prep", "/loss-r", strconv.Itoa(mainTable), "4", "8", strconv.Itoa(1<<20))
	if err := p.Err(); err != nil || !strings.Contains(p.Output(), "PREPARED 8") {
		t.Fatalf("prep /loss-r: %v\n%s", err, p.Output())
	}
	w := c.clientProc(c.client(0), "write-loss", "--size", strconv.Itoa(writeSize), "write", "/loss")
	c.waitAcks(w, time.Time{}, 5)
	rd := c.clientProc(c.client(1), "read-loss", "--threads", "2", "read", "/loss-r", "8", strconv.Itoa(1<<20))
	time.Sleep(500 * time.Millisecond)

	killed := time.Now()
	c.storage[0].Kill() // the only process on st1
	c.waitNodeOut(1)
	out := time.Now()
	c.waitAcks(w, out, 5)
	b, _, errs, err := parseRead(stop(rd))
	if err != nil || errs > 0 || b == 0 {
		t.Fatalf("reads while st1 was down: %d bytes, %d errors, %v\n%s", b, errs, err, testproc.Tail(rd.Output(), 3000))
	}

	c.storage[0].Start()
	c.waitAllServing()
	resynced := time.Now()
	c.waitAcks(w, resynced, 3)
	as := acks(stop(w))
	t.Logf("st1 killed; taken out of its chains after %v (failure timeout %v); longest time without an acknowledged write: %v; "+
		"resynced %v after restart; reads during the loss: %d MB, 0 errors; %d writes acknowledged",
		out.Sub(killed).Round(time.Millisecond), failureTimeout, longestGap(as, killed, out).Round(time.Millisecond),
		resynced.Sub(out).Round(time.Millisecond), b>>20, len(as))
	c.verify(c.client(2), as)
	c.checkReplicas()
}

// testStorageHostPartition cuts st2's link while a client host writes:
// writes resume without it, and once the link is back its targets resync
// and every acknowledged write is there on every replica.
func testStorageHostPartition(t *testing.T, c *cluster) {
	w := c.clientProc(c.client(0), "write-part", "--size", strconv.Itoa(writeSize), "write", "/part")
	c.waitAcks(w, time.Time{}, 5)
	cut := time.Now()
	c.st(1).Cut()
	c.waitNodeOut(2)
	out := time.Now()
	c.waitAcks(w, out, 5)
	healAt := time.Now()
	c.st(1).Heal()
	c.waitAllServing()
	healed := time.Now()
	c.waitAcks(w, healed, 3)
	if !c.storage[1].Alive() {
		t.Fatalf("storage2 exited during the partition:\n%s", testproc.Tail(c.storage[1].Proc().Output(), 3000))
	}
	as := acks(stop(w))
	t.Logf("st2 cut off; out of its chains after %v; longest time without an acknowledged write: %v; all serving %v after heal; %d writes acknowledged",
		out.Sub(cut).Round(time.Millisecond), longestGap(as, cut, out).Round(time.Millisecond), healed.Sub(healAt).Round(time.Millisecond), len(as))
	c.verify(c.client(2), as)
	c.checkReplicas()
}

// testControlMinorityPartition cuts the control host of the primary mgmtd
// (with it one etcd member of three and one meta) while a client host
// writes and every mgmtd is probed from its own host: a majority-side
// mgmtd becomes primary, the cut one stops answering as primary while
// still cut, no two answer as primary at once, writes go on, and after the
// heal the cut host follows the new primary and nothing acknowledged is
// lost.
func testControlMinorityPartition(t *testing.T, c *cluster) {
	var probes []*testproc.Proc
	for i := range 3 {
		h := c.ctl(i)
		probes = append(probes, c.clientProc(h, fmt.Sprintf("probe%d", i+1), "probe", h.Addr(7100)))
	}
	old := -1
	waitProbes(t, probes, "a primary", func(a [][]probeAnswer) bool {
		for i := range a {
			if n := len(a[i]); n > 0 && a[i][n-1].primary {
				old = i
				return true
			}
		}
		return false
	})
	w := c.clientProc(c.client(0), "write-ctl", "--size", strconv.Itoa(writeSize), "write", "/ctl")
	c.waitAcks(w, time.Time{}, 5)

	cutAt := time.Now()
	cutHost := c.ctl(old)
	cutHost.Cut()
	var newPrimary int
	waitProbes(t, probes, "a new primary on the majority side", func(a [][]probeAnswer) bool {
		for i := range a {
			if n := len(a[i]); i != old && n > 0 && a[i][n-1].primary && a[i][n-1].start > cutAt.UnixNano() {
				newPrimary = i
				return true
			}
		}
		return false
	})
	tookOver := time.Now()
	waitProbes(t, probes, fmt.Sprintf("mgmtd%d (cut off) to stop answering as primary", old+1), func(a [][]probeAnswer) bool {
		n := len(a[old])
		return n > 0 && !a[old][n-1].primary && a[old][n-1].start > cutAt.UnixNano()
	})
	steppedDown := time.Now()
	c.waitAcks(w, tookOver, 5)

	cutHost.Heal()
	healedAt := time.Now()
	waitProbes(t, probes, fmt.Sprintf("mgmtd%d to answer as standby after the heal", old+1), func(a [][]probeAnswer) bool {
		n := len(a[old])
		return n > 0 && a[old][n-1].standby && a[old][n-1].start > healedAt.UnixNano()
	})
	c.waitAllServing()
	c.waitAcks(w, time.Now(), 3)
	as := acks(stop(w))
	var answers [][]probeAnswer
	for _, p := range probes {
		answers = append(answers, parseProbes(stop(p)))
	}
	if sb := splitBrain(answers); sb != "" {
		t.Fatalf("two mgmtd primaries at once: %s", sb)
	}
	for i, r := range append(append([]*testproc.Role(nil), c.mgmtd...), c.meta...) {
		if !r.Alive() {
			t.Fatalf("%s exited during the partition (%d):\n%s", r.Name, i, testproc.Tail(r.Proc().Output(), 3000))
		}
	}
	t.Logf("ctl%d (primary mgmtd, etcd member, meta) cut off: mgmtd%d primary after %v, mgmtd%d stopped answering as primary after %v; "+
		"longest time without an acknowledged write: %v; %d writes acknowledged, %d probe answers, no two primaries",
		old+1, newPrimary+1, tookOver.Sub(cutAt).Round(time.Millisecond), old+1, steppedDown.Sub(cutAt).Round(time.Millisecond),
		longestGap(as, cutAt, tookOver).Round(time.Millisecond), len(as), len(answers[0])+len(answers[1])+len(answers[2]))
	c.verify(c.client(2), as)
	c.checkReplicas()
}

// waitProbes waits until cond holds on the probes' answers so far.
func waitProbes(t *testing.T, probes []*testproc.Proc, what string, cond func([][]probeAnswer) bool) {
	t.Helper()
	deadline := time.Now().Add(testproc.Eventually)
	for {
		var a [][]probeAnswer
		for _, p := range probes {
			a = append(a, parseProbes(p.Output()))
		}
		if cond(a) {
			return
		}
		if time.Now().After(deadline) {
			var tails []string
			for i, p := range probes {
				tails = append(tails, fmt.Sprintf("--- probe of mgmtd%d\n%s", i+1, testproc.Tail(p.Output(), 600)))
			}
			t.Fatalf("waited %v for %s:\n%s", testproc.Eventually, what, strings.Join(tails, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func parseProbes(out string) []probeAnswer {
	var as []probeAnswer
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] != "P" {
			continue
		}
		s, _ := strconv.ParseInt(f[1], 10, 64)
		e, _ := strconv.ParseInt(f[2], 10, 64)
		as = append(as, probeAnswer{start: s, end: e, primary: f[3] == "primary", standby: f[3] == "standby"})
	}
	return as
}

// checkReplicas fails the test if the replicas of any chain differ.
func (c *cluster) checkReplicas() {
	c.t.Helper()
	_ = c.cache.Refresh(c.ctx())
	bad, err := replicaDivergence(c.ctx(), c.cache.Current())
	if err != nil {
		c.t.Fatal(err)
	}
	if len(bad) > 0 {
		c.t.Fatalf("replicas differ:\n%s", strings.Join(bad, "\n"))
	}
}

func mustTarget(t *testing.T, r *routing.Routing, id uint64) interface{ GetNodeId() uint32 } {
	tg, ok := r.Target(id)
	if !ok {
		t.Fatalf("no target %d", id)
	}
	return tg
}
