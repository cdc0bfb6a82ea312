package posix

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/internal/testutil"
)

// TestConformance runs every script in cases/ on a real EmberFS mount and
// on a local ext4 directory and compares the transcripts line by line.
// Lines annotated "#differs: NAME" must differ, and NAME must be in
// intendedDifferences; every other line must agree.
func TestConformance(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the POSIX suite needs root (mount, other uids)")
	}
	ext4 := ext4Dir(t)
	mnt := mountEmberFS(t, fuse.Options{})
	cases, err := filepath.Glob("cases/*.posix")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no cases/*.posix (%v)", err)
	}
	for _, c := range cases {
		name := strings.TrimSuffix(filepath.Base(c), ".posix")
		t.Run(name, func(t *testing.T) {
			script, err := parseScript(c)
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range script {
				if st.differs != "" {
					if _, ok := intendedDifferences[st.differs]; !ok {
						t.Fatalf("%s:%d: #differs: %s is not in intendedDifferences", c, st.line, st.differs)
					}
				}
			}
			want := run(t, caseDir(t, ext4, name), script)
			got := run(t, caseDir(t, mnt, name), script)
			compare(t, c, want, got)
		})
	}
}

// compare reports every line where the transcripts disagree (and every
// annotated line where they agree), with both transcripts for context.
func compare(t *testing.T, file string, ext4, ember []result) {
	t.Helper()
	var bad []string
	for i := range ext4 {
		st := ext4[i].st
		same := ext4[i].out == ember[i].out
		switch {
		case !same && st.differs == "":
			bad = append(bad, fmt.Sprintf("%s:%d: %s: %s\n    ext4:    %s\n    emberfs: %s", file, st.line, st.user, st.text, ext4[i].out, ember[i].out))
		case same && st.differs != "":
			bad = append(bad, fmt.Sprintf("%s:%d: %s: %s: agrees (%s) but is annotated #differs: %s; remove the annotation", file, st.line, st.user, st.text, ext4[i].out, st.differs))
		}
	}
	var full strings.Builder
	for i := range ext4 {
		fmt.Fprintf(&full, "%4d %-60s | %s\n", ext4[i].st.line, ext4[i].String(), ember[i].out)
	}
	if len(bad) == 0 {
		t.Logf("transcript (ext4 | emberfs):\n%s", full.String()) // go test -v shows it
		return
	}
	{
		t.Errorf("%d lines differ from ext4:\n%s\n\ntranscript (ext4 | emberfs):\n%s", len(bad), strings.Join(bad, "\n"), full.String())
	}
}

// ext4Dir is a fresh directory on the local ext4 file system (/tmp here),
// reachable by every user. A machine whose /tmp is not ext4 fails the
// test: the comparison is the point.
func ext4Dir(t *testing.T) string {
	t.Helper()
	base := os.TempDir()
	var sfs unix.Statfs_t
	if err := unix.Statfs(base, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Type != unix.EXT4_SUPER_MAGIC {
		t.Fatalf("%s is not ext4 (statfs type %#x): the suite compares against ext4; set TMPDIR to an ext4 directory", base, sfs.Type)
	}
	dir, err := os.MkdirTemp(base, "emberfs-posix-ext4-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// caseDir makes base/name, owned by root, mode 0777 (chmod: no umask).
func caseDir(t *testing.T, base, name string) string {
	t.Helper()
	dir := filepath.Join(base, name)
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// mountEmberFS mounts the package's cluster through a new native client in
// a fresh directory under its own root directory (0755), unmounted when the
// test ends. Tests get a directory of their own in the shared namespace.
func mountEmberFS(t *testing.T, opts fuse.Options) string {
	t.Helper()
	cl, err := newClient(t.Context(), fmt.Sprintf("posix-%s-%d", t.Name(), os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	root, err := os.MkdirTemp("", mountPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	opts.Logger = testutil.Logger()
	srv, err := fuse.Mount(context.Background(), fuse.ClientBackend(cl), root, opts)
	if err != nil {
		os.Remove(root)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		os.Remove(root)
	})
	dir, err := os.MkdirTemp(root, "run-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
