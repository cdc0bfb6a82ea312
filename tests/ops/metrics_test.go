package ops

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/tests/testproc"
)

// scrape reads a /metrics URL into families.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	rsp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	body, _ := io.ReadAll(rsp.Body)
	if rsp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s %s", url, rsp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s is not Prometheus text: %v", url, err)
	}
	return fams
}

// sum adds the values of the series of name whose labels include want.
func sum(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, int) {
	f := fams[name]
	if f == nil {
		return 0, 0
	}
	total, n := 0.0, 0
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		n++
	}
	return total, n
}

// seriesNames is every series name a scrape exports (histograms as
// _bucket, _sum and _count, as PromQL sees them).
func seriesNames(fams map[string]*dto.MetricFamily) map[string]bool {
	out := map[string]bool{}
	for name, f := range fams {
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				out[name+s] = true
			}
			continue
		}
		out[name] = true
	}
	return out
}

// startMounted runs `emberfs up --mount` and unmounts it with SIGTERM at
// the end (a SIGKILL would leave the mount point dead).
func startMounted(t *testing.T) (*upCluster, string) {
	mnt := filepath.Join(t.TempDir(), "mnt")
	c := startUp(t, "--mount", mnt)
	t.Cleanup(func() { c.proc.Signal(syscall.SIGTERM) })
	return c, mnt
}

func TestMetricsScrapeAndDashboard(t *testing.T) {
	c, mnt := startMounted(t)
	url := c.info["metrics"]
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("info file metrics URL %q", url)
	}
	// Traffic through the mount and through the mount-less CLI.
	data := bytes.Repeat([]byte("emberfs metrics "), 1<<16) // 1 MiB
	if err := os.WriteFile(filepath.Join(mnt, "through-mount.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "through-mount.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back through the mount: %d bytes, %v", len(got), err)
	}
	c.must(t, "cat", "/through-mount.bin")

	fams := scrape(t, url)
	check := func(name string, labels map[string]string, atLeast float64) {
		t.Helper()
		v, n := sum(fams, name, labels)
		if n == 0 || v < atLeast {
			t.Errorf("%s%v = %v over %d series, want >= %v", name, labels, v, n, atLeast)
		}
	}
	check("emberfs_mount_write_bytes_total", map[string]string{"role": "mount"}, float64(len(data)))
	check("emberfs_mount_read_bytes_total", map[string]string{"role": "mount"}, 1)
	check("emberfs_mount_ops_total", map[string]string{"op": "write", "result": "ok"}, 1)
	check("emberfs_mount_op_seconds", map[string]string{"op": "open"}, 1)
	check("emberfs_storage_write_bytes_total", map[string]string{"role": "storage", "node": "1"}, float64(len(data)))
	check("emberfs_storage_read_bytes_total", map[string]string{"role": "storage"}, float64(len(data))) // cat read it all
	check("emberfs_storage_requests_total", map[string]string{"op": "write", "code": "ok"}, 1)
	check("emberfs_storage_request_seconds", map[string]string{"op": "read"}, 1)
	check("emberfs_storage_target_chunks", map[string]string{"role": "storage"}, 1)
	check("emberfs_storage_target_uptodate", nil, 2)
	check("emberfs_meta_requests_total", map[string]string{"role": "meta", "code": "ok"}, 1)
	check("emberfs_meta_request_seconds", map[string]string{"role": "meta"}, 1)
	check("emberfs_mgmtd_targets", map[string]string{"role": "mgmtd", "state": "serving"}, 2)
	check("emberfs_mgmtd_is_primary", nil, 1)
	if v, _ := sum(fams, "emberfs_mgmtd_targets", map[string]string{"state": "serving"}); v != 2 {
		t.Errorf("serving targets = %v, want 2", v)
	}
	// One process, so one copy of the runtime series.
	if _, n := sum(fams, "go_goroutines", nil); n != 1 {
		t.Errorf("go_goroutines has %d series, want 1", n)
	}

	// Every metric the dashboard queries is exported by this cluster.
	b, err := os.ReadFile("../../deploy/grafana/emberfs-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	have := seriesNames(fams)
	nameRE := regexp.MustCompile(`\b(emberfs_[a-z0-9_]+)`)
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range nameRE.FindAllStringSubmatch(tg.Expr, -1) {
				queried[m[1]] = true
			}
		}
	}
	var missing []string
	for n := range queried {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(queried) < 20 || len(missing) > 0 {
		t.Fatalf("dashboard queries %d metrics; not exported: %v", len(queried), missing)
	}
}

// topFrameRE reads the storage row of a top frame: read/s, write/s, ops/s.
var topStorageRE = regexp.MustCompile(`(?m)^storage\s+(\S+ \S?i?B)\s+(\S+ \S?i?B)\s+(\d+)`)

