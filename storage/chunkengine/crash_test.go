package chunkengine

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "EMBERFS_CHUNKENGINE_CRASH_CHILD"

var crashIDs = []ChunkID{{1, 0}, {1, 1}, {1, 2}, {2, 0}, {2, 1}}

// crashChild runs in a child process: it applies random updates to a few
// chunks forever and prints a line after each step returns:
//
//	P inode index version length crc   Prepare returned
//	C inode index version length crc   Commit or Apply returned
//	D inode index                      a remove was committed
//	A inode index version              Abort returned
//
// The parent SIGKILLs it at a random moment.
func crashChild(dir string) {
	e, err := Open(dir, Options{CompactBytes: 16 << 10})
	if err != nil {
		fmt.Println("ERR open:", err)
		os.Exit(2)
	}
	out := func(format string, args ...any) {
		os.Stdout.WriteString(fmt.Sprintf(format, args...) + "\n") // one write per line
	}
	fail := func(what string, err error) {
		out("ERR %s: %v", what, err)
		os.Exit(2)
	}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
	committed := func(id ChunkID, v uint64) {
		m, ok := e.Stat(id)
		if !ok {
			out("D %d %d", id.Inode, id.Index)
			return
		}
		out("C %d %d %d %d %d", id.Inode, id.Index, m.Version, m.Length, m.Checksum)
	}
	// Resolve pending versions left by the previous run.
	for _, m := range e.Dump() {
		if m.PendingVersion == 0 {
			continue
		}
		if r.IntN(2) == 0 {
			if err := e.Commit(m.ID, m.PendingVersion, 0); err != nil {
				fail("commit leftover", err)
			}
			committed(m.ID, m.PendingVersion)
		} else {
			if err := e.Abort(m.ID, m.PendingVersion); err != nil {
				fail("abort leftover", err)
			}
			out("A %d %d %d", m.ID.Inode, m.ID.Index, m.PendingVersion)
		}
	}
	out("READY")
	for {
		id := crashIDs[r.IntN(len(crashIDs))]
		m, _ := e.Stat(id)
		var u Update
		switch k := r.IntN(20); {
		case k < 12 || m.Version == 0:
			n := 1 + r.IntN(96<<10)
			off := r.IntN(int(m.Length) + 1)
			if r.IntN(3) == 0 {
				off = int(m.Length) // append
			}
			off = min(off, testChunkSize-n)
			u = Update{Kind: UpdateWrite, Offset: uint32(off), Data: randBytes(r, n), ChunkSize: testChunkSize}
		case k < 16:
			u = Update{Kind: UpdateTruncate, Length: uint32(r.IntN(testChunkSize))}
		case k < 19:
			u = Update{Kind: UpdateReplace, Version: m.Version + 1, Data: randBytes(r, r.IntN(128<<10)), ChunkSize: testChunkSize}
		default:
			u = Update{Kind: UpdateRemove}
		}
		if r.IntN(3) == 0 {
			v, err := e.Apply(id, u)
			if err != nil {
				fail("apply", err)
			}
			committed(id, v)
			continue
		}
		v, err := e.Prepare(id, u)
		if err != nil {
			fail("prepare", err)
		}
		pm, _ := e.Stat(id)
		out("P %d %d %d %d %d", id.Inode, id.Index, v, pm.PendingLength, pm.PendingChecksum)
		if r.IntN(8) == 0 {
			if err := e.Abort(id, v); err != nil {
				fail("abort", err)
			}
			out("A %d %d %d", id.Inode, id.Index, v)
			continue
		}
		if err := e.Commit(id, v, 0); err != nil {
			fail("commit", err)
		}
		committed(id, v)
	}
}

type crashVer struct {
	version  uint64
	length   uint32
	checksum uint32
}

// crashModel is what the parent knows was acknowledged, per chunk.
type crashModel struct {
	acked    map[ChunkID]*crashVer // nil entry: removed (or never created)
	prepared map[ChunkID]*crashVer // last prepare printed after the last ack
}

func (m *crashModel) apply(t *testing.T, line string) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] == "READY" {
		return
	}
	if f[0] == "ERR" {
		t.Fatalf("child failed: %s", line)
	}
	var id ChunkID
	var v crashVer
	fmt.Sscan(strings.Join(f[1:], " "), &id.Inode, &id.Index, &v.version, &v.length, &v.checksum)
	switch f[0] {
	case "P":
		m.prepared[id] = &v
	case "C":
		m.acked[id] = &v
		delete(m.prepared, id)
	case "D":
		m.acked[id] = nil
		delete(m.prepared, id)
	case "A":
		delete(m.prepared, id)
	default:
		t.Fatalf("bad child line %q", line)
	}
}

