package client_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

func TestWriteReadAcrossChunksSecondClient(t *testing.T) {
	c := startCluster(t)
	cl := newClient(t, c, client.Config{})
	ctx := ctxT(t)
	data := make([]byte, 5*testChunk+123)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	f, err := cl.Open(ctx, meta.Root, meta.P("/a"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.WriteAt(data, 0); err != nil || n != len(data) {
		t.Fatalf("write: %d %v", n, err)
	}
	if f.Size() != int64(len(data)) {
		t.Fatalf("size %d", f.Size())
	}
	got := make([]byte, len(data)+10)
	n, err := f.ReadAt(got, 0)
	if err != io.EOF || n != len(data) || !bytes.Equal(got[:n], data) {
		t.Fatalf("read own write: n=%d err=%v equal=%v", n, err, bytes.Equal(got[:n], data))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := cl.Stat(ctx, meta.Root, meta.P("/a"))
	if err != nil || st.Size != uint64(len(data)) {
		t.Fatalf("stat after close: size %d err %v", st.Size, err)
	}
	cl2 := newClient(t, c, client.Config{})
	back, err := cl2.ReadFile(ctx, meta.Root, meta.P("/a"))
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("second client: %d bytes, err %v", len(back), err)
	}
}

func TestNewBadConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := client.New(ctx, client.Config{Token: "t"}); !errcode.Is(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), "mgmtd") {
		t.Fatalf("no mgmtd address: %v", err)
	}
	if _, err := client.New(ctx, client.Config{MgmtdAddrs: []string{"127.0.0.1:1"}}); !errcode.Is(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), "token") {
		t.Fatalf("no token: %v", err)
	}
	if _, err := client.New(ctx, client.Config{MgmtdAddrs: []string{"127.0.0.1:1"}, Token: "t"}); !errcode.Is(err, errcode.Unavailable) {
		t.Fatalf("unreachable mgmtd: %v", err)
	}
}
