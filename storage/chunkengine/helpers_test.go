package chunkengine

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/internal/crc32c"
	"github.com/emberfs/emberfs/internal/errcode"
)

const testChunkSize = 256 << 10

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir) // never returns
	}
	os.Exit(m.Run())
}

// tWriter sends engine logs to the test log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func openT(t testing.TB, dir string, opts Options) *Engine {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	}
	e, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func crc(b []byte) uint32 { return crc32c.Checksum(b) }

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustApply(t testing.TB, e *Engine, id ChunkID, u Update) uint64 {
	t.Helper()
	v, err := e.Apply(id, u)
	if err != nil {
		t.Fatalf("apply %s %s: %v", u.Kind, id, err)
	}
	return v
}

func wantCode(t testing.TB, err error, c errcode.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %s", c)
	}
	if got := errcode.CodeOf(err); got != c {
		t.Fatalf("got error %v (code %s), want code %s", err, got, c)
	}
}

func wantVersionErr(t testing.TB, err error, c errcode.Code) *VersionError {
	t.Helper()
	wantCode(t, err, c)
	var ve *VersionError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v is not a *VersionError", err)
	}
	return ve
}

// checkContent reads chunk id fully (relaxed) and compares with want.
func checkContent(t testing.TB, e *Engine, id ChunkID, want []byte) {
	t.Helper()
	got, _, err := e.Read(id, 0, MaxChunkSize, true)
	if err != nil {
		t.Fatalf("read %s: %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("chunk %s: content differs: got %d bytes (crc %08x), want %d bytes (crc %08x)", id, len(got), crc(got), len(want), crc(want))
	}
	m, ok := e.Stat(id)
	if !ok {
		t.Fatalf("stat %s: not found", id)
	}
	if m.Length != uint32(len(want)) || m.Checksum != crc(want) {
		t.Fatalf("chunk %s: meta length %d crc %08x, want %d %08x", id, m.Length, m.Checksum, len(want), crc(want))
	}
}

// applyModel applies u to the expected content b.
func applyModel(b []byte, u Update) []byte {
	switch u.Kind {
	case UpdateWrite:
		end := int(u.Offset) + len(u.Data)
		if end > len(b) {
			b = append(b, make([]byte, end-len(b))...)
		}
		copy(b[u.Offset:], u.Data)
	case UpdateTruncate:
		if int(u.Length) <= len(b) {
			b = b[:u.Length]
		} else {
			b = append(b, make([]byte, int(u.Length)-len(b))...)
		}
	case UpdateReplace:
		b = append([]byte(nil), u.Data...)
	case UpdateRemove:
		b = nil
	}
	return b
}
