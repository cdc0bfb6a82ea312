package statemachine

import (
	"fmt"
	"testing"

	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

var allPreds = []Pred{NoPred, PredServing, PredNotServing}

// TestNextTable checks every row of the transition table in 3FS's design
// notes. "(any)" rows are checked against every predecessor value.
func TestNextTable(t *testing.T) {
	rows := []struct {
		local mgmtdpb.LocalState
		cur   mgmtdpb.PublicState
		preds []Pred // predecessor values the row covers
		want  mgmtdpb.PublicState
	}{
		{UpToDate, Serving, allPreds, Serving},
		{UpToDate, Syncing, allPreds, Serving},
		{UpToDate, Waiting, allPreds, Waiting},
		{UpToDate, LastSrv, allPreds, Serving},
		{UpToDate, Offline, allPreds, Waiting},

		{Online, Serving, allPreds, Serving},
		{Online, Syncing, []Pred{PredServing}, Syncing},
		{Online, Syncing, []Pred{PredNotServing, NoPred}, Waiting},
		{Online, Waiting, []Pred{PredServing}, Syncing},
		{Online, Waiting, []Pred{PredNotServing, NoPred}, Waiting},
		{Online, LastSrv, allPreds, Serving},
		{Online, Offline, allPreds, Waiting},

		{LocalOffline, Serving, []Pred{NoPred}, LastSrv},
		{LocalOffline, Serving, []Pred{PredServing, PredNotServing}, Offline},
		{LocalOffline, Syncing, allPreds, Offline},
		{LocalOffline, Waiting, allPreds, Offline},
		{LocalOffline, LastSrv, allPreds, LastSrv},
		{LocalOffline, Offline, allPreds, Offline},
	}
	covered := map[string]bool{}
	for _, r := range rows {
		for _, p := range r.preds {
			name := fmt.Sprintf("%s/%s/%s", short(r.local), short(r.cur), p)
			covered[name] = true
			t.Run(name, func(t *testing.T) {
				if got := Next(r.local, r.cur, p); got != r.want {
					t.Fatalf("Next(%s, %s, %s) = %s, want %s", r.local, r.cur, p, got, r.want)
				}
			})
		}
	}
	// The table is complete: 3 local states x 5 public states x 3 preds.
	if len(covered) != 3*5*3 {
		t.Fatalf("table covers %d combinations, want 45", len(covered))
	}
}

func TestNextUnspecifiedLocalIsOffline(t *testing.T) {
	for _, cur := range []mgmtdpb.PublicState{Serving, Syncing, Waiting, LastSrv, Offline} {
		for _, p := range allPreds {
			if got, want := Next(mgmtdpb.LocalState_LOCAL_UNSPECIFIED, cur, p), Next(LocalOffline, cur, p); got != want {
				t.Fatalf("unspecified local with %s/%s -> %s, offline gives %s", cur, p, got, want)
			}
		}
	}
}

func short(s fmt.Stringer) string { return s.String() }

func chain(ts ...Target) []Target { return ts }

func states(c []Target) string {
	s := ""
	for i, t := range c {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%d:%s", t.ID, stateName(t.Public))
	}
	return s
}

func stateName(p mgmtdpb.PublicState) string {
	return map[mgmtdpb.PublicState]string{Serving: "serving", Syncing: "syncing", Waiting: "waiting", LastSrv: "lastsrv", Offline: "offline"}[p]
}

func TestUpdateChainScenarios(t *testing.T) {
	cases := []struct {
		name    string
		in      []Target
		want    string
		changed bool
	}{
		{"all healthy unchanged",
			chain(Target{1, Serving, UpToDate}, Target{2, Serving, UpToDate}, Target{3, Serving, Online}),
			"1:serving 2:serving 3:serving", false},
		{"failed head moves to end",
			chain(Target{1, Serving, LocalOffline}, Target{2, Serving, UpToDate}, Target{3, Serving, UpToDate}),
			"2:serving 3:serving 1:offline", true},
		{"failed middle moves to end",
			chain(Target{1, Serving, UpToDate}, Target{2, Serving, LocalOffline}, Target{3, Serving, UpToDate}),
			"1:serving 3:serving 2:offline", true},
		{"last serving fails becomes lastsrv",
			chain(Target{2, Serving, LocalOffline}, Target{1, Offline, LocalOffline}),
			"2:lastsrv 1:offline", true},
		{"all serving fail at once: only the first is lastsrv",
			chain(Target{1, Serving, LocalOffline}, Target{2, Serving, LocalOffline}, Target{3, Serving, LocalOffline}),
			"1:lastsrv 2:offline 3:offline", true},
		{"lastsrv returns and serves",
			chain(Target{2, LastSrv, Online}, Target{1, Offline, Online}),
			"2:serving 1:waiting", true},
		{"offline returns: waiting",
			chain(Target{1, Serving, UpToDate}, Target{2, Offline, Online}),
			"1:serving 2:waiting", true},
		{"waiting behind serving starts syncing",
			chain(Target{1, Serving, UpToDate}, Target{2, Waiting, Online}),
			"1:serving 2:syncing", true},
		{"one syncs at a time",
			chain(Target{1, Serving, UpToDate}, Target{2, Waiting, Online}, Target{3, Waiting, Online}),
			"1:serving 2:syncing 3:waiting", true},
		{"existing syncing keeps the slot",
			chain(Target{1, Serving, UpToDate}, Target{3, Syncing, Online}, Target{2, Waiting, Online}),
			"1:serving 3:syncing 2:waiting", false},
		{"sync done serves; the next waiting target starts syncing",
			chain(Target{1, Serving, UpToDate}, Target{2, Syncing, UpToDate}, Target{3, Waiting, Online}),
			"1:serving 2:serving 3:syncing", true},
		{"syncing without serving predecessor waits",
			chain(Target{1, Serving, LocalOffline}, Target{2, Syncing, Online}),
			"1:lastsrv 2:waiting", true},
		{"up-to-date waiting still waits",
			chain(Target{1, Serving, UpToDate}, Target{2, Syncing, Online}, Target{3, Waiting, UpToDate}),
			"1:serving 2:syncing 3:waiting", false},
		{"lastsrv demoted once another serves",
			chain(Target{1, Serving, UpToDate}, Target{2, LastSrv, LocalOffline}),
			"1:serving 2:offline", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, changed := UpdateChain(c.in)
			if states(got) != c.want || changed != c.changed {
				t.Fatalf("UpdateChain(%s) = %s (changed %v), want %s (changed %v)", states(c.in), states(got), changed, c.want, c.changed)
			}
		})
	}
}

