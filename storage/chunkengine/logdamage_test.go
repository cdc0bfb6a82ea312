package chunkengine

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCorruptLogRecordInTheMiddleLosesNothingElse (issue 13, hole 5): one
// damaged record in the middle of the metadata log used to end replay
// there; reconciliation then deleted the data files of every later
// version as unreferenced, silently. Now the bad record is skipped and
// reported, the log is kept aside, every later record is replayed, no
// data file is deleted, and the chunk whose newest state was in the bad
// record is marked corrupt (its newer data exists; repair refetches it)
// rather than served at its older version.
func TestCorruptLogRecordInTheMiddleLosesNothingElse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "target")
	opts := Options{NoSync: true, CompactBytes: 1 << 30}
	e := openT(t, dir, opts)
	a, b, c := ChunkID{Inode: 1}, ChunkID{Inode: 2}, ChunkID{Inode: 3}
	put := func(id ChunkID, s string) {
		t.Helper()
		m, _ := e.Stat(id)
		if _, err := e.Apply(id, Update{Kind: UpdateReplace, Data: []byte(s), ChunkSize: testChunkSize, Version: m.Version + 1}); err != nil {
			t.Fatal(err)
		}
	}
	put(a, "a-one")
	put(b, "b-one")
	put(a, "a-two") // the record this test damages
	put(c, "c-one")
	put(b, "b-two")
	e.Close()

	logPath := filepath.Join(dir, logName)
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	recs, valid, err := scanRecords(data)
	if err != nil || valid != len(data) || len(recs) != 5 {
		t.Fatalf("log before damage: %d records, valid %d of %d, %v; want 5 whole records", len(recs), valid, len(data), err)
	}
	recLen := len(data) / 5
	data[2*recLen+recHeaderLen+3] ^= 0xff // inside record 3's payload
	if err := os.WriteFile(logPath, data, 0o644); err != nil {
		t.Fatal(err)
	}

	e = openT(t, dir, opts)
	defer e.Close()
	check := func(id ChunkID, want string) {
		t.Helper()
		got, _, err := e.Read(id, 0, 64, false)
		if err != nil || string(got) != want {
			t.Errorf("chunk %s: %q, %v; want %q", id, got, err, want)
		}
	}
	check(b, "b-two")
	check(c, "c-one")
	if !e.IsCorrupt(a) {
		m, _ := e.Stat(a)
		t.Errorf("chunk %s, whose newest record was damaged, is served at version %d; want it marked corrupt", a, m.Version)
	}
	dmg := e.MetaDamage()
	if len(dmg) == 0 || !strings.Contains(dmg[0], "offset") {
		t.Errorf("MetaDamage() = %q, want the damaged span reported", dmg)
	}
	// The damaged log is kept aside, byte for byte.
	kept, _ := filepath.Glob(filepath.Join(dir, logName+".damaged-*"))
	if len(kept) != 1 {
		t.Fatalf("kept damaged logs: %v, want one", kept)
	}
	if got, _ := os.ReadFile(kept[0]); !bytes.Equal(got, data) {
		t.Errorf("kept log differs from the damaged one")
	}
	// a-two's data file still exists somewhere under the target.
	found := false
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); string(b) == "a-two" {
				found = true
			}
		}
		return nil
	})
	if !found {
		t.Errorf("the data of a-two was deleted")
	}
	// A second open starts clean: the repaired state was snapshotted.
	e.Close()
	e2 := openT(t, dir, opts)
	defer e2.Close()
	if len(e2.MetaDamage()) != 0 {
		t.Errorf("second open still reports damage: %q", e2.MetaDamage())
	}
	if !e2.IsCorrupt(a) {
		t.Errorf("corrupt mark of %s lost on reopen", a)
	}
}
