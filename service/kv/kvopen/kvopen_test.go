package kvopen_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/internal/etcdcluster"
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
		{"etcd:127.0.0.1:2379", "etcd", "127.0.0.1:2379"},
		{"etcd:a:1,b:2/emberfs/", "etcd", "a:1,b:2/emberfs/"},
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
		{"etcd:", "names no members"},
		{"etcd:/prefix", "names no members"},
		{"etcd:host", `"host" is not HOST:PORT`},
		{"etcd:http://h:2379", "is not HOST:PORT"},
		{"etcd:a:1,,b:2", `"" is not HOST:PORT`},
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

// An etcd spec opens the etcd engine on a real three-member cluster, keys
// stay under the spec's prefix, and a second open sees the data.
func TestOpenEtcd(t *testing.T) {
	c := etcdcluster.Start(t, 3)
	e, err := kvopen.OpenWith(c.Spec("kvopen/"), kvopen.Options{MaxRetries: 5})
	if err != nil {
		t.Fatal(err)
	}
	if e.Name() != "etcd" {
		t.Fatalf("Name() = %q, want etcd", e.Name())
	}
	roundTrip(t, e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := kvopen.Open(c.Spec("kvopen/"))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	var n int
	if err := again.ReadTransact(context.Background(), func(tx kv.ReadTx) error {
		kvs, err := tx.GetRange(nil, []byte("\xff"), kv.RangeOptions{})
		n = len(kvs)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("reopened etcd engine sees no keys under its prefix")
	}
	other, err := kvopen.Open(c.Spec("elsewhere/"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.ReadTransact(context.Background(), func(tx kv.ReadTx) error {
		kvs, err := tx.GetRange(nil, []byte("\xff"), kv.RangeOptions{})
		if len(kvs) != 0 {
			return fmt.Errorf("engine under another prefix sees %d keys", len(kvs))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// An etcd spec whose members do not answer fails Open with an error that
// names them, instead of hanging.
func TestOpenEtcdUnreachable(t *testing.T) {
	_, err := kvopen.Open("etcd:127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("Open of an unreachable etcd = %v, want an error naming the member", err)
	}
}
