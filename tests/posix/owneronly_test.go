package posix

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/fuse"
)

// TestOwnerOnlyMount: a mount made with OwnerOnly (emberfs mount
// --owner-only) refuses every other user, even to stat a file every user
// could read; a default mount (TestConformance) lets them all in.
func TestOwnerOnlyMount(t *testing.T) {
	dir := mountEmberFS(t, fuse.Options{OwnerOnly: true})
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	// The helpers work in dir, which they cannot even enter: run them in
	// the mount's parent and name the file by its absolute path.
	hs := &helperSet{dir: filepath.Dir(filepath.Dir(dir)), procs: map[string]*helper{}}
	defer hs.close(t)
	for _, who := range []string{"alice", "nobody"} {
		got := hs.get(t, who).do(t, statement{text: "stat " + filepath.Join(dir, "f")})
		if got != "EACCES" {
			t.Errorf("%s: stat on an owner-only mount: %s, want EACCES", who, got)
		}
	}
	if got := hs.get(t, "root").do(t, statement{text: "stat " + filepath.Join(dir, "f")}); !strings.HasPrefix(got, "OK file 0644") {
		t.Errorf("root (the mounting user): %s", got)
	}
}
