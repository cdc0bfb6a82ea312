// Package deploy runs EmberFS the way docs/deploy.md sets it up: mgmtd,
// meta and three storage services as separate processes started from the
// config files shown in that page, the chain table made with `emberfs
// admin`, and `emberfs mount` as a process. It SIGKILLs a storage process
// in the middle of a write through the mount. Needs root and /dev/fuse.
package deploy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/tests/testproc"
)

const token = "deploy-test-token"

// peerToken is the storage services' own secret, given only to them
// (EMBERFS_PEER_TOKEN, as docs/deploy.md sets it).
const peerToken = "deploy-test-peer-token"

var emberfsBin string

func TestMain(m *testing.M) { testproc.Main(m, &emberfsBin) }

// docConfigs returns the TOML blocks of docs/deploy.md, by the name in the
// `<!-- deploy-config: NAME -->` comment before each.
func docConfigs(t *testing.T) map[string]map[string]any {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	doc, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- deploy-config: (\\w+) -->\\s*```toml\\n(.*?)```")
	out := map[string]map[string]any{}
	for _, m := range re.FindAllStringSubmatch(string(doc), -1) {
		cfg := map[string]any{}
		if _, err := toml.Decode(m[2], &cfg); err != nil {
			t.Fatalf("docs/deploy.md: the %s config is not valid TOML: %v", m[1], err)
		}
		out[m[1]] = cfg
	}
	for _, name := range []string{"mgmtd", "meta", "storage"} {
		if out[name] == nil {
			t.Fatalf("docs/deploy.md has no <!-- deploy-config: %s --> TOML block", name)
		}
	}
	return out
}

