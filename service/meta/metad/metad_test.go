package metad

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/meta/metaclient"
)

// Standalone (no mgmtd): the daemon serves gRPC and /metrics, new files
// take the configured root layout, and Stop closes everything.
func TestStandaloneDaemon(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen, cfg.MetricsListen, cfg.KV, cfg.Token, cfg.Mgmtd = "127.0.0.1:0", "127.0.0.1:0", "memory", "tok", nil
	cfg.RootChunkSize = 1 << 20
	ctx := context.Background()
	d, err := Start(ctx, Options{Config: cfg, Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(ctx)
	if err := d.WaitRegistered(ctx); err != nil || d.NodeID() != 0 {
		t.Fatalf("standalone registration: %v, node %d", err, d.NodeID())
	}
	c, err := metaclient.Dial(d.Addr(), "tok")
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseConn()
	r, err := c.Create(ctx, meta.Root, meta.PathAt{Path: "/f"}, meta.CreateOptions{Mode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	if r.Inode.Layout.ChunkSize != 1<<20 || r.Inode.Layout.ChainTable != 1 {
		t.Fatalf("layout %+v, want the configured root layout", r.Inode.Layout)
	}
	rsp, err := http.Get("http://" + d.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if !strings.Contains(string(body), `emberfs_meta_requests_total{code="ok",method="Create"} 1`) {
		t.Fatalf("metrics:\n%s", body)
	}
	d.Stop(ctx)
	if _, err := c.Stat(ctx, meta.Root, meta.PathAt{Path: "/f"}); err == nil {
		t.Fatal("stat succeeded after Stop")
	}
}

func TestConfigErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.toml")
	os.WriteFile(path, []byte("listen = \"x:1\"\nnode = 3\n"), 0o644)
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), `"node"`) {
		t.Fatalf("unknown key: %v", err)
	}
	os.WriteFile(path, []byte("client_ttl = \"soon\"\n"), 0o644)
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "soon") {
		t.Fatalf("bad duration: %v", err)
	}
	cfg := DefaultConfig()
	cfg.Token = "t"
	cfg.Mgmtd = []string{""}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "mgmtd") {
		t.Fatalf("empty mgmtd address: %v", err)
	}
	cfg = DefaultConfig()
	if _, err := Start(context.Background(), Options{Config: cfg}); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("start without token: %v", err)
	}
}
