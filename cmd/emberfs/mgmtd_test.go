package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/mgmtd"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

const cliToken = "cli-test-token"

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runCLI runs one emberfs command line and returns its output.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestMgmtdPrintConfig(t *testing.T) {
	out, err := runCLI(t, "mgmtd", "--print-config", "--listen", "0.0.0.0:9999", "--kv", "memory")
	if err != nil {
		t.Fatal(err)
	}
	var cfg mgmtd.Config
	if _, err := toml.Decode(out, &cfg); err != nil {
		t.Fatalf("printed config is not TOML: %v\n%s", err, out)
	}
	if cfg.Listen != "0.0.0.0:9999" || cfg.KV != "memory" || cfg.HeartbeatInterval.Duration != 500*time.Millisecond ||
		cfg.NodeFailureTimeout.Duration != 2*time.Second {
		t.Fatalf("printed config %+v", cfg)
	}
}

func TestMgmtdConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("listen = \"127.0.0.1:0\"\nheartbeat_intervall = \"1s\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "mgmtd", "--config", bad); err == nil || !strings.Contains(err.Error(), "heartbeat_intervall") {
		t.Fatalf("misspelt key: %v", err)
	}
	slow := filepath.Join(dir, "slow.toml")
	if err := os.WriteFile(slow, []byte("heartbeat_interval = \"2s\"\nnode_failure_timeout = \"3s\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "mgmtd", "--config", slow, "--token", "x"); err == nil || !strings.Contains(err.Error(), "twice the heartbeat") {
		t.Fatalf("failure timeout < 2 heartbeats: %v", err)
	}
	t.Setenv("EMBERFS_TOKEN", "")
	if _, err := runCLI(t, "mgmtd", "--kv", "memory", "--listen", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("missing token: %v", err)
	}
}

