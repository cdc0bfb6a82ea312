package posix

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The script language (cases/*.posix), one statement per line:
//
//	# comment                 ignored
//	@alice                    the following operations run as alice (see users)
//	mkdir d 0755              an operation (ops_test.go), run by the current user
//	snap d d/f                (driver) remember the times of these paths
//	times d d/f               (driver) print which of atime/mtime/ctime changed
//	                          since their last snap
//	times e/f:d/f             the same for e/f, compared with the snap of d/f
//	                          (a file renamed since)
//	mkdir x 0700   #differs: name   this line's result is an intended difference
//	                          (differences_test.go, docs/fuse.md)
//
// Paths are relative to the case's own directory (world-writable, owned by
// root, mode 0777), which is the working directory of every operation.
// Each user's operations run in one helper process of that user, started
// with its uid, gid and supplementary groups (SysProcAttr.Credential) at
// the user's first operation and kept for the whole case (so descriptors
// opened with fopen stay open across other users' operations and snaps):
// every permission check is the kernel's and the file system's, as for any
// program. The transcript has one line per statement:
//
//	alice: mkdir d 0755 -> OK
//
// with results normalized (errno names, octal modes, user and group names,
// no inode numbers or times), so a run on EmberFS and a run on ext4 compare
// line by line.

// user is an identity the scripts switch among.
type user struct {
	name     string
	uid, gid uint32
	groups   []uint32
}

// users: alice and bob share the supplementary group staff (3001); carol is
// in no group but her own; nobody is the usual unprivileged account.
var users = map[string]user{
	"root":   {name: "root", uid: 0, gid: 0},
	"alice":  {name: "alice", uid: 2001, gid: 2001, groups: []uint32{3001}},
	"bob":    {name: "bob", uid: 2002, gid: 2002, groups: []uint32{3001}},
	"carol":  {name: "carol", uid: 2003, gid: 2003},
	"nobody": {name: "nobody", uid: 65534, gid: 65534},
}

// groupNames names the gids the scripts use (uid names are the users').
var groupNames = map[uint32]string{0: "root", 2001: "alice", 2002: "bob", 2003: "carol", 3001: "staff", 65534: "nogroup"}

func uidName(uid uint32) string {
	for _, u := range users {
		if u.uid == uid {
			return u.name
		}
	}
	return fmt.Sprint(uid)
}

func gidName(gid uint32) string {
	if n, ok := groupNames[gid]; ok {
		return n
	}
	return fmt.Sprint(gid)
}

// lookupID maps a user or group name (or a number) of a script to its id.
func lookupID(s string, group bool) (int, error) {
	if s == "-1" {
		return -1, nil
	}
	if group {
		for id, n := range groupNames {
			if n == s {
				return int(id), nil
			}
		}
	} else if u, ok := users[s]; ok {
		return int(u.uid), nil
	}
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		return 0, fmt.Errorf("unknown %s %q", map[bool]string{true: "group", false: "user"}[group], s)
	}
	return n, nil
}

// statement is one line of a script.
type statement struct {
	line    int
	text    string // without the #differs annotation
	user    string
	differs string // the intended-difference name, if annotated
}

func parseScript(path string) ([]statement, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []statement
	who := "root"
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		text := sc.Text()
		differs := ""
		if i := strings.Index(text, "#differs:"); i >= 0 {
			differs = strings.TrimSpace(text[i+len("#differs:"):])
			text = text[:i]
			if differs == "" {
				return nil, fmt.Errorf("%s:%d: #differs: needs a name", path, n)
			}
		} else if i := strings.Index(text, "#"); i >= 0 {
			text = text[:i]
		}
		text = strings.Join(strings.Fields(text), " ")
		if text == "" {
			continue
		}
		if strings.HasPrefix(text, "@") {
			who = text[1:]
			if _, ok := users[who]; !ok {
				return nil, fmt.Errorf("%s:%d: unknown user %q", path, n, who)
			}
			continue
		}
		op := strings.Fields(text)[0]
		if _, ok := operations[op]; !ok && op != "snap" && op != "times" {
			return nil, fmt.Errorf("%s:%d: unknown operation %q", path, n, op)
		}
		out = append(out, statement{line: n, text: text, user: who, differs: differs})
	}
	return out, sc.Err()
}

// result is one transcript line and the statement it came from.
type result struct {
	st  statement
	out string
}

func (r result) String() string { return fmt.Sprintf("%s: %s -> %s", r.st.user, r.st.text, r.out) }

// timesOf is what snap remembers of a path.
type timesOf struct{ atime, mtime, ctime syscall.Timespec }

// run executes a script in dir (the case directory) and returns its
// transcript.
func run(t *testing.T, dir string, script []statement) []result {
	t.Helper()
	var out []result
	snaps := map[string]timesOf{}
	helpers := &helperSet{dir: dir, procs: map[string]*helper{}}
	defer helpers.close(t)
	for i := 0; i < len(script); {
		st := script[i]
		fields := strings.Fields(st.text)
		switch fields[0] {
		case "snap":
			for _, p := range fields[1:] {
				var s syscall.Stat_t
				if err := syscall.Lstat(dir+"/"+p, &s); err != nil {
					t.Fatalf("line %d: snap %s: %v", st.line, p, err)
				}
				snaps[p] = timesOf{s.Atim, s.Mtim, s.Ctim}
			}
			// The next change must get a later time than the one
			// remembered: ext4's clock ticks once per jiffy (up to 10 ms).
			time.Sleep(20 * time.Millisecond)
			out = append(out, result{st, "OK"})
			i++
			continue
		case "times":
			var parts []string
			for _, p := range fields[1:] {
				p, snapped, _ := strings.Cut(p, ":")
				if snapped == "" {
					snapped = p
				}
				before, ok := snaps[snapped]
				if !ok {
					t.Fatalf("line %d: times %s without a snap", st.line, p)
				}
				var s syscall.Stat_t
				if err := syscall.Lstat(dir+"/"+p, &s); err != nil {
					parts = append(parts, p+"="+errnoName(err))
					continue
				}
				var changed string
				for _, c := range []struct {
					letter        string
					before, after syscall.Timespec
				}{{"a", before.atime, s.Atim}, {"m", before.mtime, s.Mtim}, {"c", before.ctime, s.Ctim}} {
					if c.before != c.after {
						changed += c.letter
					}
				}
				if changed == "" {
					changed = "-"
				}
				parts = append(parts, p+"="+changed)
			}
			out = append(out, result{st, strings.Join(parts, " ")})
			i++
			continue
		}
		out = append(out, result{st, helpers.get(t, st.user).do(t, st)})
		i++
	}
	helpers.close(t)
	return out
}

func isDriverOp(text string) bool {
	op := strings.Fields(text)[0]
	return op == "snap" || op == "times"
}

// helper is one user's helper process for a case: it runs that user's
// operations one line at a time and keeps its descriptors (fopen) for the
// whole case, across other users' operations and snaps.
type helper struct {
	u      user
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *strings.Builder
}

type helperSet struct {
	dir   string
	procs map[string]*helper
}

func (hs *helperSet) get(t *testing.T, name string) *helper {
	t.Helper()
	if h, ok := hs.procs[name]; ok {
		return h
	}
	u := users[name]
	cmd := exec.Command(helperBin, hs.dir)
	// No 1 s race-detector exit delay in helpers of a -race test binary.
	cmd.Env = append(os.Environ(), helperEnv+"=1", "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}}
	h := &helper{u: u, cmd: cmd, stderr: &strings.Builder{}}
	cmd.Stderr = h.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the helper as %s: %v", name, err)
	}
	h.in, h.out = in, bufio.NewReader(out)
	hs.procs[name] = h
	return h
}

// do runs one operation and returns its result line.
func (h *helper) do(t *testing.T, st statement) string {
	t.Helper()
	if _, err := io.WriteString(h.in, st.text+"\n"); err != nil {
		t.Fatalf("line %d: helper as %s: %v\n%s", st.line, h.u.name, err, h.stderr)
	}
	line, err := h.out.ReadString('\n')
	if err != nil {
		h.cmd.Wait()
		t.Fatalf("line %d: %s: helper as %s: %v\nstderr:\n%s", st.line, st.text, h.u.name, err, h.stderr)
	}
	return strings.TrimSuffix(line, "\n")
}

// close ends every helper (closing descriptors still open) and checks
// that each exited cleanly.
func (hs *helperSet) close(t *testing.T) {
	t.Helper()
	for name, h := range hs.procs {
		h.in.Close()
		if err := h.cmd.Wait(); err != nil {
			t.Errorf("helper as %s: %v\nstderr:\n%s", name, err, h.stderr)
		}
	}
	hs.procs = map[string]*helper{}
}

// sortedCopy is a sorted copy of names (readdir order is the file
// system's own).
func sortedCopy(names []string) []string {
	c := append([]string(nil), names...)
	sort.Strings(c)
	return c
}