// TestReturningTargetRecovers walks one target through a failure and its
// return, applying UpdateChain once per scan as mgmtd does.
func TestReturningTargetRecovers(t *testing.T) {
	c := chain(Target{1, Serving, UpToDate}, Target{2, Serving, UpToDate}, Target{3, Serving, UpToDate})
	local := map[uint64]mgmtdpb.LocalState{1: UpToDate, 2: UpToDate, 3: UpToDate}
	step := func() {
		for i := range c {
			c[i].Local = local[c[i].ID]
		}
		c, _ = UpdateChain(c)
	}
	local[1] = LocalOffline
	step()
	if got := states(c); got != "2:serving 3:serving 1:offline" {
		t.Fatalf("after failure: %s", got)
	}
	local[1] = Online
	var seen []string
	for range 3 {
		step()
		seen = append(seen, stateName(c[2].Public))
	}
	if fmt.Sprint(seen) != "[waiting syncing syncing]" {
		t.Fatalf("returning target went through %v, want waiting, syncing, syncing", seen)
	}
	local[1] = UpToDate
	step()
	if got := states(c); got != "2:serving 3:serving 1:serving" {
		t.Fatalf("after sync: %s", got)
	}
	if ids := ServingOrder(c); fmt.Sprint(ids) != "[2 3 1]" {
		t.Fatalf("serving order %v", ids)
	}
}
