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
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live view of cluster throughput, ops/s and target states (from the roles' /metrics)",
		Long: `Scrapes every /metrics URL given (mgmtd, meta, storage services, mounts,
or the single URL of 'emberfs up') each --interval and shows rates over the
last interval: bytes read and written by storage (replica traffic
included), requests per second by role and operation, requests in flight,
and target and node states from the primary mgmtd. On a terminal the view
redraws in place until Ctrl-C; --count N stops after N refreshes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list := splitAddrs(urls)
			if len(list) == 0 {
				return errors.New("top: no /metrics URL: pass --metrics http://host:port/metrics[,...] or set EMBERFS_METRICS (emberfs up prints its URL)")
			}
			if interval <= 0 {
				return fmt.Errorf("top: --interval %v must be positive", interval)
			}
			out := cmd.OutOrStdout()
			redraw := count != 1 && isTerminal(os.Stdout) && out == io.Writer(os.Stdout)
			return runTop(cmd.Context(), out, list, interval, count, redraw)
		},
	}
	f := cmd.Flags()
	f.StringVar(&urls, "metrics", os.Getenv("EMBERFS_METRICS"), "comma-separated /metrics URLs of the roles (default $EMBERFS_METRICS)")
	f.DurationVar(&interval, "interval", time.Second, "time between refreshes")
	f.IntVarP(&count, "count", "n", 0, "stop after this many refreshes (0: until Ctrl-C)")
	return cmd
}

func runTop(ctx context.Context, w io.Writer, urls []string, interval time.Duration, count int, redraw bool) error {
	hc := &http.Client{Timeout: max(interval, 2*time.Second)}
	prev, err := scrapeAll(ctx, hc, urls)
	if err != nil {
		return err
	}
	for i := 0; count == 0 || i < count; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
		cur, err := scrapeAll(ctx, hc, urls)
		if err != nil {
			return err
		}
		if redraw {
			fmt.Fprint(w, "\033[H\033[2J")
		} else if i > 0 {
			fmt.Fprintln(w)
		}
		printTop(w, prev, cur, len(urls))
		prev = cur
	}
	return nil
}

// topSample is one scrape of every URL, reduced to sums by name and label.
type topSample struct {
	at time.Time
	// sums[name][labelValue] sums series of that family whose label
	// topLabel[name] has that value ("" for the total).
	sums map[string]map[string]float64
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

func scrapeAll(ctx context.Context, hc *http.Client, urls []string) (*topSample, error) {
	s := &topSample{at: time.Now(), sums: map[string]map[string]float64{}}
	for _, u := range urls {
		fams, err := scrape(ctx, hc, u)
		if err != nil {
			return nil, err
		}
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
			if s.sums[name] == nil {
				s.sums[name] = map[string]float64{}
			}
			for _, m := range f.Metric {
				v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				key := ""
				for _, lp := range m.Label {
					if label != "" && lp.GetName() == label {
						key = lp.GetValue()
					}
				}
				s.sums[name][key] += v
			}
		}
	}
	return s, nil
}

func scrape(ctx context.Context, hc *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("top: metrics URL %q: %w", url, err)
	}
	rsp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("top: cannot scrape %s: %w", url, err)
	}
	defer rsp.Body.Close()
	if rsp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("top: %s answered %s", url, rsp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rsp.Body)
	if err != nil {
		return nil, fmt.Errorf("top: %s is not Prometheus text: %w", url, err)
	}
	return fams, nil
}

// rate is the per-second increase of a counter between two samples (a
// restarted process, whose counters went back, counts from zero).
func rate(prev, cur *topSample, name, key string) float64 {
	d := cur.sums[name][key] - prev.sums[name][key]
	if d < 0 {
		d = cur.sums[name][key]
	}
	return d / cur.at.Sub(prev.at).Seconds()
}

func total(s *topSample, name string) float64 {
	t := 0.0
	for _, v := range s.sums[name] {
		t += v
	}
	return t
}

func totalRate(prev, cur *topSample, name string) float64 {
	d := total(cur, name) - total(prev, name)
	if d < 0 {
		d = total(cur, name)
	}
	return d / cur.at.Sub(prev.at).Seconds()
}

func printTop(w io.Writer, prev, cur *topSample, sources int) {
	el := cur.at.Sub(prev.at)
	fmt.Fprintf(w, "emberfs top  %s  (%d source(s), last %s)\n", cur.at.Format("15:04:05"), sources, el.Round(time.Millisecond))
	o := newTabOut(w)
	o.row("", "READ/s", "WRITE/s", "OPS/s", "IN FLIGHT")
	o.row("storage", bytesString(uint64(rate(prev, cur, "emberfs_storage_read_bytes_total", ""))),
		bytesString(uint64(rate(prev, cur, "emberfs_storage_write_bytes_total", ""))),
		fmt.Sprintf("%.0f", totalRate(prev, cur, "emberfs_storage_requests_total")),
		fmt.Sprintf("%.0f", total(cur, "emberfs_storage_requests_in_flight")))
	o.row("meta", "-", "-", fmt.Sprintf("%.0f", totalRate(prev, cur, "emberfs_meta_requests_total")),
		fmt.Sprintf("%.0f", total(cur, "emberfs_meta_requests_in_flight")))
	if _, ok := cur.sums["emberfs_mount_ops_total"]; ok {
		o.row("mount", bytesString(uint64(rate(prev, cur, "emberfs_mount_read_bytes_total", ""))),
			bytesString(uint64(rate(prev, cur, "emberfs_mount_write_bytes_total", ""))),
			fmt.Sprintf("%.0f", totalRate(prev, cur, "emberfs_mount_ops_total")), "-")
	}
	_ = o.flush()
	fmt.Fprintf(w, "TARGETS  %s\n", states(cur.sums["emberfs_mgmtd_targets"]))
	fmt.Fprintf(w, "NODES    %s\n", states(cur.sums["emberfs_mgmtd_nodes"]))
	for _, b := range []struct{ title, name string }{
		{"STORAGE OPS/s", "emberfs_storage_requests_total"},
		{"META OPS/s", "emberfs_meta_requests_total"},
		{"MOUNT OPS/s", "emberfs_mount_ops_total"},
	} {
		if line := topRates(prev, cur, b.name); line != "" {
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
func topRates(prev, cur *topSample, name string) string {
	type kv struct {
		k string
		r float64
	}
	var rs []kv
	for k := range cur.sums[name] {
		if r := rate(prev, cur, name, k); r > 0 {
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
