package fusetest

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/fuse"
)

// repoDir is this repository's root (a source tree to copy around).
func repoDir(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func TestToolsCopyDiffFindTar(t *testing.T) {
	m := mount(t, fuse.Options{})
	src := filepath.Join(repoDir(t), "service")
	local := t.TempDir()
	sh(t, `cp -r '`+src+`' '`+m.path("src")+`'
diff -r '`+src+`' '`+m.path("src")+`'
cd '`+m.dir+`' && tar cf '`+local+`/t.tar' src
mkdir '`+m.path("untar")+`' && tar xf '`+local+`/t.tar' -C '`+m.path("untar")+`'
diff -r '`+src+`' '`+m.path("untar", "src")+`'`)
	// find sees the same tree in the mount as on local disk.
	want := sh(t, `cd '`+src+`' && find . | sort`)
	got := sh(t, `cd '`+m.path("src")+`' && find . | sort`)
	if got != want || len(strings.Split(want, "\n")) < 20 {
		t.Fatalf("find in the mount lists %d entries, local %d", len(strings.Split(got, "\n")), len(strings.Split(want, "\n")))
	}
	goFiles := sh(t, `cd '`+m.path("src")+`' && find . -name '*.go' -type f | wc -l`)
	if strings.TrimSpace(goFiles) == "0" {
		t.Fatal("find -name '*.go' found nothing in the mount")
	}
}

func TestToolsDdMvLnChmodChown(t *testing.T) {
	m := mount(t, fuse.Options{})
	local := t.TempDir()
	sh(t, `dd if=/dev/urandom of='`+local+`/blob' bs=1M count=9 status=none
dd if='`+local+`/blob' of='`+m.path("blob")+`' bs=1M status=none
cmp '`+local+`/blob' '`+m.path("blob")+`'
dd if='`+m.path("blob")+`' of='`+local+`/back' bs=64k status=none
cmp '`+local+`/blob' '`+local+`/back'
mv '`+m.path("blob")+`' '`+m.path("moved")+`'
test ! -e '`+m.path("blob")+`'
mkdir '`+m.path("d")+`' && mv '`+m.path("moved")+`' '`+m.path("d")+`/'
ln '`+m.path("d", "moved")+`' '`+m.path("hard")+`'
ln -s d/moved '`+m.path("soft")+`'
cmp '`+local+`/blob' '`+m.path("soft")+`'
test "$(stat -c %h '`+m.path("hard")+`')" = 2
test "$(readlink '`+m.path("soft")+`')" = d/moved
chmod 640 '`+m.path("hard")+`'
test "$(stat -c %a '`+m.path("d", "moved")+`')" = 640
chown 123:456 '`+m.path("hard")+`'
test "$(stat -c %u:%g '`+m.path("d", "moved")+`')" = 123:456
rm '`+m.path("hard")+`'
test "$(stat -c %h '`+m.path("d", "moved")+`')" = 1
rm -r '`+m.path("d")+`' '`+m.path("soft")+`'
test -z "$(ls -A '`+m.dir+`')"`)
}

func TestToolsGit(t *testing.T) {
	m := mount(t, fuse.Options{})
	out := sh(t, `cd '`+m.dir+`'
export HOME='`+m.dir+`' GIT_CONFIG_NOSYSTEM=1
git init -q repo && cd repo
git config user.email t@example.com && git config user.name tester
mkdir -p a/b && echo hello > a/b/f.txt && echo top > README
git add -A && git commit -q -m first
echo more >> README && git mv a/b/f.txt a/g.txt && git commit -q -am second
git fsck --strict 2>&1
git log --oneline | wc -l
git status --porcelain | wc -l`)
	lines := strings.Fields(out)
	if len(lines) < 2 || lines[len(lines)-2] != "2" || lines[len(lines)-1] != "0" {
		t.Fatalf("git in the mount: want 2 commits and a clean tree, got:\n%s", out)
	}
}

// Data paths: page cache, writeback cache and direct I/O all store the same
// bytes, and big writes arrive as 1 MiB requests.
func TestDataModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts fuse.Options
	}{
		{"default", fuse.Options{}},
		{"writeback", fuse.Options{WritebackCache: true}},
		{"directio", fuse.Options{DirectIO: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mount(t, tc.opts)
			data := make([]byte, 5<<20+123)
			rand.Read(data)
			p := m.path("f")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
			// Overwrite in the middle and append through a second handle.
			if _, err := f.WriteAt([]byte("MIDDLE"), 1<<20+5); err != nil {
				t.Fatal(err)
			}
			copy(data[1<<20+5:], "MIDDLE")
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			a, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Write([]byte("tail")); err != nil {
				t.Fatal(err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			data = append(data, "tail"...)
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, wrote %d; equal=%v", len(got), len(data), bytes.Equal(got, data))
			}
			st, err := os.Stat(p)
			if err != nil || st.Size() != int64(len(data)) {
				t.Fatalf("stat size %v err %v, want %d", st.Size(), err, len(data))
			}
			if maxWrite := m.be.largestWrite(); maxWrite != fuse.MaxWrite {
				t.Fatalf("largest write request %d bytes, want %d", maxWrite, fuse.MaxWrite)
			}
		})
	}
}
