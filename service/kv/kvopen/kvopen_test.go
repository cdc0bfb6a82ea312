package kvopen_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/kvopen"
)

func TestParseSpec(t *testing.T) {
	for _, c := range []struct{ spec, scheme, arg string }{
		{"memory", "memory", ""},
		{"memory:", "memory", ""},
		{"badger:/var/lib/emberfs", "badger", "/var/lib/emberfs"},
		{"/var/lib/emberfs", "badger", "/var/lib/emberfs"},
		{"data", "badger", "data"},
		{"./data:1", "badger", "./data:1"}, // a colon inside a path is not a scheme
		{"/srv/a:b", "badger", "/srv/a:b"},
		{"fdb:/etc/foundationdb/fdb.cluster", "fdb", "/etc/foundationdb/fdb.cluster"},
		{"fdb", "fdb", ""},
		{"fdb:", "fdb", ""},
	} {
		scheme, arg, err := kvopen.ParseSpec(c.spec)
		if err != nil || scheme != c.scheme || arg != c.arg {
			t.Errorf("ParseSpec(%q) = %q, %q, %v; want %q, %q", c.spec, scheme, arg, err, c.scheme, c.arg)
		}
	}
}

func TestBadSpecs(t *testing.T) {
	for _, c := range []struct{ spec, mention string }{
		{"", "empty KV spec"},
		{"  ", "empty KV spec"},
		{"badger", "names no directory"},
		{"badger:", "names no directory"},
		{"memory:/tmp/x", "takes no argument"},
		{"rocksdb:/tmp/x", `unknown KV engine "rocksdb"`},
		{"etcd:", `unknown KV engine "etcd"`},
	} {
		e, err := kvopen.Open(c.spec)
		if err == nil {
			e.Close()
			t.Errorf("Open(%q) succeeded, want an error mentioning %q", c.spec, c.mention)
			continue
		}
		if !strings.Contains(err.Error(), c.mention) {
			t.Errorf("Open(%q) error %q does not mention %q", c.spec, err, c.mention)
		}
	}
}

func TestOpenMemory(t *testing.T) {
	e, err := kvopen.Open("memory")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Name() != "memory" {
		t.Fatalf("Name() = %q, want memory", e.Name())
	}
	roundTrip(t, e)
}

// Both badger spellings open the same durable directory.
func TestOpenBadgerKeepsData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kv")
	e, err := kvopen.OpenWith("badger:"+dir, kvopen.Options{MaxRetries: 5})
	if err != nil {
		t.Fatal(err)
	}
	if e.Name() != "badger" {
		t.Fatalf("Name() = %q, want badger", e.Name())
	}
	roundTrip(t, e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = kvopen.Open(dir) // bare path
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	err = e.ReadTransact(context.Background(), func(tx kv.ReadTx) error {
		v, found, err := tx.Get([]byte("k"))
		if err != nil || !found || string(v) != "v" {
			t.Errorf("after reopen by bare path: k = %q found=%v err=%v, want v", v, found, err)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func roundTrip(t *testing.T, e kv.Engine) {
	t.Helper()
	if err := e.Transact(context.Background(), func(tx kv.Tx) error { return tx.Set([]byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	err := e.ReadTransact(context.Background(), func(tx kv.ReadTx) error {
		v, found, err := tx.Get([]byte("k"))
		if err != nil || !found || string(v) != "v" {
			t.Errorf("k = %q found=%v err=%v, want v", v, found, err)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