func TestTopMovesUnderLoad(t *testing.T) {
	c := startUp(t)
	url := c.info["metrics"]

	// Idle: two refreshes, nothing written. The /metrics of emberfs up is
	// found through mgmtd (the cluster comes from the environment).
	idle := c.must(t, "top", "--count", "2", "--interval", "200ms")
	if n := strings.Count(idle, "emberfs top "); n != 2 {
		t.Fatalf("want 2 frames, got %d:\n%s", n, idle)
	}
	if n := strings.Count(idle, "SOURCES  mgmtd\n"); n != 2 {
		t.Fatalf("up's one /metrics should be found through mgmtd as the only source:\n%s", idle)
	}
	for _, m := range topStorageRE.FindAllStringSubmatch(idle, -1) {
		if m[2] != "0 B" {
			t.Fatalf("idle cluster shows storage writes %q:\n%s", m[2], idle)
		}
	}
	if !strings.Contains(idle, "TARGETS  serving 2") {
		t.Fatalf("target states:\n%s", idle)
	}

	// Under load: a writer keeps copying files in while top runs; every
	// frame covers an interval with writes in it.
	src := filepath.Join(t.TempDir(), "f.bin")
	if err := os.WriteFile(src, bytes.Repeat([]byte{7}, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			if r := run(t, c.env(), "cp", src, fmt.Sprintf("emberfs:/load%d", i)); r.err != nil {
				t.Errorf("cp: %v %s", r.err, r.stderr)
				return
			}
			if i == 0 {
				close(started)
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	<-started
	// --metrics alone (no cluster configured) scrapes just that URL.
	r := run(t, nil, "top", "--metrics", url, "--count", "3", "--interval", "300ms")
	if r.err != nil {
		t.Fatalf("top --metrics: %v %s", r.err, r.stderr)
	}
	busy := r.stdout
	close(stop)
	wg.Wait()
	frames := topStorageRE.FindAllStringSubmatch(busy, -1)
	if len(frames) != 3 {
		t.Fatalf("want 3 storage rows:\n%s", busy)
	}
	for _, m := range frames {
		ops, _ := strconv.Atoi(m[3])
		if m[2] == "0 B" || ops == 0 {
			t.Fatalf("top did not see the writes (write/s %q, ops/s %s):\n%s", m[2], m[3], busy)
		}
	}
	if !strings.Contains(busy, "META OPS/s") || !strings.Contains(busy, "Create") {
		t.Fatalf("meta breakdown missing:\n%s", busy)
	}
	oneLine(t, run(t, nil, "top"), "no --metrics URL")
}

// TestTopFindsRolesThroughMgmtd runs mgmtd, meta and two storage services
// as separate processes, each with its own /metrics: `emberfs top` given
// only mgmtd finds all four, and goes on (naming it) when one is killed.
func TestTopFindsRolesThroughMgmtd(t *testing.T) {
	dir := t.TempDir()
	const token = "top-discovery-token"
	// A long failure timeout keeps the killed storage node registered as
	// active, so top must meet a source that does not answer.
	mcfg := testproc.WriteFile(t, filepath.Join(dir, "mgmtd.toml"), `listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
kv = "memory"
scan_interval = "20ms"
heartbeat_interval = "100ms"
node_failure_timeout = "10m"
`)
	mgmtd := testproc.Start(t, emberfsBin, filepath.Join(dir, "mgmtd.log"), "mgmtd", "--config", mcfg, "--token", token).Wait(t, testproc.ListeningRE)
	var storage []*testproc.Proc
	for id := 1; id <= 2; id++ {
		cfg := testproc.WriteFile(t, filepath.Join(dir, fmt.Sprintf("storage%d.toml", id)), testproc.StorageConfig(dir, id, mgmtd, token))
		p := testproc.Start(t, emberfsBin, filepath.Join(dir, fmt.Sprintf("storage%d.log", id)), "storage", "--config", cfg)
		p.Wait(t, testproc.MetricsRE)
		storage = append(storage, p)
	}
	metaCfg := testproc.WriteFile(t, filepath.Join(dir, "meta.toml"), fmt.Sprintf(`listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
kv = %q
mgmtd = [%q]
token = %q
node_id = 7
`, "badger:"+filepath.Join(dir, "meta-kv"), mgmtd, token))
	testproc.Start(t, emberfsBin, filepath.Join(dir, "meta.log"), "meta", "--config", metaCfg).Wait(t, testproc.ListeningRE)

	env := []string{"EMBERFS_MGMTD=" + mgmtd, "EMBERFS_TOKEN=" + token}
	want := []string{"mgmtd", "storage 1", "storage 2", "meta 7"}
	var frame string
	// Registration is asynchronous: wait until every role is listed.
	testutil.WaitUntil(t, "top lists every role", func() bool {
		r := run(t, env, "top", "--count", "1", "--interval", "100ms")
		if r.err != nil {
			t.Fatalf("top: %v %s", r.err, r.stderr)
		}
		frame = r.stdout
		for _, w := range want {
			if !regexp.MustCompile(`(?m)^SOURCES .*\b` + w + `\b`).MatchString(frame) {
				return false
			}
		}
		return true
	})
	if !strings.Contains(frame, "(4 source(s)") || strings.Contains(frame, "UNREACHABLE") {
		t.Fatalf("want 4 sources scraped:\n%s", frame)
	}
	// The primary mgmtd's own metrics are among them: the node table.
	if !strings.Contains(frame, "NODES    active 3") {
		t.Fatalf("node states from mgmtd's /metrics:\n%s", frame)
	}

	storage[1].Kill()
	<-storage[1].Done()
	r := run(t, env, "top", "--count", "1", "--interval", "100ms")
	if r.err != nil {
		t.Fatalf("top after a storage kill: %v %s", r.err, r.stderr)
	}
	if !regexp.MustCompile(`(?m)^UNREACHABLE  storage 2 \(cannot scrape http://127\.0\.0\.1:\d+/metrics`).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, "(3 source(s)") {
		t.Fatalf("the killed storage service should be named unreachable and the 3 others scraped:\n%s", r.stdout)
	}
}
