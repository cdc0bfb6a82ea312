package ops

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// oneLine asserts a failed command printed exactly one line on stderr
// containing want, and nothing on stdout.
func oneLine(t *testing.T, r result, want string) {
	t.Helper()
	if r.err == nil {
		t.Fatalf("command succeeded; want an error containing %q (stdout %q)", want, r.stdout)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], want) || r.stdout != "" {
		t.Fatalf("want one stderr line containing %q, got stderr %q stdout %q", want, r.stderr, r.stdout)
	}
}

func TestCLIWithoutCluster(t *testing.T) {
	r := run(t, nil, "--version")
	if r.err != nil || !regexp.MustCompile(`^emberfs \S+\n$`).MatchString(r.stdout) {
		t.Fatalf("--version: %v %q %q", r.err, r.stdout, r.stderr)
	}
	oneLine(t, run(t, nil, "cat"), "cat: missing PATH")
	oneLine(t, run(t, nil, "cp", "x"), "cp: missing DST")
	oneLine(t, run(t, nil, "cp"), "cp: missing SRC and DST")
	oneLine(t, run(t, nil, "ls", "/"), "no cluster address")
	oneLine(t, run(t, []string{"EMBERFS_MGMTD=127.0.0.1:1"}, "ls", "/"), "no cluster token")

	// A port nobody listens on: the command gives up after the connect
	// timeout with one line naming the address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	oneLine(t, run(t, []string{"EMBERFS_TOKEN=x"}, "ls", "/", "--mgmtd", dead, "--connect-timeout", "1s"),
		"cannot reach the cluster at mgmtd "+dead+" within 1s")

	// A config file with a misspelt key is refused, naming the key.
	cfg := filepath.Join(t.TempDir(), "client.toml")
	if err := os.WriteFile(cfg, []byte("mgmtd = \"127.0.0.1:1\"\ntokn = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	oneLine(t, run(t, nil, "ls", "/", "--config", cfg), "unknown key(s) tokn")
}

func TestCLIRoundTrip(t *testing.T) {
	c := startUp(t)
	src := filepath.Join(t.TempDir(), "src")
	big := make([]byte, 9<<20+12345) // spans chunks and stripes, ends mid-block
	rand.Read(big)
	files := map[string][]byte{
		"big.bin":         big,
		"empty":           nil,
		"sub/small.txt":   []byte("small file\n"),
		"sub/deep/x.json": []byte(`{"x": 1}`),
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A directory without -r is refused before anything is copied.
	oneLine(t, run(t, c.env(), "cp", src, "emberfs:/data"), "is a directory (use -r)")

	r := run(t, c.env(), "cp", "-r", "-j", "3", "--progress", "always", src, "emberfs:/data")
	if r.err != nil {
		t.Fatalf("cp up: %v %s %s", r.err, r.stdout, r.stderr)
	}
	total := 0
	for _, d := range files {
		total += len(d)
	}
	if !strings.Contains(r.stdout, "copied 4 files, 3 dirs") || !strings.Contains(r.stderr, "100%") || !strings.Contains(r.stderr, "4/4 files") {
		t.Fatalf("cp summary/progress: stdout %q stderr %q", r.stdout, r.stderr)
	}

	if got := c.must(t, "ls", "/data"); got != "big.bin\nempty\nsub/\n" {
		t.Fatalf("ls /data = %q", got)
	}
	long := c.must(t, "ls", "-l", "emberfs:///data")
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^-rw-r--r-- .* %d .* big\.bin$`, len(big))).MatchString(long) ||
		!regexp.MustCompile(`(?m)^drwx.* sub$`).MatchString(long) {
		t.Fatalf("ls -l:\n%s", long)
	}
	if got := c.must(t, "cat", "/data/sub/small.txt", "/data/sub/deep/x.json"); got != "small file\n{\"x\": 1}" {
		t.Fatalf("cat = %q", got)
	}
	if got := c.must(t, "cat", "/data/big.bin"); !bytes.Equal([]byte(got), big) {
		t.Fatalf("cat big.bin: %d bytes, differs from the %d written", len(got), len(big))
	}
	if got := c.must(t, "du", "/data"); got != fmt.Sprintf("%d\t4 files\t3 dirs\t/data\n", total) {
		t.Fatalf("du = %q (want %d bytes)", got, total)
	}
	st := c.must(t, "stat", "/data/big.bin")
	if !strings.Contains(st, fmt.Sprintf("size: %d\n", len(big))) || !strings.Contains(st, "type: file") {
		t.Fatalf("stat:\n%s", st)
	}

	// Back to local disk: every byte and name comes back.
	back := filepath.Join(t.TempDir(), "back")
	if out := c.must(t, "cp", "-r", "emberfs:/data", back); !strings.Contains(out, "copied 4 files") {
		t.Fatalf("cp down: %q", out)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(back, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s came back as %d bytes (%v), want %d", name, len(got), err, len(want))
		}
	}
	// Several sources into an existing EmberFS directory.
	c.must(t, "mkdir", "-p", "/multi/a/b")
	c.must(t, "mkdir", "-p", "/multi/a/b") // again: no error
	c.must(t, "cp", filepath.Join(src, "empty"), filepath.Join(src, "sub", "small.txt"), "emberfs:/multi/a/b")
	if got := c.must(t, "ls", "/multi/a/b"); got != "empty\nsmall.txt\n" {
		t.Fatalf("ls /multi/a/b = %q", got)
	}
	oneLine(t, run(t, c.env(), "mkdir", "/multi"), "mkdir /multi: file exists")

	// rm: a directory needs -r; a missing path fails unless -f.
	oneLine(t, run(t, c.env(), "rm", "/data"), "rm /data: is a directory (use -r)")
	c.must(t, "rm", "/data/empty")
	c.must(t, "rm", "-r", "/data")
	oneLine(t, run(t, c.env(), "ls", "/data"), "ls /data: no such file or directory")
	oneLine(t, run(t, c.env(), "rm", "/data"), "rm /data: no such file or directory")
	c.must(t, "rm", "-f", "/data")
	if got := c.must(t, "ls"); got != "multi/\n" {
		t.Fatalf("ls / after rm = %q", got)
	}

	// The cluster from a config file; a flag beats the environment.
	cfg := filepath.Join(t.TempDir(), "client.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("mgmtd = [%q]\ntoken = %q\n", c.mgmtd, c.token)), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run(t, []string{"EMBERFS_CONFIG=" + cfg}, "ls"); r.err != nil || r.stdout != "multi/\n" {
		t.Fatalf("ls via EMBERFS_CONFIG: %v %q %q", r.err, r.stdout, r.stderr)
	}
	if r := run(t, []string{"EMBERFS_MGMTD=127.0.0.1:1", "EMBERFS_TOKEN=" + c.token}, "ls", "--mgmtd", c.mgmtd); r.err != nil || r.stdout != "multi/\n" {
		t.Fatalf("ls with --mgmtd over the environment: %v %q %q", r.err, r.stdout, r.stderr)
	}
}