// startMgmtdCmd runs `emberfs mgmtd` in-process and returns its address
// and metrics URL.
func startMgmtdCmd(t *testing.T) (addr, metricsURL string) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mgmtd.toml")
	cfg := "kv = \"memory\"\nheartbeat_interval = \"50ms\"\nnode_failure_timeout = \"1s\"\nprimary_lease = \"1s\"\nlog_level = \"warn\"\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCmd()
	out := &syncBuf{}
	root.SetOut(out)
	root.SetErr(out)
	root.SetArgs([]string{"mgmtd", "--config", cfgPath, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--token", cliToken})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mgmtd command ended with %v", err)
		}
	})
	re := regexp.MustCompile(`listening on (\S+) kv memory metrics (\S+)`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1], m[2]
		}
		select {
		case err := <-done:
			t.Fatalf("mgmtd command exited: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mgmtd command never started:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStatusAndAdminAgainstLiveMgmtd(t *testing.T) {
	addr, metricsURL := startMgmtdCmd(t)
	conn, err := mgmtdclient.Dial([]string{addr}, cliToken)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for n := uint32(1); n <= 3; n++ {
		a, err := mgmtdclient.Start(mgmtdclient.Options{
			Conn: conn, Role: mgmtdpb.NodeRole_ROLE_STORAGE, NodeID: n,
			Address: fmt.Sprintf("127.0.0.1:%d", 21000+n), DataAddress: fmt.Sprintf("127.0.0.1:%d", 31000+n),
			Hostname: fmt.Sprintf("store%d", n),
			Targets: func() []*mgmtdpb.TargetReport {
				return []*mgmtdpb.TargetReport{{TargetId: uint64(n*100 + 1), LocalState: mgmtdpb.LocalState_LOCAL_UPTODATE, FreeBytes: 3 << 30, CapacityBytes: 4 << 30}}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err = a.WaitRegistered(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	cli := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, append(args, "--mgmtd", addr, "--token", cliToken)...)
		if err != nil {
			t.Fatalf("emberfs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	out := cli("admin", "create-chain-table", "--replicas", "3")
	if !strings.Contains(out, "created chain table 1 with 1 chains of 3 replicas") {
		t.Fatalf("create-chain-table output:\n%s", out)
	}

	// Chains start serving; wait for the first scan to confirm them.
	var status string
	testutil.WaitFor(t, "three serving targets in status", func() (bool, string) {
		status = cli("status")
		return strings.Count(status, "(serving)") == 3, status
	})
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^NODES$`),
		regexp.MustCompile(`(?m)^ID\s+ROLE\s+STATUS\s+ADDRESS`),
		regexp.MustCompile(`(?m)^1\s+storage\s+active\s+127\.0\.0\.1:21001\s+127\.0\.0\.1:31001\s+store1\s+101\s+\S+ ago$`),
		regexp.MustCompile(`(?m)^TARGETS$`),
		regexp.MustCompile(`(?m)^201\s+2\s+1\s+serving\s+up-to-date\s+3\.0 GiB\s+4\.0 GiB`),
		regexp.MustCompile(`(?m)^CHAINS$`),
		regexp.MustCompile(`(?m)^1\s+1\s+\d01\(serving\) \d01\(serving\) \d01\(serving\)$`),
		regexp.MustCompile(`(?m)^1\s+1\s+3\s+1$`), // the chain table
	} {
		if !want.MatchString(status) {
			t.Fatalf("status output lacks %s:\n%s", want, status)
		}
	}

	out = cli("admin", "offline-target", "201")
	if !strings.Contains(out, "target 201 marked offline") {
		t.Fatalf("offline-target: %s", out)
	}
	testutil.WaitFor(t, "target 201 offline in list-chains", func() (bool, string) {
		out = cli("admin", "list-chains")
		return strings.Contains(out, "201(offline)"), out
	})
	if !regexp.MustCompile(`(?m)^1\s+2\s+\d01\(serving\) \d01\(serving\) 201\(offline\)$`).MatchString(out) {
		t.Fatalf("list-chains after offline-target:\n%s", out)
	}
	if out = cli("admin", "list-targets"); !strings.Contains(out, "admin offline") {
		t.Fatalf("list-targets:\n%s", out)
	}
	if out = cli("admin", "disable-node", "3"); !strings.Contains(out, "node 3 is disabled") {
		t.Fatalf("disable-node: %s", out)
	}
	if out = cli("admin", "enable-node", "3"); !strings.Contains(out, "node 3 is active") {
		t.Fatalf("enable-node: %s", out)
	}
	if out = cli("admin", "list-nodes"); strings.Count(out, "storage") != 3 {
		t.Fatalf("list-nodes:\n%s", out)
	}
	if out = cli("admin", "list-tables"); !regexp.MustCompile(`(?m)^1\s+1\s+3\s+1$`).MatchString(out) {
		t.Fatalf("list-tables:\n%s", out)
	}
	if out = cli("admin", "set-config", "node_failure_timeout_ms=1500", "meta.x=y"); !strings.Contains(out, "node_failure_timeout_ms = 1500") {
		t.Fatalf("set-config:\n%s", out)
	}
	if out = cli("admin", "get-config"); !strings.Contains(out, `meta.x = "y"`) || !strings.Contains(out, "heartbeat_interval_ms = 50") {
		t.Fatalf("get-config:\n%s", out)
	}

	// Clear errors.
	if out, err := runCLI(t, "admin", "set-config", "bogus=1", "--mgmtd", addr, "--token", cliToken); err == nil || !strings.Contains(err.Error(), `unknown key "bogus"`) {
		t.Fatalf("bad set-config: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "status", "--mgmtd", addr, "--token", "wrong"); err == nil || !strings.Contains(err.Error(), "wrong cluster token") {
		t.Fatalf("status with a wrong token: %v", err)
	}
	if _, err := runCLI(t, "admin", "disable-node", "x", "--mgmtd", addr, "--token", cliToken); err == nil || !strings.Contains(err.Error(), `"x" is not a node id`) {
		t.Fatalf("bad node id: %v", err)
	}
	t.Setenv("EMBERFS_MGMTD", "")
	t.Setenv("EMBERFS_CONFIG", "")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no client config file either
	if _, err := runCLI(t, "status", "--token", cliToken, "--mgmtd", ""); err == nil || !strings.Contains(err.Error(), "no cluster address") {
		t.Fatalf("no address: %v", err)
	}

	rsp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if !strings.Contains(string(body), "emberfs_mgmtd_is_primary 1") {
		t.Fatalf("metrics:\n%.2000s", body)
	}
}
