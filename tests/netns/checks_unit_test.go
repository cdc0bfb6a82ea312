package netns

import (
	"strings"
	"testing"

	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
)

// The checkers the cluster test relies on must be able to fail.

func TestFailureDomainCheckerCatchesSharedHost(t *testing.T) {
	info := &mgmtdpb.RoutingInfo{
		Nodes: []*mgmtdpb.Node{
			{NodeId: 1, Address: "10.0.0.4:7300"}, {NodeId: 2, Address: "10.0.0.5:7300"}, {NodeId: 3, Address: "10.0.0.4:7301"},
		},
		Targets: []*mgmtdpb.Target{{TargetId: 100, NodeId: 1}, {TargetId: 200, NodeId: 2}, {TargetId: 300, NodeId: 3}},
		Chains: []*mgmtdpb.Chain{
			{ChainId: 1, Targets: []*mgmtdpb.ChainTarget{{TargetId: 100}, {TargetId: 200}}},
			{ChainId: 2, Targets: []*mgmtdpb.ChainTarget{{TargetId: 100}, {TargetId: 300}}},
		},
	}
	r := routing.NewRouting(info)
	ipHost := map[string]string{"10.0.0.4": "st1", "10.0.0.5": "st2"}
	bad, err := failureDomainViolations(r, hostOfNode(r, ipHost))
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 1 || !strings.Contains(bad[0], "chain 2") || !strings.Contains(bad[0], "st1") {
		t.Fatalf("violations %q, want chain 2 on st1 only", bad)
	}
	delete(ipHost, "10.0.0.5")
	if _, err := failureDomainViolations(r, hostOfNode(r, ipHost)); err == nil {
		t.Fatal("a node on no known host was not reported")
	}
}

func TestSplitBrainChecker(t *testing.T) {
	p := func(start int64, primary bool) probeAnswer {
		return probeAnswer{start: start, end: start + 5, primary: primary, standby: !primary}
	}
	for _, c := range []struct {
		name    string
		answers [][]probeAnswer
		want    bool
	}{
		{"B, then A, then B again", [][]probeAnswer{{p(100, true)}, {p(0, true), p(200, true)}}, true},
		{"handover", [][]probeAnswer{{p(0, false), p(100, true), p(200, true)}, {p(10, true), p(60, false), p(210, false)}}, false},
		{"B stood down in between", [][]probeAnswer{{p(100, true)}, {p(0, true), p(50, false), p(200, true)}}, false},
		{"A's answer overlaps B's", [][]probeAnswer{{p(3, true)}, {p(0, true), p(200, true)}}, false},
	} {
		if got := splitBrain(c.answers) != ""; got != c.want {
			t.Errorf("%s: split brain %v, want %v (%s)", c.name, got, c.want, splitBrain(c.answers))
		}
	}
}

func TestReplicaDiff(t *testing.T) {
	head := map[string]string{"1/0": "v1 len 4 crc 1", "1/1": "v2 len 4 crc 2"}
	if d := diff(head, map[string]string{"1/0": "v1 len 4 crc 1", "1/1": "v2 len 4 crc 2"}); d != "" {
		t.Fatalf("equal replicas differ: %s", d)
	}
	d := diff(head, map[string]string{"1/0": "v1 len 4 crc 9", "2/0": "v1 len 1 crc 1"})
	for _, want := range []string{"1/0 v1 len 4 crc 9", "1/1 missing", "2/0 extra"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff %q lacks %q", d, want)
		}
	}
}
