package fusetest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/kv/badgerkv"
	"github.com/emberfs/emberfs/service/meta"
)

// memBackend is a real metadata server (in-memory Badger) with file
// contents kept in memory in place of the storage cluster. It stands in for
// the native client until client/ and storage/ run in-process here.
type memBackend struct {
	srv  *meta.Server
	data *memData
}

// memData holds file contents and is the metadata server's ChunkStore.
type memData struct {
	mu       sync.Mutex
	files    map[uint64][]byte
	maxWrite int // largest single WriteAt seen (FUSE request size)
}

func (d *memData) QueryLength(_ context.Context, id uint64, _ meta.Layout) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return uint64(len(d.files[id])), nil
}

func (d *memData) TruncateChunks(_ context.Context, id uint64, _ meta.Layout, length uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resize(id, int64(length))
	return nil
}

func (d *memData) RemoveChunks(_ context.Context, id uint64, _ meta.Layout) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.files, id)
	return nil
}

func (d *memData) Capacity(context.Context) (uint64, uint64, error) { return 1 << 40, 1 << 39, nil }

func (d *memData) resize(id uint64, size int64) {
	b := d.files[id]
	if int64(len(b)) >= size {
		d.files[id] = b[:size]
		return
	}
	d.files[id] = append(b, make([]byte, size-int64(len(b)))...)
}

func newMemBackend(t *testing.T) *memBackend {
	t.Helper()
	eng, err := badgerkv.OpenMemory(badgerkv.Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	data := &memData{files: map[uint64][]byte{}}
	srv, err := meta.New(context.Background(), eng, meta.Config{Chunks: data, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return &memBackend{srv: srv, data: data}
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

const clientID = "fuse-test-client"

func (b *memBackend) Meta() meta.FS { return b.srv }

func (b *memBackend) Open(ctx context.Context, u meta.User, p meta.PathAt, flags int, mode uint32) (fuse.File, error) {
	acc := flags & syscall.O_ACCMODE
	read, write := acc != os.O_WRONLY, acc != os.O_RDONLY
	var res meta.OpenResult
	var err error
	if flags&os.O_CREATE != 0 {
		res, err = b.srv.Create(ctx, u, p, meta.CreateOptions{Mode: mode, Exclusive: flags&os.O_EXCL != 0,
			Truncate: flags&os.O_TRUNC != 0, Read: read, Write: write, ClientID: clientID})
	} else {
		res, err = b.srv.Open(ctx, u, p, meta.OpenOptions{Read: read, Write: write,
			Truncate: flags&os.O_TRUNC != 0, ClientID: clientID})
	}
	if err != nil {
		return nil, err
	}
	return &memFile{b: b, res: res, write: write}, nil
}

// memFile writes straight into memData: nothing is buffered.
type memFile struct {
	b     *memBackend
	res   meta.OpenResult
	write bool
}

func (f *memFile) id() uint64 { return f.res.Inode.ID }

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	d := f.b.data
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.files[f.id()]
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if !f.write {
		return 0, errcode.New(errcode.BadFile, "file not open for writing")
	}
	d := f.b.data
	d.mu.Lock()
	defer d.mu.Unlock()
	d.maxWrite = max(d.maxWrite, len(p))
	if end := off + int64(len(p)); end > int64(len(d.files[f.id()])) {
		d.resize(f.id(), end)
	}
	copy(d.files[f.id()][off:], p)
	return len(p), nil
}

func (f *memFile) Truncate(size int64) error {
	_, err := f.b.srv.Truncate(context.Background(), meta.User{}, meta.PathAt{Parent: f.id()}, uint64(size))
	return err
}

func (f *memFile) Flush() error { return nil }

func (f *memFile) Sync() error {
	_, err := f.b.srv.Fsync(context.Background(), meta.User{}, f.id())
	return err
}

func (f *memFile) Close() error {
	if f.res.Session == 0 {
		return nil
	}
	_, err := f.b.srv.Close(context.Background(), meta.User{}, meta.CloseOptions{Inode: f.id(), Session: f.res.Session, UpdateLength: true})
	return err
}

func (f *memFile) Inode() meta.Inode { return f.res.Inode }

func (f *memFile) Size() int64 {
	d := f.b.data
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(len(d.files[f.id()]))
}
