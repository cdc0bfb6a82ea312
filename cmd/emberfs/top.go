package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/service/mgmtd"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

func init() { subcommands = append(subcommands, newTopCmd) }

// newTopCmd is `emberfs top`: a refreshing view of cluster throughput,
// operations per second and target states, computed from the roles'
// /metrics (the difference of counters between two scrapes). `emberfs
// status` stays the one-shot table of routing.
func newTopCmd() *cobra.Command {
	var (
		urls     string
		interval time.Duration
		count    int
		cf       clusterFlags
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live view of cluster throughput, ops/s and target states (from the roles' /metrics)",
		Long: `Finds every role's /metrics through mgmtd (each mgmtd, meta and storage
service registers its metrics address; 'emberfs up' registers its single
one), scrapes them each --interval and shows rates over the last interval:
bytes read and written by storage (replica traffic included), requests per
second by role and operation, requests in flight, and target and node states
from the primary mgmtd. The role list is read again at every refresh, so
services that join or leave show up; one that does not answer is listed as
unreachable. --metrics adds URLs mgmtd does not know (FUSE mounts), or
replaces discovery when no cluster is configured. On a terminal the view
redraws in place until Ctrl-C; --count N stops after N refreshes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval <= 0 {
				return fmt.Errorf("top: --interval %v must be positive", interval)
			}
			src := &topSources{static: mgmtdclient.ParseAddrs(urls), timeout: cf.timeout}
			addrs, token, err := cf.resolve()
			switch {
			case err == nil:
				conn, err := mgmtdclient.Dial(addrs, token)
				if err != nil {
					return fmt.Errorf("top: %w", err)
				}
				defer conn.Close()
				src.mgmtd, src.mgmtdAddrs = conn, addrs
			case len(src.static) == 0:
				return fmt.Errorf("top: no cluster to find the roles' /metrics through (%v), and no --metrics URL", err)
			case cmd.Flags().Changed("mgmtd") || cmd.Flags().Changed("token") || cmd.Flags().Changed("config"):
				// Asked for discovery explicitly: do not quietly drop it.
				return fmt.Errorf("top: %w", err)
			}
			out := cmd.OutOrStdout()
			redraw := count != 1 && isTerminal(os.Stdout) && out == io.Writer(os.Stdout)
			return runTop(cmd.Context(), out, src, interval, count, redraw)
		},
	}
	cf.add(cmd)
	f := cmd.Flags()
	f.StringVar(&urls, "metrics", os.Getenv("EMBERFS_METRICS"), "extra comma-separated /metrics URLs, e.g. of mounts (default $EMBERFS_METRICS)")
	f.DurationVar(&interval, "interval", time.Second, "time between refreshes")
	f.IntVarP(&count, "count", "n", 0, "stop after this many refreshes (0: until Ctrl-C)")
	return cmd
}

// topSource is one /metrics URL and what serves it ("storage 2", "mgmtd",
// "mgmtd+meta 1+storage 1" for emberfs up, "--metrics").
type topSource struct{ url, what string }

// topSources lists the sources to scrape: those mgmtd's routing names
// (when a cluster is configured) and the --metrics URLs.
type topSources struct {
	static     []string
	mgmtd      *mgmtdclient.Conn
	mgmtdAddrs []string
	timeout    time.Duration
	// last is the previous discovery, kept when mgmtd is briefly
	// unreachable (a failover) so the view goes on.
	last []topSource
}

// list returns the sources and a note on discovery ("" when it worked).
func (s *topSources) list(ctx context.Context, first bool) ([]topSource, string, error) {
	var found []topSource
	note := ""
	if s.mgmtd != nil {
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		var info *mgmtdpb.RoutingInfo
		err := s.mgmtd.Call(cctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
			rsp, err := cl.GetRoutingInfo(ctx, &mgmtdpb.GetRoutingInfoReq{})
			if err == nil {
				info = rsp.Info
			}
			return err
		})
		cancel()
		switch {
		case err != nil && first:
			return nil, "", fmt.Errorf("top: cannot read routing from mgmtd %s within %v: %w", strings.Join(s.mgmtdAddrs, ","), s.timeout, err)
		case err != nil:
			found, note = s.last, fmt.Sprintf("mgmtd unreachable, using the last role list (%v)", err)
		default:
			found = discoveredSources(info)
			s.last = found
		}
	}
	for _, u := range s.static {
		found = append(found, topSource{url: u, what: "--metrics"})
	}
	return mergeSources(found), note, nil
}

// discoveredSources is the primary mgmtd and every node that registered a
// metrics address, except nodes mgmtd declared failed (their process is
// gone or cut off; scraping them would only time out).
func discoveredSources(info *mgmtdpb.RoutingInfo) []topSource {
	var out []topSource
	if info.PrimaryMetricsAddress != "" {
		out = append(out, topSource{url: metricsURL(info.PrimaryMetricsAddress), what: "mgmtd"})
	}
	for _, n := range info.Nodes {
		if n.MetricsAddress == "" || n.Status == mgmtdpb.NodeStatus_NODE_FAILED {
			continue
		}
		out = append(out, topSource{url: metricsURL(n.MetricsAddress), what: fmt.Sprintf("%s %d", mgmtd.RoleName(n.Role), n.NodeId)})
	}
	return out
}

func metricsURL(hostport string) string { return "http://" + hostport + "/metrics" }

// mergeSources keeps one source per URL (emberfs up serves every role on
// one), naming everything it serves, in first-seen order.
func mergeSources(in []topSource) []topSource {
	var out []topSource
	at := map[string]int{}
	for _, s := range in {
		if i, ok := at[s.url]; ok {
			out[i].what += "+" + s.what
			continue
		}
		at[s.url] = len(out)
		out = append(out, s)
	}
	return out
}

func runTop(ctx context.Context, w io.Writer, src *topSources, interval time.Duration, count int, redraw bool) error {
	hc := &http.Client{Timeout: max(interval, 2*time.Second)}
	sources, _, err := src.list(ctx, true)
	if err != nil {
		return err
	}
	if len(sources) == 0 {
		return errors.New("top: mgmtd knows no /metrics address (roles started without metrics_listen?); pass --metrics URL[,...]")
	}
	prev := scrapeAll(ctx, hc, sources)
	for i := 0; count == 0 || i < count; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
		sources, note, err := src.list(ctx, false)
		if err != nil {
			return err
		}
		cur := scrapeAll(ctx, hc, sources)
		if redraw {
			fmt.Fprint(w, "\033[H\033[2J")
		} else if i > 0 {
			fmt.Fprintln(w)
		}
		printTop(w, prev, cur, note)
		prev = cur
	}
	return nil
}

// topSample is one scrape of every source, reduced to sums by name and
// label, kept per source so that rates are taken per process: a source
// that joins or leaves between two samples does not show as a burst.
type topSample struct {
	at time.Time
	// sums[url][name][labelValue] sums series of that family whose label
	// topLabel[name] has that value ("" for the total).
	sums map[string]map[string]map[string]float64
	// ok and failed name the sources scraped and those that did not answer.
	ok     []topSource
	failed []string
}

// topLabel is the label each family is broken down by in the view.
var topLabel = map[string]string{
	"emberfs_storage_read_bytes_total":   "",
	"emberfs_storage_write_bytes_total":  "",
	"emberfs_storage_requests_total":     "op",
	"emberfs_storage_requests_in_flight": "",
	"emberfs_meta_requests_total":        "method",
	"emberfs_meta_requests_in_flight":    "",
	"emberfs_mount_read_bytes_total":     "",
	"emberfs_mount_write_bytes_total":    "",
	"emberfs_mount_ops_total":            "op",
	"emberfs_mgmtd_targets":              "state",
	"emberfs_mgmtd_nodes":                "status",
}

// scrapeAll scrapes every source; one that fails is recorded, not fatal:
// the view goes on with the others and names it.
func scrapeAll(ctx context.Context, hc *http.Client, sources []topSource) *topSample {
	s := &topSample{at: time.Now(), sums: map[string]map[string]map[string]float64{}}
	for _, src := range sources {
		fams, err := scrape(ctx, hc, src.url)
		if err != nil {
			s.failed = append(s.failed, fmt.Sprintf("%s (%v)", src.what, err))
			continue
		}
		s.ok = append(s.ok, src)
		sums := map[string]map[string]float64{}
		s.sums[src.url] = sums
		// Only the primary mgmtd's view of targets and nodes counts: a
		// standby's gauges are stale. A source without mgmtd has none.
		primary := false
		if f := fams["emberfs_mgmtd_is_primary"]; f != nil {
			for _, m := range f.Metric {
				primary = primary || m.GetGauge().GetValue() == 1
			}
		}
		for name, label := range topLabel {
			f := fams[name]
			if f == nil || (strings.HasPrefix(name, "emberfs_mgmtd_") && !primary) {
				continue
			}
			if sums[name] == nil {
				sums[name] = map[string]float64{}
			}
			for _, m := range f.Metric {
				v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				key := ""
				for _, lp := range m.Label {
					if label != "" && lp.GetName() == label {
						key = lp.GetValue()
					}
				}
				sums[name][key] += v
			}
		}
	}
	return s
}

func scrape(ctx context.Context, hc *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics URL %q: %w", url, err)
	}
	rsp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot scrape %s: %w", url, err)
	}
	defer rsp.Body.Close()
	if rsp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", url, rsp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rsp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s is not Prometheus text: %w", url, err)
	}
	return fams, nil
}

// rates is the per-second increase of each label value of a counter
// family between two samples, summed over the sources scraped both times
// (a restarted process, whose counters went back, counts from zero).
func rates(prev, cur *topSample, name string) map[string]float64 {
	out := map[string]float64{}
	secs := cur.at.Sub(prev.at).Seconds()
	for url, sums := range cur.sums {
		before, ok := prev.sums[url]
		if !ok {
			continue
		}
		for k, v := range sums[name] {
			d := v - before[name][k]
			if d < 0 {
				d = v
			}
			out[k] += d / secs
		}
	}
	return out
}

func totalRate(prev, cur *topSample, name string) float64 {
	t := 0.0
	for _, r := range rates(prev, cur, name) {
		t += r
	}
	return t
}

// gauge sums a gauge family by label value over the sources of a sample.
func gauge(s *topSample, name string) map[string]float64 {
	var out map[string]float64
	for _, sums := range s.sums {
		for k, v := range sums[name] {
			if out == nil {
				out = map[string]float64{}
			}
			out[k] += v
		}
	}
	return out
}

func gaugeTotal(s *topSample, name string) float64 {
	t := 0.0
	for _, v := range gauge(s, name) {
		t += v
	}
	return t
}

func printTop(w io.Writer, prev, cur *topSample, note string) {
	el := cur.at.Sub(prev.at)
	fmt.Fprintf(w, "emberfs top  %s  (%d source(s), last %s)\n", cur.at.Format("15:04:05"), len(cur.ok), el.Round(time.Millisecond))
	whats := make([]string, len(cur.ok))
	for i, s := range cur.ok {
		whats[i] = s.what
	}
	fmt.Fprintf(w, "SOURCES  %s\n", strings.Join(whats, ", "))
	if len(cur.failed) > 0 {
		fmt.Fprintf(w, "UNREACHABLE  %s\n", strings.Join(cur.failed, "; "))
	}
	if note != "" {
		fmt.Fprintf(w, "NOTE  %s\n", note)
	}
	o := newTabOut(w)
	o.row("", "READ/s", "WRITE/s", "OPS/s", "IN FLIGHT")
	o.row("storage", bytesString(uint64(totalRate(prev, cur, "emberfs_storage_read_bytes_total"))),
		bytesString(uint64(totalRate(prev, cur, "emberfs_storage_write_bytes_total"))),
		fmt.Sprintf("%.0f", totalRate(prev, cur, "emberfs_storage_requests_total")),
		fmt.Sprintf("%.0f", gaugeTotal(cur, "emberfs_storage_requests_in_flight")))
	o.row("meta", "-", "-", fmt.Sprintf("%.0f", totalRate(prev, cur, "emberfs_meta_requests_total")),
		fmt.Sprintf("%.0f", gaugeTotal(cur, "emberfs_meta_requests_in_flight")))
	if gauge(cur, "emberfs_mount_ops_total") != nil {
		o.row("mount", bytesString(uint64(totalRate(prev, cur, "emberfs_mount_read_bytes_total"))),
			bytesString(uint64(totalRate(prev, cur, "emberfs_mount_write_bytes_total"))),
			fmt.Sprintf("%.0f", totalRate(prev, cur, "emberfs_mount_ops_total")), "-")
	}
	_ = o.flush()
	fmt.Fprintf(w, "TARGETS  %s\n", states(gauge(cur, "emberfs_mgmtd_targets")))
	fmt.Fprintf(w, "NODES    %s\n", states(gauge(cur, "emberfs_mgmtd_nodes")))
	for _, b := range []struct{ title, name string }{
		{"STORAGE OPS/s", "emberfs_storage_requests_total"},
		{"META OPS/s", "emberfs_meta_requests_total"},
		{"MOUNT OPS/s", "emberfs_mount_ops_total"},
	} {
		if line := topRates(rates(prev, cur, b.name)); line != "" {
			fmt.Fprintf(w, "%s  %s\n", b.title, line)
		}
	}
}

// states renders gauge counts by state ("serving 6  offline 1").
func states(m map[string]float64) string {
	if len(m) == 0 {
		return "- (no primary mgmtd among the sources)"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, "  ")
}

// topRates lists the busiest labels of a counter family, busiest first.
func topRates(byLabel map[string]float64) string {
	type kv struct {
		k string
		r float64
	}
	var rs []kv
	for k, r := range byLabel {
		if r > 0 {
			rs = append(rs, kv{k, r})
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].r > rs[j].r || (rs[i].r == rs[j].r && rs[i].k < rs[j].k) })
	parts := make([]string, 0, 8)
	for i, x := range rs {
		if i == 8 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", x.k, x.r))
	}
	return strings.Join(parts, "  ")
}
