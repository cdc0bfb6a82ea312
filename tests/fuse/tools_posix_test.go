package fusetest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emberfs/emberfs/fuse"
)

// needTool fails (never skips) when a tool the test drives is missing:
// scripts/install-deps.sh installs them.
func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s is not installed (scripts/install-deps.sh installs it): %v", n, err)
		}
	}
}

// git init/add/commit on the mount, a clone of that repository onto the
// mount, and a clean status and fsck in the clone.
func TestToolsGitClone(t *testing.T) {
	needTool(t, "git")
	m := mount(t, fuse.Options{})
	src := filepath.Join(repoDir(t), "service", "meta")
	out := sh(t, `cd '`+m.dir+`'
export HOME='`+m.dir+`' GIT_CONFIG_NOSYSTEM=1
git init -q origin && cp -r '`+src+`' origin/meta && cd origin
git config user.email t@example.com && git config user.name tester
git add -A && git commit -q -m import
cd .. && git clone -q origin clone && cd clone
git status --porcelain | wc -l
git fsck --strict 2>&1 | wc -l
diff -r --exclude=.git ../origin .  && echo same`)
	if f := strings.Fields(out); len(f) != 3 || f[0] != "0" || f[1] != "0" || f[2] != "same" {
		t.Fatalf("git clone on the mount: want a clean status, a clean fsck and the same tree, got:\n%s", out)
	}
}

// tar extracts onto the mount with modes and times kept: tar --compare
// finds no difference in contents, modes, owners or mtimes.
func TestToolsTarExtractCompare(t *testing.T) {
	needTool(t, "tar")
	m := mount(t, fuse.Options{})
	local := t.TempDir()
	src := filepath.Join(repoDir(t), "fuse")
	out := sh(t, `cd '`+filepath.Dir(src)+`' && tar -cf '`+local+`/t.tar' fuse
mkdir '`+m.path("x")+`' && tar -xpf '`+local+`/t.tar' -C '`+m.path("x")+`'
tar --compare -f '`+local+`/t.tar' -C '`+m.path("x")+`' && echo same`)
	if strings.TrimSpace(out) != "same" {
		t.Fatalf("tar --compare on the mount:\n%s", out)
	}
}

// rsync -a onto the mount and back: the trees are the same, and a second
// rsync finds nothing to change (sizes, times, modes, symlinks all kept).
func TestToolsRsyncRoundTrip(t *testing.T) {
	needTool(t, "rsync")
	m := mount(t, fuse.Options{})
	local := t.TempDir()
	src := filepath.Join(local, "src")
	out := sh(t, `mkdir -p '`+src+`/d/e' && cp -r '`+filepath.Join(repoDir(t), "fuse")+`' '`+src+`/fuse'
echo hi > '`+src+`/d/e/f' && chmod 600 '`+src+`/d/e/f' && ln -s e/f '`+src+`/d/link' && ln '`+src+`/d/e/f' '`+src+`/d/hard'
touch -d '2001-02-03 04:05:06.123456789' '`+src+`/d/e/f'
rsync -aH '`+src+`/' '`+m.path("dst")+`/'
rsync -aH '`+m.path("dst")+`/' '`+local+`/back/'
diff -r '`+src+`' '`+local+`/back' && echo same
rsync -aH --itemize-changes --dry-run '`+src+`/' '`+m.path("dst")+`/' | wc -l
stat -c '%a %h %Y' '`+local+`/back/d/e/f'`)
	f := strings.Fields(out)
	if len(f) != 5 || f[0] != "same" || f[1] != "0" || f[2] != "600" || f[3] != "2" || f[4] != "981173106" {
		t.Fatalf("rsync round trip: want same, 0 changes, mode 600, 2 links, mtime 981173106; got:\n%s", out)
	}
}