// writeConfig writes the doc's config with the given keys replaced.
func writeConfig(t *testing.T, path string, base map[string]any, override map[string]any) {
	t.Helper()
	cfg := map[string]any{}
	for k, v := range base {
		cfg[k] = v
	}
	for k, v := range override {
		if _, ok := base[k]; !ok {
			t.Fatalf("%s: overriding %q, which the doc's config does not set", path, k)
		}
		cfg[k] = v
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// start runs one role (or the mount) as a process logging to dir/name.log,
// with the cluster token in its environment as docs/deploy.md sets it.
func start(t *testing.T, dir, name string, args ...string) *testproc.Proc {
	t.Helper()
	return testproc.StartEnv(t, emberfsBin, filepath.Join(dir, name+".log"), []string{"EMBERFS_TOKEN=" + token}, args...)
}

// startStorage is start for a storage service: it also gets the peer
// token, which no other role has.
func startStorage(t *testing.T, dir, name string, args ...string) *testproc.Proc {
	t.Helper()
	return testproc.StartEnv(t, emberfsBin, filepath.Join(dir, name+".log"),
		[]string{"EMBERFS_TOKEN=" + token, "EMBERFS_PEER_TOKEN=" + peerToken}, args...)
}

// emberfs runs a short command (admin, status) and returns its output.
func emberfs(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(emberfsBin, args...)
	cmd.Env = append(os.Environ(), "EMBERFS_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// servingTargets counts the targets `emberfs status` lists as serving.
var targetRow = regexp.MustCompile(`(?m)^(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+`)

func servingTargets(t *testing.T, mgmtd string) (int, string) {
	out, err := emberfs(t, "status", "--mgmtd", mgmtd)
	if err != nil {
		return 0, out
	}
	_, targets, _ := strings.Cut(out, "TARGETS")
	targets, _, _ = strings.Cut(targets, "CHAINS")
	n := 0
	for _, m := range targetRow.FindAllStringSubmatch(targets, -1) {
		if m[4] == "serving" {
			n++
		}
	}
	return n, out
}

// isMounted tells whether dir is a mount point in /proc/self/mountinfo.
func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// mountAt runs `emberfs mount` at a new directory and waits for the mount.
func mountAt(t *testing.T, dir, name, mgmtd string) (*testproc.Proc, string) {
	t.Helper()
	mnt := filepath.Join(dir, name)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	p := start(t, dir, name, "mount", mnt, "--mgmtd", mgmtd)
	// Registered after the process cleanup, so it runs first: a mount left
	// by a failed test is detached before its server is killed.
	t.Cleanup(func() {
		if isMounted(t, mnt) {
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	testutil.WaitFor(t, name+" to be mounted", func() (bool, string) {
		select {
		case <-p.Done():
			t.Fatalf("%s exited: %v\n%s", name, p.Err(), p.Output())
		default:
		}
		return isMounted(t, mnt), p.Output()
	})
	return p, mnt
}

// directSHA256 reads path with O_DIRECT (past the page cache, so the data
// comes from the cluster) and returns its sha256.
func directSHA256(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", `dd if="$1" iflag=direct bs=1M status=none | sha256sum`, "sh", path).CombinedOutput()
	if err != nil {
		t.Fatalf("reading %s: %v\n%s", path, err, out)
	}
	return strings.Fields(string(out))[0]
}

func TestDeployKillStorageDuringWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the deploy test needs root (FUSE mounts)")
	}
	dir := t.TempDir()
	docs := docConfigs(t)

	// mgmtd, with short heartbeats so a dead storage node is noticed fast.
	writeConfig(t, filepath.Join(dir, "mgmtd.toml"), docs["mgmtd"], map[string]any{
		"listen": "127.0.0.1:0", "metrics_listen": "", "kv": "badger:" + filepath.Join(dir, "mgmtd"),
		"heartbeat_interval": "100ms", "node_failure_timeout": "1s",
	})
	mg := start(t, dir, "mgmtd", "mgmtd", "--config", filepath.Join(dir, "mgmtd.toml"))
	mgmtd := mg.Wait(t, regexp.MustCompile(`listening on (\S+)`))

	// Three storage processes, two targets each, as in the doc.
	storage := map[int]*testproc.Proc{}
	storageCfg := func(n int) string { return filepath.Join(dir, fmt.Sprintf("storage%d.toml", n)) }
	for n := 1; n <= 3; n++ {
		writeConfig(t, storageCfg(n), docs["storage"], map[string]any{
			"node_id": n,
			"targets": []string{filepath.Join(dir, fmt.Sprintf("store%d", n), "disk0"), filepath.Join(dir, fmt.Sprintf("store%d", n), "disk1")},
			"mgmtd":   []string{mgmtd}, "listen": "127.0.0.1:0", "data_listen": "127.0.0.1:0", "metrics_listen": "",
			// The page cache survives SIGKILL of a process; fsync only slows the test.
			"no_sync": true,
		})
		storage[n] = startStorage(t, dir, fmt.Sprintf("storage%d", n), "storage", "--config", storageCfg(n))
	}
	testutil.WaitFor(t, "6 storage targets to register", func() (bool, string) {
		out, err := emberfs(t, "admin", "--mgmtd", mgmtd, "list-targets")
		return err == nil && strings.Count(out, "online") == 6, out
	})
	if out, err := emberfs(t, "admin", "--mgmtd", mgmtd, "create-chain-table", "--table", "1", "--replicas", "3"); err != nil {
		t.Fatalf("create-chain-table: %v\n%s", err, out)
	}
	testutil.WaitFor(t, "every target to serve", func() (bool, string) { n, out := servingTargets(t, mgmtd); return n == 6, out })

	writeConfig(t, filepath.Join(dir, "meta.toml"), docs["meta"], map[string]any{
		"listen": "127.0.0.1:0", "metrics_listen": "", "kv": "badger:" + filepath.Join(dir, "meta"), "mgmtd": []string{mgmtd},
	})
	mt := start(t, dir, "meta", "meta", "--config", filepath.Join(dir, "meta.toml"))
	mt.Wait(t, regexp.MustCompile(`meta listening on (\S+)`))

	mount, mnt := mountAt(t, dir, "mnt", mgmtd)

	// 64 MiB of random data with a known sha256.
	const size = 64 << 20
	src := make([]byte, size)
	rand.Read(src)
	sum := sha256.Sum256(src)
	want := hex.EncodeToString(sum[:])

	// dd copies from a pipe, so the kill lands partway for sure: a quarter
	// of the data, SIGKILL of storage 2, then the rest.
	target := filepath.Join(mnt, "big")
	dd := exec.Command("dd", "of="+target, "bs=1M", "iflag=fullblock", "status=none")
	stdin, err := dd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var ddOut bytes.Buffer
	dd.Stdout, dd.Stderr = &ddOut, &ddOut
	if err := dd.Start(); err != nil {
		t.Fatal(err)
	}
	ddDone := make(chan error, 1)
	go func() { ddDone <- dd.Wait() }()
	t.Cleanup(func() { _ = dd.Process.Kill() })
	if _, err := stdin.Write(src[:size/4]); err != nil {
		t.Fatalf("feeding dd: %v (%s)", err, ddOut.String())
	}
	storage[2].Kill()
	if _, err := stdin.Write(src[size/4:]); err != nil {
		t.Fatalf("feeding dd after the kill: %v (%s)", err, ddOut.String())
	}
	stdin.Close()
	select {
	case err := <-ddDone:
		if err != nil {
			t.Fatalf("dd into the mount with a storage node killed: %v\n%s", err, ddOut.String())
		}
	case <-time.After(testproc.Eventually):
		t.Fatal("dd did not finish")
	}
	if got := directSHA256(t, target); got != want {
		t.Fatalf("sha256 after the write: %s, want %s", got, want)
	}

	// Storage 2 is still down: a fresh mount (empty client cache) reads the
	// whole file from the two remaining replicas.
	if n, out := servingTargets(t, mgmtd); n != 4 {
		t.Fatalf("with storage 2 dead, %d targets serve, want 4:\n%s", n, out)
	}
	reader, mnt2 := mountAt(t, dir, "mnt2", mgmtd)
	if got := directSHA256(t, filepath.Join(mnt2, "big")); got != want {
		t.Fatalf("sha256 read with a replica down: %s, want %s", got, want)
	}

	// Restart storage 2 on the same config and directories: it catches up
	// and serves again; the file reads back the same.
	storage[2] = startStorage(t, dir, "storage2.restarted", "storage", "--config", storageCfg(2))
	testutil.WaitFor(t, "storage 2 to serve again", func() (bool, string) { n, out := servingTargets(t, mgmtd); return n == 6, out })
	if got := directSHA256(t, filepath.Join(mnt2, "big")); got != want {
		t.Fatalf("sha256 after the restart: %s, want %s", got, want)
	}

	// SIGTERM unmounts cleanly: exit status 0, no mount left behind.
	for _, m := range []struct {
		p   *testproc.Proc
		dir string
	}{{reader, mnt2}, {mount, mnt}} {
		if err := m.p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-m.p.Done():
		case <-time.After(testproc.Eventually):
			t.Fatalf("%s did not exit after SIGTERM", m.p.Cmd.Args[1])
		}
		if m.p.Err() != nil {
			t.Fatalf("%s exited with %v after SIGTERM:\n%s", m.p.Cmd.Args[1], m.p.Err(), m.p.Output())
		}
		if isMounted(t, m.dir) {
			t.Fatalf("%s is still a mount point after %s exited", m.dir, m.p.Cmd.Args[1])
		}
	}
}