// check reopens the target after a kill and compares it with the model;
// afterwards the model holds the reopened state.
func (m *crashModel) check(t *testing.T, dir string) {
	e := openT(t, dir, Options{VerifyInterval: -1})
	defer e.Close()
	for _, id := range crashIDs {
		st, ok := e.Stat(id)
		acked := m.acked[id]
		switch {
		case acked == nil && ok && st.Version > 1:
			t.Fatalf("chunk %s: acknowledged removed (or never made) but has version %d", id, st.Version)
		case acked != nil && !ok:
			// Only a committed remove of the next version may lose it.
			t.Logf("chunk %s: removed by an unacknowledged commit of version %d", id, acked.version+1)
		case acked != nil && st.Version == acked.version:
			if st.Length != acked.length || st.Checksum != acked.checksum {
				t.Fatalf("chunk %s v%d: length %d crc %d, acknowledged %d %d", id, st.Version, st.Length, st.Checksum, acked.length, acked.checksum)
			}
		case acked != nil && st.Version == acked.version+1:
			if p := m.prepared[id]; p != nil && p.version == st.Version && (p.length != st.Length || p.checksum != st.Checksum) {
				t.Fatalf("chunk %s: committed v%d differs from its prepare", id, st.Version)
			}
		case acked != nil:
			t.Fatalf("chunk %s: version %d after an acknowledged commit of version %d", id, st.Version, acked.version)
		}
		if ok && st.PendingVersion != 0 && st.PendingVersion != st.Version+1 && st.Version != 0 {
			if p := m.prepared[id]; p == nil || p.version != st.PendingVersion {
				t.Fatalf("chunk %s: pending version %d after committed %d", id, st.PendingVersion, st.Version)
			}
		}
		if ok && st.Version != 0 {
			// The reopened engine verifies the whole content on each read.
			data, ver, err := e.Read(id, 0, testChunkSize, true)
			if err != nil {
				t.Fatalf("chunk %s: read after crash: %v", id, err)
			}
			if ver != st.Version || uint32(len(data)) != st.Length || crc(data) != st.Checksum {
				t.Fatalf("chunk %s: read %d bytes crc %d at v%d, meta says %d %d v%d", id, len(data), crc(data), ver, st.Length, st.Checksum, st.Version)
			}
		}
		if e.IsCorrupt(id) {
			t.Fatalf("chunk %s marked corrupt after a crash", id)
		}
		if ok && st.Version != 0 {
			m.acked[id] = &crashVer{st.Version, st.Length, st.Checksum}
		} else {
			m.acked[id] = nil
		}
		delete(m.prepared, id)
		if ok && st.PendingVersion != 0 {
			m.prepared[id] = &crashVer{st.PendingVersion, st.PendingLength, st.PendingChecksum}
		}
	}
	// Every data file left belongs to a live version.
	files, _ := filepath.Glob(filepath.Join(dir, dataDir, "*", "*"))
	live := 0
	for _, st := range e.Dump() {
		if st.Length > 0 {
			live++
		}
		if st.PendingVersion != 0 && st.PendingLength > 0 {
			live++
		}
	}
	if len(files) > live {
		t.Fatalf("%d data files for %d live versions: garbage survived reopen", len(files), live)
	}
	if _, err := os.Stat(filepath.Join(dir, snapTmpName)); err == nil {
		t.Fatal("temporary snapshot survived reopen")
	}
}

// TestCrashSIGKILL kills a child process doing prepares and commits at a
// random moment, several times, and checks after each kill that every
// acknowledged commit is there with its checksum and nothing else is.
func TestCrashSIGKILL(t *testing.T) {
	dir := t.TempDir()
	model := &crashModel{acked: map[ChunkID]*crashVer{}, prepared: map[ChunkID]*crashVer{}}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	totalCommits := 0
	for round := 0; round < 4; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		delay := time.Duration(150+r.IntN(600)) * time.Millisecond
		var kill <-chan time.Time
		commits := 0
		for line := range lines {
			if line == "READY" {
				kill = time.After(delay)
			}
			if strings.HasPrefix(line, "C ") || strings.HasPrefix(line, "D ") {
				commits++
			}
			model.apply(t, line)
			select {
			case <-kill:
				cmd.Process.Signal(syscall.SIGKILL)
				kill = nil
			default:
			}
		}
		cmd.Wait()
		if kill != nil {
			t.Fatalf("round %d: child exited before it was killed", round)
		}
		t.Logf("round %d: killed after %v and %d acknowledged commits", round, delay, commits)
		totalCommits += commits
		model.check(t, dir)
	}
	if totalCommits == 0 {
		t.Fatal("the child acknowledged no commits")
	}
}