// make builds a small C project on the mount, finds it up to date, and
// rebuilds only what a change touches.
func TestToolsMakeC(t *testing.T) {
	needTool(t, "make", "gcc")
	m := mount(t, fuse.Options{})
	p := m.path("proj")
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"Makefile": "prog: main.o add.o\n\tgcc -o prog main.o add.o\n%.o: %.c add.h\n\tgcc -c -o $@ $<\n",
		"add.h":    "int add(int, int);\n",
		"add.c":    "#include \"add.h\"\nint add(int a, int b) { return a + b; }\n",
		"main.c":   "#include <stdio.h>\n#include \"add.h\"\nint main(void) { printf(\"%d\\n\", add(40, 2)); return 0; }\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(p, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := sh(t, `cd '`+p+`' && make -s && ./prog && make`)
	if !strings.Contains(out, "42") || !strings.Contains(out, "'prog' is up to date") {
		t.Fatalf("make on the mount: want 42 and an up-to-date second run, got:\n%s", out)
	}
	// A change to add.c rebuilds add.o and prog, not main.o. The new mtime
	// must be later than add.o's: set it explicitly rather than rely on
	// the clock moving between two writes.
	future := time.Now().Add(2 * time.Second)
	if err := os.WriteFile(filepath.Join(p, "add.c"), []byte("#include \"add.h\"\nint add(int a, int b) { return a + b + 1; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(p, "add.c"), future, future); err != nil {
		t.Fatal(err)
	}
	out = sh(t, `cd '`+p+`' && make 2>&1 && ./prog`)
	if !strings.Contains(out, "gcc -c -o add.o add.c") || strings.Contains(out, "main.c") || !strings.HasSuffix(strings.TrimSpace(out), "43") {
		t.Fatalf("make after changing add.c: want only add.o and prog rebuilt and 43, got:\n%s", out)
	}
}

// sqlite3's file locking through the mount: a second process cannot write
// while the first holds an exclusive transaction, and two processes
// writing at once (with a busy timeout) lose nothing.
func TestToolsSqliteLocking(t *testing.T) {
	needTool(t, "sqlite3")
	m := mount(t, fuse.Options{})
	db := m.path("test.db")
	sh(t, `sqlite3 '`+db+`' 'CREATE TABLE t(who TEXT, n INTEGER);'`)

	holder := exec.Command("sqlite3", db)
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	fmt.Fprintln(stdin, "BEGIN EXCLUSIVE; INSERT INTO t VALUES('holder', 1);")
	fmt.Fprintln(stdin, ".print locked")
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "locked" {
		t.Fatalf("sqlite3 holder did not take its lock: %q %v", sc.Text(), sc.Err())
	}
	blocked, err := exec.Command("sqlite3", db, "INSERT INTO t VALUES('other', 1);").CombinedOutput()
	if err == nil || !strings.Contains(string(blocked), "locked") {
		t.Fatalf("a second sqlite3 wrote during another's exclusive transaction: %v %s", err, blocked)
	}
	fmt.Fprintln(stdin, "COMMIT;")
	stdin.Close()
	if err := holder.Wait(); err != nil {
		t.Fatalf("sqlite3 holder: %v", err)
	}

	// Two writers at once, each 30 single-row transactions.
	script := func(who string) string {
		var b strings.Builder
		b.WriteString(".timeout 60000\n")
		for i := range 30 {
			fmt.Fprintf(&b, "INSERT INTO t VALUES('%s', %d);\n", who, i)
		}
		return b.String()
	}
	var cmds []*exec.Cmd
	for _, who := range []string{"a", "b"} {
		c := exec.Command("sqlite3", db)
		c.Stdin = strings.NewReader(script(who))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("concurrent sqlite3 writer: %v", err)
		}
	}
	out := sh(t, `sqlite3 '`+db+`' "SELECT count(*) FROM t; SELECT count(*) FROM t WHERE who='other'; PRAGMA integrity_check;"`)
	if f := strings.Fields(out); len(f) != 3 || f[0] != "61" || f[1] != "0" || f[2] != "ok" {
		t.Fatalf("after the writers: want 61 rows, none from the blocked writer, integrity ok; got:\n%s", out)
	}
}

// cp -a onto the mount and back keeps xattrs, mode and mtime.
func TestToolsCpPreservesXattrs(t *testing.T) {
	m := mount(t, fuse.Options{})
	local := t.TempDir()
	src := filepath.Join(local, "f")
	if err := os.WriteFile(src, []byte("content"), 0o640); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"user.color": "blue", "user.empty": "", "trusted.origin": "local"} {
		if err := unix.Setxattr(src, k, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
	mtime := time.Unix(1_234_567_890, 123_456_789)
	if err := os.Chtimes(src, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	sh(t, `cp -a '`+src+`' '`+m.path("f")+`' && cp -a '`+m.path("f")+`' '`+local+`/back'`)
	for _, p := range []string{m.path("f"), filepath.Join(local, "back")} {
		for k, want := range map[string]string{"user.color": "blue", "user.empty": "", "trusted.origin": "local"} {
			buf := make([]byte, 64)
			n, err := unix.Getxattr(p, k, buf)
			if err != nil || string(buf[:n]) != want {
				t.Fatalf("%s: xattr %s = %q, %v; want %q", p, k, buf[:max(n, 0)], err, want)
			}
		}
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o640 || !st.ModTime().Equal(mtime) {
			t.Fatalf("%s: mode %v mtime %v (%v); want 0640 and %v", p, st.Mode(), st.ModTime(), err, mtime)
		}
	}
}
