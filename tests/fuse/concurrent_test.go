package fusetest

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/emberfs/emberfs/fuse"
)

// Parallel namespace and data operations through the kernel (run with -race
// to check the mount's own state: open-file table, credential cache).
func TestConcurrentOps(t *testing.T) {
	m := mount(t, fuse.Options{})
	for _, d := range []string{"a", "b"} {
		if err := os.Mkdir(m.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const workers, files = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < files; i++ {
				name := fmt.Sprintf("w%d-%d", w, i)
				data := bytes.Repeat([]byte(name), 1000)
				if err := os.WriteFile(m.path("a", name), data, 0o644); err != nil {
					errs <- err
					return
				}
				if st, err := os.Stat(m.path("a", name)); err != nil || st.Size() != int64(len(data)) {
					errs <- fmt.Errorf("stat %s: %v size %v", name, err, st)
					return
				}
				if err := os.Rename(m.path("a", name), m.path("b", name)); err != nil {
					errs <- err
					return
				}
				got, err := os.ReadFile(m.path("b", name))
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("read %s after rename: %v (%d bytes)", name, err, len(got))
					return
				}
				if i%2 == 0 {
					if err := os.Remove(m.path("b", name)); err != nil {
						errs <- err
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	a, _ := os.ReadDir(m.path("a"))
	b, _ := os.ReadDir(m.path("b"))
	if len(a) != 0 || len(b) != workers*(files/2) { // odd i survive
		t.Fatalf("after the run: %d entries in a, %d in b", len(a), len(b))
	}
}
