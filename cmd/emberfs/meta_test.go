package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/metaclient"
	"github.com/emberfs/emberfs/service/meta/metad"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/routing"
)

func TestMetaPrintConfig(t *testing.T) {
	out, err := runCLI(t, "meta", "--print-config", "--listen", "0.0.0.0:9201", "--kv", "memory", "--mgmtd", "a:1, b:2")
	if err != nil {
		t.Fatal(err)
	}
	var cfg metad.Config
	if _, err := toml.Decode(out, &cfg); err != nil {
		t.Fatalf("printed config is not TOML: %v\n%s", err, out)
	}
	if cfg.Listen != "0.0.0.0:9201" || cfg.KV != "memory" || len(cfg.Mgmtd) != 2 || cfg.Mgmtd[1] != "b:2" ||
		cfg.RootChainTable != 1 || cfg.RootChunkSize != 4<<20 || cfg.ClientTTL.Duration != time.Minute || cfg.GCBatch != 128 {
		t.Fatalf("printed config %+v", cfg)
	}
}

func TestMetaConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("listen = \"127.0.0.1:0\"\ngc_intervall = \"1s\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "meta", "--config", bad); err == nil || !strings.Contains(err.Error(), "gc_intervall") {
		t.Fatalf("misspelt key: %v", err)
	}
	zero := filepath.Join(dir, "zero.toml")
	if err := os.WriteFile(zero, []byte("root_chunk_size = 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "meta", "--config", zero, "--token", "x"); err == nil || !strings.Contains(err.Error(), "root_chunk_size") {
		t.Fatalf("zero chunk size: %v", err)
	}
	t.Setenv("EMBERFS_TOKEN", "")
	if _, err := runCLI(t, "meta", "--kv", "memory", "--listen", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("missing token: %v", err)
	}
	if _, err := runCLI(t, "meta", "--kv", "nosuch:x", "--token", "x", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--mgmtd", ""); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Fatalf("bad KV spec: %v", err)
	}
}

// `emberfs meta` against a live mgmtd: it registers as a meta node, a
// client finds it through routing, new files are spread over the chains of
// the routing's chain table (and refused while the table does not exist),
// /metrics counts the calls, and cancelling the command stops it cleanly.
func TestMetaCommandServesThroughRouting(t *testing.T) {
	mgmtdAddr, _ := startMgmtdCmd(t)
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCmd()
	out := &syncBuf{}
	root.SetOut(out)
	root.SetErr(out)
	root.SetArgs([]string{"meta", "--kv", "memory", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--mgmtd", mgmtdAddr, "--token", cliToken})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	re := regexp.MustCompile(`meta listening on (\S+) kv memory metrics (\S+)`)
	var metaAddr, metricsURL string
	testutil.WaitFor(t, "the meta command to start", func() (bool, string) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			metaAddr, metricsURL = m[1], m[2]
		}
		return metaAddr != "", out.String()
	})

	conn, err := mgmtdclient.Dial([]string{mgmtdAddr}, cliToken)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cache := mgmtdclient.NewCache(conn)
	cache.Start()
	defer cache.Close()
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if _, err := cache.WaitFor(wctx, func(r *routing.Routing) bool { return len(r.ActiveNodes(mgmtdpb.NodeRole_ROLE_META)) == 1 }); err != nil {
		t.Fatalf("meta node never active in routing: %v", err)
	}
	fc, err := metaclient.NewFailoverClient(metaclient.FailoverConfig{Addrs: metaclient.RoutingMetaAddrs(cache), Token: cliToken})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.CloseConn()
	_, err = fc.Create(wctx, meta.Root, meta.PathAt{Path: "/early"}, meta.CreateOptions{Mode: 0o644})
	if errcode.ErrnoOf(err) != syscall.EINVAL || !strings.Contains(err.Error(), "chain table 1") {
		t.Fatalf("create before chain table 1 exists: %v, want EINVAL naming the table", err)
	}
	if fc.Current() != metaAddr {
		t.Fatalf("client used %q, want the registered %q", fc.Current(), metaAddr)
	}

	for n := uint32(11); n <= 12; n++ {
		a, err := mgmtdclient.Start(mgmtdclient.Options{
			Conn: conn, Role: mgmtdpb.NodeRole_ROLE_STORAGE, NodeID: n,
			Address: fmt.Sprintf("127.0.0.1:%d", 22000+n), DataAddress: fmt.Sprintf("127.0.0.1:%d", 32000+n),
			Targets: func() []*mgmtdpb.TargetReport {
				return []*mgmtdpb.TargetReport{{TargetId: uint64(n*100 + 1), LocalState: mgmtdpb.LocalState_LOCAL_UPTODATE}}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Stop()
		if err := a.WaitRegistered(wctx); err != nil {
			t.Fatal(err)
		}
	}
	if o, err := runCLI(t, "admin", "create-chain-table", "--replicas", "1", "--mgmtd", mgmtdAddr, "--token", cliToken); err != nil {
		t.Fatalf("create-chain-table: %v\n%s", err, o)
	}
	begins := map[uint32]int{}
	for i := range 4 {
		r, err := fc.Create(wctx, meta.Root, meta.PathAt{Path: fmt.Sprintf("/f%d", i)}, meta.CreateOptions{Mode: 0o644})
		if err != nil {
			t.Fatalf("create with chain table 1 in routing: %v", err)
		}
		if r.Inode.Layout.ChainTable != 1 || r.Inode.Layout.ChainBegin > 1 {
			t.Fatalf("layout %+v, want chain table 1 with chain 0 or 1", r.Inode.Layout)
		}
		begins[r.Inode.Layout.ChainBegin]++
	}
	if begins[0] != 2 || begins[1] != 2 {
		t.Fatalf("four files over two chains went %v, want round-robin", begins)
	}

	rsp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	for _, want := range []string{`emberfs_meta_requests_total{code="ok",method="Create"} 4`,
		`emberfs_meta_requests_total{code="invalid argument",method="Create"} 1`, "emberfs_meta_mgmtd_lease_valid 1", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}

	cancel()
	stopped = true
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("meta command ended with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("meta command did not stop after cancel")
	}
	if !strings.Contains(out.String(), "meta stopped") {
		t.Fatalf("no clean stop logged:\n%s", out.String())
	}
}
